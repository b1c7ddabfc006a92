"""Layer tags and action rules: thresholds from config, first match wins, "no action" when none matches,
and config mistakes named."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.errors import ConfigError
from serving.actions import ActionsConfig, assign_actions, check_segments, layer_tags, load_actions_config


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["vip", "intent", "lapsed", "quiet", "unknown"],
            "active_days_90d": [10, 6, 0, 5, np.nan],
            "spend_365d": [5000.0, 100.0, 20.0, 90.0, np.nan],
            "value_band": ["high", "low", "low", "medium", None],  # the value model's band
            "conversion_probability": [0.1, 0.6, 0.05, 0.1, 0.1],
            "churn_probability": [0.8, 0.2, 0.7, 0.1, 0.1],
            "churn_band": ["high", "low", "high", "low", "low"],
            "conversion_band": ["low", "high", "low", "low", "low"],
            "rfm_segment": ["important value", "general", "general", "general", "general"],
            "lifecycle_stage": ["active", "active", "lapsed", "active", "new"],
            "orders_30d": [2, 0, 0, 1, np.nan],
            "open_complaints": [0, 0, 0, 0, np.nan],
            "churn_top_cause": ["inactivity", "none", "inactivity", "none", "none"],  # as ranked elsewhere
        }
    )


def test_repo_config_validates_and_tags_layers():
    cfg = load_actions_config()
    tags = layer_tags(_frame(), cfg.layers)
    assert list(tags.columns) == ["layer_activity", "layer_value", "layer_intent", "layer_risk"]
    assert tags.loc[0].tolist() == ["high", "high", "low", "high"]  # the VIP at risk
    assert tags.loc[1, "layer_intent"] == "high"
    # Missing values are never "high".
    assert tags.loc[4].tolist() == ["low", "low", "low", "low"]


def test_issue_examples_get_their_actions():
    cfg = load_actions_config()
    frame = _frame()
    frame = pd.concat([frame, layer_tags(frame, cfg.layers)], axis=1)
    out = assign_actions(frame, cfg)
    assert out.loc[0, "action_rule"] == "vip_care" and out.loc[0, "queue"] == "service_vip"
    assert out.loc[1, "action_rule"] == "sales_follow_up" and out.loc[1, "explain"] == "conversion"
    assert out.loc[2, "action_rule"] == "reactivation"  # at risk but lapsed and low value
    assert out.loc[3, "action"] == "no action" and out.loc[3, "queue"] == "none"


class _RecordingCauses:
    """A ``TopCauses`` that answers from a fixed list and records the rows it was asked about."""

    def __init__(self, top):
        self.top, self.asked = np.array(top, dtype=object), []

    def ranks(self, model):
        return model == "churn"

    def causes(self, model):
        return ("complaints", "inactivity", "declining_activity")

    def top_cause(self, model, rows):
        self.asked.append(rows.tolist())
        return self.top[rows]


def test_a_complaint_driven_risk_goes_to_aftercare_and_causes_are_ranked_only_where_asked():
    cfg = load_actions_config()
    frame = _frame().drop(columns="churn_top_cause")
    frame = pd.concat([frame, layer_tags(frame, cfg.layers)], axis=1)
    # Row 0 is taken by vip_care before complaint_aftercare is tried; row 2 (high risk, lapsed) is the
    # only row left that the rule's other condition lets through.
    causes = _RecordingCauses(["complaints", "none", "complaints", "none", "none"])
    out = assign_actions(frame, cfg, causes=causes)
    assert out.loc[2, "action_rule"] == "complaint_aftercare" and out.loc[2, "queue"] == "service_complaints"
    assert out.loc[0, "action_rule"] == "vip_care"
    assert causes.asked == [[2]]
    # Without a ranking or a <model>_top_cause column the rule cannot be decided: an error, not a miss.
    with pytest.raises(ConfigError, match="complaint_aftercare.*top cause of churn"):
        assign_actions(frame, cfg)


def test_a_tag_can_test_the_top_cause():
    from serving.actions import TagsConfig, assign_tags

    tags = TagsConfig.model_validate({"tags": [
        {"name": "risk_from_complaints", "when": {"bands": {"churn": ["high"]}, "top_cause": {"churn": ["complaints"]}}},
    ]})
    frame = _frame()
    causes = _RecordingCauses(["complaints", "complaints", "inactivity", "none", "none"])
    # Rows 0 and 2 are high risk; only row 0's top cause is complaints (row 1's is, but it is low risk).
    assert assign_tags(frame, tags, causes=causes).tolist() == ["risk_from_complaints", "", "", "", ""]
    assert causes.asked == [[0, 2]]
    # A model not scored here (skipped, or not asked for in an API request): its cause holds for no one.
    other = TagsConfig.model_validate({"tags": [{"name": "t", "when": {"top_cause": {"conversion": ["none"]}}}]})
    assert assign_tags(frame, other, causes=causes).tolist() == [""] * 5


def test_a_top_cause_condition_naming_an_unknown_cause_is_an_error():
    cfg = load_actions_config()
    rules = [r.model_dump() for r in cfg.rules]
    rules[0]["when"] = {"top_cause": {"churn": ["complaint"]}}  # singular: a typo
    typo = ActionsConfig.model_validate({**cfg.model_dump(), "rules": rules})
    frame = _frame()
    frame = pd.concat([frame, layer_tags(frame, cfg.layers)], axis=1)
    with pytest.raises(ConfigError, match=r"top_cause.churn: unknown cause\(s\) \['complaint'\]"):
        assign_actions(frame, typo, causes=_RecordingCauses(["none"] * 5))


def test_first_match_wins_and_numeric_bounds_ignore_nulls():
    cfg = ActionsConfig.model_validate(
        {
            "layers": {
                "activity": {"column": "a", "high_at_least": 1},
                "value": {"column": "a", "high_at_least": 1},
                "intent": {"column": "a", "high_at_least": 1},
                "risk": {"column": "a", "high_at_least": 1},
            },
            "rules": [
                {"name": "first", "when": {"at_least": {"a": 5}}, "action": "A", "queue": "qa", "explain": "churn"},
                {"name": "second", "when": {"at_least": {"a": 1}}, "action": "B", "queue": "qb", "explain": "churn"},
                {"name": "zero", "when": {"at_most": {"a": 0}}, "action": "C", "queue": "qc", "explain": "churn"},
            ],
        }
    )
    frame = pd.DataFrame({"a": [7.0, 2.0, 0.0, np.nan]})
    out = assign_actions(frame, cfg)
    assert out["action"].tolist() == ["A", "B", "C", "no action"]


def test_top_fraction_layer_is_relative_to_the_scored_population():
    cfg = load_actions_config()
    from serving.actions import Layers

    layers = Layers.model_validate({**cfg.layers.model_dump(exclude_none=True),
                                    "value": {"column": "spend_365d", "high_top_fraction": 0.2}})
    frame = pd.DataFrame({c: np.zeros(100) for c in ("active_days_90d", "conversion_band", "churn_band")})
    frame["spend_365d"] = np.arange(100, dtype=float)
    tags = layer_tags(frame, layers)
    assert (tags["layer_value"] == "high").sum() == 20
    assert tags.loc[99, "layer_value"] == "high" and tags.loc[0, "layer_value"] == "low"


def _write(tmp_path, text: str):
    path = tmp_path / "actions.yaml"
    path.write_text(textwrap.dedent(text))
    return path


LAYERS = """
layers:
  activity: {column: active_days_90d, high_at_least: 4}
  value: {column: spend_365d, high_top_fraction: 0.2}
  intent: {column: conversion_probability, high_at_least: 0.3}
  risk: {column: churn_probability, high_at_least: 0.5}
"""


def test_bad_configs_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="rules.0.when.layer_risk"):
        load_config(_write(tmp_path, LAYERS + """
rules:
  - {name: x, when: {layer_risk: hihg}, action: a, queue: q, explain: churn}
"""), ActionsConfig)
    with pytest.raises(ConfigError, match="rules.0.when.colour"):
        load_config(_write(tmp_path, LAYERS + """
rules:
  - {name: x, when: {colour: red}, action: a, queue: q, explain: churn}
"""), ActionsConfig)
    with pytest.raises(ConfigError, match="at least one condition"):
        load_config(_write(tmp_path, LAYERS + """
rules:
  - {name: x, when: {}, action: a, queue: q, explain: churn}
"""), ActionsConfig)
    with pytest.raises(ConfigError, match="repeated"):
        load_config(_write(tmp_path, LAYERS + """
rules:
  - {name: x, when: {layer_risk: high}, action: a, queue: q, explain: churn}
  - {name: x, when: {layer_risk: low}, action: b, queue: q, explain: churn}
"""), ActionsConfig)
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config(_write(tmp_path, """
layers:
  activity: {column: a, high_at_least: 4, high_top_fraction: 0.1}
  value: {column: a, high_at_least: 1}
  intent: {column: a, high_at_least: 1}
  risk: {column: a, high_at_least: 1}
rules:
  - {name: x, when: {layer_risk: high}, action: a, queue: q, explain: churn}
"""), ActionsConfig)


def test_rule_on_a_missing_column_or_unknown_segment_is_named():
    cfg = load_actions_config()
    frame = _frame().drop(columns=["open_complaints"])
    frame = pd.concat([frame, layer_tags(frame, cfg.layers)], axis=1)
    with pytest.raises(ConfigError, match="complaint_recovery.*open_complaints"):
        assign_actions(frame, cfg)
    typo = cfg.model_copy(update={"rules": [cfg.rules[0].model_copy(
        update={"when": cfg.rules[0].when.model_copy(update={"rfm_segment": ["importnt value"]})})]})
    with pytest.raises(ConfigError, match="importnt value"):
        check_segments(typo, ["important value", "general"])


def test_lost_customers_are_taken_before_the_rules_only_when_far_beyond_training():
    from serving.actions import LOST_RULE, decide

    cfg = load_actions_config()
    frame = pd.DataFrame({
        "active_days_90d": [0.0, 0.0, 0.0], "spend_365d": [900.0, 900.0, 10.0], "value_band": ["high", "low", "low"],
        "conversion_probability": [0.0, 0.0, 0.0], "churn_probability": [0.99, 0.99, 0.2],
        "conversion_band": ["low"] * 3, "churn_band": ["high", "high", "low"],
        "days_since_last_order": [150.0, 500.0, np.nan], "open_complaints": [0.0, 0.0, 0.0],
        "orders_30d": [0.0, 0.0, 0.0], "rfm_segment": ["important_value"] * 3,
        "lifecycle_stage": ["at_risk", "lapsed", "active"], "customer_id": ["a", "b", "c"],
        "as_of": pd.Timestamp("2024-05-06", tz="UTC"), "churn_top_cause": ["inactivity"] * 3,
    })
    ranges = {"churn": {"days_since_last_order": [0.0, 200.0]}}
    out = decide(frame, cfg, feature_ranges=ranges)
    # 500 days > 2 x 200: lost, not a VIP call; 150 days is inside what the model saw.
    assert out.loc[1, "action_rule"] == LOST_RULE and out.loc[1, "queue"] == cfg.lost.queue
    assert out.loc[0, "action_rule"] == "vip_care"
    assert out.loc[2, "action_rule"] != LOST_RULE  # never ordered: no gap to compare
    # Without training ranges (an old model version) nobody is called lost.
    assert LOST_RULE not in decide(frame, cfg).loc[:, "action_rule"].tolist()


def test_priority_orders_each_queue_and_capacity_marks_the_rest():
    from serving.actions import IN_QUEUE, OVER_CAPACITY, Queue, prioritise

    cfg = load_actions_config().model_copy(update={"queues": {"q": Queue(capacity=2)}})
    frame = pd.DataFrame({
        "action": ["a", "a", "a", "no action", "a"], "queue": ["q", "q", "q", "none", "other"],
        "action_rule": [cfg.rules[0].name] * 3 + ["", cfg.rules[1].name],
        "explain": ["churn", "churn", "churn", "", "churn"],
        "churn_probability": [0.7, 0.9, 0.8, 0.99, 0.1],
    })
    out = prioritise(frame, cfg)
    assert out["priority"].tolist()[:3] == [0.7, 0.9, 0.8] and np.isnan(out.loc[3, "priority"])
    assert out["queue_status"].tolist() == [OVER_CAPACITY, IN_QUEUE, IN_QUEUE, "", IN_QUEUE]


def test_control_groups_are_deterministic_per_customer_and_date_and_get_no_action():
    from serving.actions import CONTROL, TREATMENT, assign_groups, control_draw

    cfg = load_actions_config()
    ids = [f"c{i:05d}" for i in range(20_000)]
    day = pd.Timestamp("2024-05-06", tz="UTC")
    draw = control_draw(ids, day)
    assert np.array_equal(draw, control_draw(ids, day))  # re-running the list agrees
    assert not np.array_equal(draw, control_draw(ids, day + pd.Timedelta(days=7)))  # next week: a new draw
    assert draw.min() >= 0.0 and draw.max() < 1.0 and abs(draw.mean() - 0.5) < 0.01
    rule = cfg.rules[0]
    actions = pd.DataFrame({"action": rule.action, "queue": rule.queue, "action_rule": rule.name,
                            "explain": rule.explain}, index=range(len(ids)))
    out = assign_groups(pd.DataFrame({"customer_id": ids}), actions, cfg, day)
    control = out["group"] == CONTROL
    assert abs(control.mean() - cfg.control.share) < 0.01  # the configured share, 10% by default
    assert (out.loc[control, "action"] == cfg.control.action).all()
    assert (out.loc[~control, "group"] == TREATMENT).all() and (out.loc[~control, "action"] == rule.action).all()
    assert (out["action_rule"] == rule.name).all()  # the effect report compares per rule


def test_tags_every_one_that_holds_rules_can_require_them_and_cadence_carries(tmp_path):
    from serving.actions import TagsConfig, assign_tags, load_tags_config, tag_due

    assert [t.name for t in load_tags_config().tags]  # the shipped configs/tags.yaml validates
    tags = TagsConfig.model_validate({"tags": [
        {"name": "big", "when": {"at_least": {"spend": 100}}, "refresh": "monthly"},
        {"name": "fresh", "when": {"at_most": {"days": 7}}, "refresh": "daily"},
    ]})
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "spend": [500.0, 50.0, 200.0], "days": [3.0, 3.0, 30.0]})
    assert assign_tags(frame, tags).tolist() == ["big;fresh", "fresh", "big"]
    # A monthly tag inside the same month is carried from the previous list, a daily one recomputed.
    day, next_day = pd.Timestamp("2024-05-06", tz="UTC"), pd.Timestamp("2024-05-07", tz="UTC")
    due = {t.name for t in tags.tags if tag_due(t.refresh, next_day, day)}
    assert due == {"fresh"} and tag_due("monthly", pd.Timestamp("2024-06-03", tz="UTC"), day)
    previous = pd.Series({"a": "fresh", "b": "big;fresh"})
    assert assign_tags(frame, tags, previous, due).tolist() == ["fresh", "big;fresh", ""]
    # Rules can require tags.
    cfg = ActionsConfig.model_validate({
        "layers": {k: {"column": "spend", "high_at_least": 1} for k in ("activity", "value", "intent", "risk")},
        "rules": [{"name": "r", "when": {"tags": ["big", "fresh"]}, "action": "A", "queue": "q", "explain": "m"}],
    })
    tagged = frame.assign(tags=assign_tags(frame, tags))
    assert assign_actions(tagged, cfg)["action"].tolist() == ["A", "no action", "no action"]
    with pytest.raises(ConfigError, match="tag names must be unique"):
        load_config(_write(tmp_path, "tags:\n  - {name: x, when: {at_least: {a: 1}}}\n  - {name: x, when: {at_least: {a: 2}}}\n"),
                    TagsConfig)


def test_untreated_weights_drop_the_treated_and_let_the_control_group_stand_in():
    from serving.actions import untreated_weights

    scores = pd.DataFrame({
        "action_rule": ["r"] * 10 + ["s"] * 4 + [""] * 3,
        "group": ["control"] * 2 + ["treatment"] * 8 + ["treatment"] * 4 + [""] * 3,
    })
    w = untreated_weights(scores)
    assert w[:2].tolist() == [5.0, 5.0] and (w[2:10] == 0).all()  # 2 controls stand for the rule's 10
    assert (w[10:14] == 0).all()  # a rule without controls: its treated rows are dropped
    assert (w[14:] == 1).all()
    assert (untreated_weights(scores.drop(columns="group")) == 1).all()


def test_cap_and_cooldown_hold_over_a_year_of_weekly_lists():
    """Weekly lists for a year where every customer matches a rule each week: with a cap of 2 contacts
    per 30 days and a 28-day cooldown on the rule, nobody is contacted more than the policy allows, the
    control group never counts as contacted, and a re-run of the same week gives the same list."""
    from serving.actions import CONTROL, TREATMENT, ContactPolicy, apply_contact_policy, assign_groups

    base = load_actions_config()
    rule = base.rules[0].model_copy(update={"cooldown_days": 28})
    cfg = base.model_copy(update={"rules": [rule, *base.rules[1:]],
                                  "contact_policy": ContactPolicy(max_contacts=2, per_days=30)})
    ids = [f"c{i:03d}" for i in range(300)]
    frame = pd.DataFrame({"customer_id": ids})
    matched = pd.DataFrame({"action": rule.action, "queue": rule.queue, "action_rule": rule.name,
                            "explain": rule.explain}, index=frame.index)
    history = pd.DataFrame(columns=["customer_id", "contacted_at", "action_rule"])
    start = pd.Timestamp("2025-01-06", tz="UTC")
    for week in range(52):
        as_of = start + pd.Timedelta(weeks=week)
        grouped = assign_groups(frame, matched, cfg, as_of)
        out = apply_contact_policy(frame, grouped, cfg, as_of, history)
        again = apply_contact_policy(frame, assign_groups(frame, matched, cfg, as_of), cfg, as_of, history)
        pd.testing.assert_frame_equal(out, again)
        contacted = out[(out["group"] == TREATMENT) & (out["held_back"] == "")]
        assert (out.loc[out["group"] == CONTROL, "held_back"] == "").all()
        history = pd.concat([history, pd.DataFrame({
            "customer_id": frame.loc[contacted.index, "customer_id"], "contacted_at": as_of,
            "action_rule": rule.name})], ignore_index=True)
    times = history.assign(contacted_at=pd.to_datetime(history["contacted_at"], utc=True))
    for _, own in times.groupby("customer_id"):
        gaps = own["contacted_at"].sort_values().diff().dropna()
        assert (gaps >= pd.Timedelta(days=28)).all()  # the cooldown
        stamps = own["contacted_at"].sort_values().to_numpy()
        for t in stamps:  # the cap: at most 2 in any 30 days
            assert ((stamps > t - np.timedelta64(30, "D")) & (stamps <= t)).sum() <= 2
    assert len(history) > 300  # customers are contacted again once the cooldown has passed


def test_contact_lookback_covers_the_cap_window_and_the_longest_cooldown():
    from serving.actions import ContactPolicy

    cfg = load_actions_config()
    assert cfg.contact_lookback_days() is None  # shipped: no cap, no cooldown, so no history is read
    rules = [cfg.rules[0].model_copy(update={"cooldown_days": 45}), *cfg.rules[1:]]
    capped = cfg.model_copy(update={"rules": rules, "contact_policy": ContactPolicy(max_contacts=2, per_days=30)})
    assert capped.contact_lookback_days() == 45
