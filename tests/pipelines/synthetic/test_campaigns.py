"""The simulated shop's own campaigns: config checks, what a campaign without effect changes (nothing but
the contacts), and that lists follow their condition, control share, cooldown and truth."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from pipelines.synthetic import GeneratorConfig, generate, load_generator_config


def _config(effect: float) -> GeneratorConfig:
    return GeneratorConfig(campaigns=[
        {"name": "complaint_recovery", "when": {"complaint_within_days": 30}, "control_share": 0.3,
         "effect": effect},
        {"name": "reactivation", "when": {"days_since_last_order": [30, 90]}, "every_weeks": 2,
         "start_after_days": 20, "effect": effect, "cooldown_days": 70},
    ])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaigns")
    return {name: generate(3000, 200, seed=11, out=root / name, config=cfg, progress=False)
            for name, cfg in (("none", None), ("null", _config(1.0)), ("effective", _config(0.5)))}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_config_checks_name_the_problem(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("campaigns:\n  - name: a\n    when: {}\n")
    with pytest.raises(ConfigError, match="at least one condition"):
        load_generator_config(bad)
    bad.write_text("campaigns:\n  - name: a\n    when: {days_since_last_order: [90, 30]}\n")
    with pytest.raises(ConfigError, match="days_since_last_order"):
        load_generator_config(bad)
    bad.write_text("campaigns:\n  - {name: a, when: {complaint_within_days: 7}}\n  - {name: a, when: {complaint_within_days: 9}}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_generator_config(bad)
    bad.write_text("campaigns:\n  - {name: a, when: {complaint_within_days: 7}, effect_size: 0.7}\n")
    with pytest.raises(ConfigError, match="effect_size"):
        load_generator_config(bad)


def test_without_campaigns_no_contacts_and_a_campaign_without_effect_changes_no_event(runs):
    assert "contacts" not in runs["none"].files and "campaign_truth" not in runs["none"].files
    for table in ("customers", "orders", "page_views", "complaints"):
        assert _digest(runs["none"].files[table]) == _digest(runs["null"].files[table]), table
    base = pd.read_parquet(runs["none"].files["ground_truth"])
    null = pd.read_parquet(runs["null"].files["ground_truth"])
    assert base["p_churn"].equals(null["p_churn"]) and null["p_churn_untreated"].equals(null["p_churn"])
    # An effective campaign changes the shop: fewer churn, so more orders.
    assert runs["effective"].rows["orders"] > runs["none"].rows["orders"]


def test_lists_follow_condition_share_cooldown_and_cadence(runs):
    gen = runs["effective"]
    truth = pd.read_parquet(gen.files["campaign_truth"])
    complaints = pd.read_parquet(gen.files["complaints"])
    assert set(truth["as_of"].dt.dayofweek) == {0}  # Mondays
    recovery = truth[truth["action_rule"] == "complaint_recovery"]
    joined = recovery.merge(complaints[["customer_id", "opened_at"]], on="customer_id")
    recent = joined[(joined["opened_at"] < joined["as_of"]) & (joined["opened_at"] >= joined["as_of"] - pd.Timedelta(days=30))]
    assert recent[["customer_id", "as_of"]].drop_duplicates().shape[0] == len(recovery)  # every listed one qualifies
    assert abs((recovery["group"] == "control").mean() - 0.3) < 0.06
    reactivation = truth[truth["action_rule"] == "reactivation"]
    weeks = (reactivation["as_of"].drop_duplicates().sort_values().diff().dropna().dt.days.unique())
    assert set(weeks) == {14}
    assert (reactivation["as_of"].min() - pd.Timestamp(gen.start, tz="UTC")).days >= 20
    for _, listed in truth.groupby("action_rule"):
        gaps = listed.sort_values("as_of").groupby("customer_id")["as_of"].diff().dropna().dt.days
        assert (gaps >= 60).all()  # cooldown (60 and 70 days: the next list after it)
    assert not truth.duplicated(["customer_id", "as_of"]).any()  # one campaign per customer and day


def test_truth_of_a_contact_lowers_the_no_order_probability_of_the_alive(runs):
    truth = pd.read_parquet(runs["effective"].files["campaign_truth"])
    diff = truth["p_churn_treated"] - truth["p_churn_untreated"]
    assert (diff <= 1e-6).all() and (diff < -1e-4).mean() > 0.5
    churned = truth["p_churn_untreated"] >= 1.0
    assert np.allclose(truth.loc[churned, "p_churn_treated"], 1.0)  # a churned customer cannot be won back
    contacts = pd.read_parquet(runs["effective"].files["contacts"])
    assert len(contacts) == (truth["group"] == "treatment").sum()
    assert list(contacts.columns) == ["contact_id", "customer_id", "contacted_at", "action_rule", "list_as_of", "channel"]


def test_oracle_lists_carry_the_groups_for_monitoring(runs):
    from pipelines.synthetic.campaigns import oracle_lists

    lists = oracle_lists(runs["effective"].files)
    truth = pd.read_parquet(runs["effective"].files["campaign_truth"])
    day = f"{truth['as_of'].iloc[0]:%Y-%m-%d}"
    listed = lists[day]
    assert {"customer_id", "churn_probability", "action_rule", "group"} <= set(listed.columns)
    assert (listed["group"] != "").sum() == (truth["as_of"] == truth["as_of"].iloc[0]).sum()
