"""Batch scoring without the feature store: real tiny LightGBM models registered as champions in a tmp
MLflow, feature frames with the contract's column names, and the real event store for "active"."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.errors import PropensityError
from core.events import EventStore
from core.settings import project_paths
from serving.actions import load_actions_config
from serving.batch import (
    StageTimes,
    active_customers,
    add_reasons,
    as_of_timestamp,
    feature_snapshot,
    load_bands,
    predict_and_tag,
    score_columns,
    write_scores,
)
from tests.pipelines.conftest import tiny_event_log

CHURN = ["days_since_last_order", "orders_30d", "complaints_30d", "open_complaints", "active_days_90d", "spend_365d"]
CONVERSION = ["days_since_last_visit", "cart_views_30d", "product_views_30d", "orders_30d"]
AS_OF = pd.Timestamp("2026-10-31", tz="UTC")
SCORE_COLUMNS = score_columns(["churn", "conversion"])


def _features(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "customer_id": [f"c{i:04d}" for i in range(n)],
        "event_timestamp": AS_OF,
        "days_since_last_order": rng.integers(0, 300, n).astype(float),
        "orders_30d": rng.poisson(1.0, n).astype(float),
        "orders_365d": rng.poisson(6.0, n).astype(float),
        "complaints_30d": rng.poisson(0.4, n).astype(float),
        "open_complaints": rng.poisson(0.2, n).astype(float),
        "active_days_90d": rng.integers(0, 20, n).astype(float),
        "spend_365d": rng.gamma(2.0, 200.0, n),
        "days_since_last_visit": rng.integers(0, 60, n).astype(float),
        "cart_views_30d": rng.poisson(1.0, n).astype(float),
        "product_views_30d": rng.poisson(3.0, n).astype(float),
        "rfm_segment": rng.choice(["important_value", "general_to_win_back"], n),
        "lifecycle_stage": rng.choice(["new", "active", "at_risk", "lapsed"], n),
    })
    df.loc[:5, "days_since_last_order"] = np.nan  # never ordered: must still score
    return df


def _booster(frame: pd.DataFrame, names: list[str], label: np.ndarray) -> lgb.Booster:
    data = lgb.Dataset(frame[names].astype("float64"), label=label, params={"verbose": -1})
    return lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1}, data,
                     num_boost_round=20)


@pytest.fixture
def champions(project_home):
    from training.champion import load_model_version, register_booster

    train = _features(600, seed=1)
    churn_y = ((train["days_since_last_order"].fillna(300) > 120) | (train["complaints_30d"] > 1)).astype(int)
    conv_y = (train["cart_views_30d"] > 1).astype(int)
    register_booster(_booster(train, CHURN, churn_y.to_numpy()), "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1", alias="champion")
    register_booster(_booster(train, CONVERSION, conv_y.to_numpy()), "conversion", bands={"high": 0.6, "medium": 0.3}, feature_service="conversion_v1",
                     alias="champion")
    return {m: load_model_version(m) for m in ("churn", "conversion")}


def _score(champions, n=300):
    cfg = load_actions_config()
    feats = _features(n, seed=2)
    features = {"churn": feats, "conversion": feats[["customer_id", "event_timestamp", *CONVERSION,
                                                     "rfm_segment", "lifecycle_stage"]]}
    times = StageTimes()
    frame = predict_and_tag(feats["customer_id"], AS_OF, champions, features, cfg, load_bands(["churn", "conversion"]), times)
    frame = add_reasons(frame, champions, features, cfg, times)
    return cfg, features, frame, times


def test_scores_have_the_contract_columns_bands_layers_actions_and_reasons(champions):
    cfg, _features_, frame, times = _score(champions)
    out = frame[SCORE_COLUMNS]
    assert len(out) == 300 and out["customer_id"].is_unique
    for m in ("churn", "conversion"):
        p = out[f"{m}_probability"]
        assert p.between(0, 1).all() and p.notna().all()
        assert (out[f"{m}_model_version"] == champions[m].version).all()
    bands = load_bands(["churn", "conversion"])
    high = out["churn_probability"] >= champions["churn"].bands(bands["churn"])["high"]
    assert (out.loc[high, "churn_band"] == "high").all()
    assert set(out["churn_band"]) <= {"high", "medium", "low"}
    # configs/actions.yaml: the risk layer is the churn model's high band.
    assert ((out["layer_risk"] == "high") == (out["churn_band"] == "high")).all()
    flagged = out["action"] != "no action"
    assert flagged.any() and (~flagged).any()
    assert (out.loc[~flagged, "queue"] == "none").all() and (out.loc[~flagged, "reasons"] == "").all()
    # Every customer with an action gets plain-language reasons from the model the rule names.
    assert (out.loc[flagged, "reasons"].str.len() > 0).all()
    from training.reasons import load_templates

    templates = load_templates()
    sep = templates.languages["en"].cause_sep
    for row in frame[flagged].itertuples():
        reasons = json.loads(row.reasons_json)
        assert len(reasons) >= 1 and {r["model"] for r in reasons} == {row.explain}
        # The JSON keeps every signed cause, those that raise the score first; the CRM text only the
        # raising ones (up to top_k), or a line saying nothing raises it.
        directions = [r["direction"] for r in reasons]
        assert directions == sorted(directions, key=lambda d: d != "raises")
        raising = [r["sentence"] for r in reasons if r["direction"] == "raises"][: cfg.scoring.top_k]
        nothing = templates.models[row.explain].nothing_raises.en
        assert row.reasons == (sep.join(raising) if raising else nothing)
    sales = frame[frame["action_rule"] == "sales_follow_up"]
    assert (sales["layer_intent"] == "high").all() and (sales["orders_30d"] == 0).all()
    assert set(times.stages) == {"predict (2 models)", "layers + actions", "reasons: SHAP", "reasons: text + JSON"}
    assert times.stages["reasons: SHAP"][1] == int(flagged.sum())


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_batch_reasons_equal_the_services_reasons(lang):
    """explain_table (batch) gives explain's causes: the CRM text is the raising causes' lines (up to
    top_k), the JSON every signed cause as Reason.to_dict; ties, zero contributions, missing values with
    and without a missing-template, and a template citing a column the frame lacks (complaints_30d cites
    open_complaints)."""
    from training.reasons import History, explain, explain_table, load_templates

    templates = load_templates()
    text = templates.languages[lang]
    nothing = getattr(templates.models["churn"].nothing_raises, lang)
    rng = np.random.default_rng(3)
    n = 400
    names = ["complaints_30d", "days_since_last_order", "orders_30d", "spend_365d", "days_since_last_visit"]
    feats = pd.DataFrame({
        "complaints_30d": rng.poisson(1.0, n).astype(float),
        "days_since_last_order": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 300, n).astype(float)),
        "orders_30d": np.where(rng.random(n) < 0.1, np.nan, rng.poisson(1.0, n).astype(float)),
        "spend_365d": rng.gamma(2.0, 200.0, n),
        "days_since_last_visit": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 90, n).astype(float)),
        "rfm_segment": rng.choice(["champions", "hibernating"], n),  # text columns ride along
    })
    contrib = np.round(rng.normal(0, 1, (n, len(names) + 1)), 2)  # rounding makes ties
    contrib[rng.random(contrib.shape) < 0.3] = 0.0
    contrib[:5, :-1] = 0.0  # rows with no reason at all

    for frame in (feats, feats.drop(columns="days_since_last_order")):
        reference = explain(contrib, frame, names, "churn", None, lang, templates)
        joined, as_json = explain_table(contrib, frame, names, "churn", 4, lang, templates)
        expected = []
        for row in reference:
            raising = [r.sentence for r in row if r.direction == "raises"][:4]
            expected.append(text.cause_sep.join(raising) if raising else nothing if row else "")
        assert joined.tolist() == expected
        assert as_json.tolist() == [
            json.dumps([{"model": "churn", **r.to_dict()} for r in row], ensure_ascii=False) for row in reference
        ]
    assert joined[0] == "" and as_json[0] == "[]"
    assert any(r.direction == "lowers" for row in reference for r in row)  # the JSON keeps them, the text not

    # With the customers' own past: the top cause's line and JSON carry the date the risk rose.
    causes = templates.cause_map("churn", names).causes
    weeks = 4
    past = rng.normal(0, 1, (weeks, n, len(causes)))
    raw = past.sum(axis=2)
    dates = [pd.Timestamp("2026-05-03", tz="UTC") + pd.Timedelta(weeks=w) for w in range(weeks)]
    history = History(dates, raw, 1 / (1 + np.exp(-raw)), past, np.ones((weeks, n), dtype=bool), causes)
    reference = explain(contrib, feats, names, "churn", None, lang, templates, history)
    joined, as_json = explain_table(contrib, feats, names, "churn", 4, lang, templates, history)
    assert sum(r[0].rose is not None for r in reference if r) > 50
    assert as_json.tolist() == [
        json.dumps([{"model": "churn", **r.to_dict()} for r in row], ensure_ascii=False) for row in reference
    ]
    assert joined.tolist() == [
        text.cause_sep.join([r.sentence for r in row if r.direction == "raises"][:4]) or (nothing if row else "")
        for row in reference
    ]
    assert any("template needs" not in j and "unknown" not in j for j in joined)
    # The top cause the rules test is the cause the text leads with, with and without the past.
    from training.reasons import top_cause, top_causes

    for past_given in (None, history):
        reference = explain(contrib, feats, names, "churn", None, lang, templates, past_given)
        *_, tops = explain_table(contrib, feats, names, "churn", 4, lang, templates, past_given, with_top_cause=True)
        assert tops.tolist() == top_cause(reference) == top_causes(contrib, names, "churn", templates,
                                                                   past_given).tolist()
        assert "none" in tops and len(set(tops)) > 2


def test_write_is_atomic_and_latest_tracks_the_newest_as_of(champions):
    _, features, frame, _ = _score(champions, n=50)
    root = project_paths().scores
    snapshot = feature_snapshot(frame, champions, features)
    assert list(snapshot.columns[:2]) == ["customer_id", "churn__days_since_last_order"]
    final = write_scores(frame[SCORE_COLUMNS], snapshot, AS_OF)
    assert sorted(p.name for p in final.iterdir()) == ["features.parquet", "scores.csv", "scores.parquet"]
    written = pd.read_parquet(final / "scores.parquet")
    assert list(written.columns) == SCORE_COLUMNS
    csv = pd.read_csv(final / "scores.csv")
    assert csv["as_of"].unique().tolist() == ["2026-10-31"] and len(csv) == 50
    pd.testing.assert_frame_equal(pd.read_parquet(root / "latest.parquet"), written)

    # An older as-of does not replace latest.
    older = frame[SCORE_COLUMNS].head(10).assign(as_of=AS_OF - pd.Timedelta(days=7))
    write_scores(older, None, AS_OF - pd.Timedelta(days=7))
    assert len(pd.read_parquet(root / "latest.parquet")) == 50

    # A failing write leaves the previous files as they were, and no temp folder behind.
    before = (final / "scores.parquet").read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, the old files must survive
        write_scores(frame[SCORE_COLUMNS], pd.DataFrame({"bad": [object()]}), AS_OF)
    assert (final / "scores.parquet").read_bytes() == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_active_customers_window(project_home):
    log = tiny_event_log()
    EventStore(project_paths().events).replace_months(log, {"families": {t: "present" for t in log}})
    # Events end 2026-02-12; with a 20-day window at 2026-02-15 only c1 (visit 02-03 order), c3 (02-10, 02-12).
    ids = active_customers(as_of_timestamp("2026-02-15"), active_days=20, count_signup=False)
    assert ids.tolist() == ["c1", "c3"]
    # Events after as_of do not count: at 2026-01-10 only c1 had acted in 20 days (c3 signed up on 01-02, c2 on 12-15).
    assert active_customers(as_of_timestamp("2026-01-10"), 20, count_signup=True).tolist() == ["c1", "c3"]
    assert active_customers(as_of_timestamp("2026-01-10"), 20, count_signup=False).tolist() == ["c1"]


def test_bad_as_of_is_named():
    with pytest.raises(PropensityError, match="--as-of"):
        as_of_timestamp("yesterday-ish")


def test_active_window_edges_match_the_features(project_home):
    """An order exactly active_days before as_of counts (inclusive start), one at as_of midnight does not
    (the snapshot at as_of sees only earlier events), as in the features and labels."""
    as_of = as_of_timestamp("2026-03-01")
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3"], "customer_id": ["edge", "at_as_of", "before_edge"],
        "ordered_at": pd.to_datetime([as_of - pd.Timedelta(days=30), as_of,
                                      as_of - pd.Timedelta(days=30, seconds=1)]).astype("datetime64[us, UTC]"),
        "amount": [10.0, 10.0, 10.0],
    })
    EventStore(project_paths().events).replace_months({"orders": orders}, {"families": {"orders": "present"}})
    assert active_customers(as_of, active_days=30, count_signup=False).tolist() == ["edge"]


def test_distinct_rows_treat_nan_as_equal_and_map_every_row_back():
    from serving.batch import distinct_rows

    X = np.array([[1.0, np.nan], [2.0, 0.0], [1.0, np.nan], [2.0, 0.0], [3.0, 1.0]])
    distinct, back = distinct_rows(X)
    assert len(distinct) == 3
    np.testing.assert_array_equal(distinct[back], X)  # NaN == NaN positionally via assert_array_equal


def test_reasons_from_distinct_rows_equal_reasons_from_every_row(champions):
    _, features, frame, _ = _score(champions, n=200)
    dup = pd.concat([features["churn"]] * 3, ignore_index=True)  # every row three times
    model = champions["churn"]
    from serving.batch import distinct_rows

    X = model.matrix(dup)
    distinct, back = distinct_rows(X)
    assert len(distinct) <= 200
    np.testing.assert_allclose(model.contributions(distinct)[back], model.contributions(X), rtol=0, atol=1e-12)


def test_predict_and_score_give_the_same_decision_for_the_same_customer_and_date(champions):
    """One decision, two callers: /predict (serving.predictor) and batch scoring apply serving.actions.decide
    to the same features and date, so bands, layers, tags, rule, action, queue, group and priority agree."""
    from serving.config import load_serving_config
    from serving.predictor import Predictor
    from serving.registry import ModelRegistry
    from serving.requests import PredictRequest

    _cfg, features, frame, _times = _score(champions, n=120)
    table = features["churn"].assign(found=True, as_of=AS_OF.timestamp())
    extra = [c for c in features["conversion"].columns if c not in table.columns]
    table = pd.concat([table, features["conversion"][extra]], axis=1)

    def fetch(ids, service):
        return table.set_index("customer_id").loc[ids].reset_index()

    registry = ModelRegistry(["churn", "conversion"])
    registry.load()
    predictor = Predictor(load_serving_config(), registry, fetch_features=fetch)
    ids = frame["customer_id"].tolist()
    answer = predictor.predict(PredictRequest(customer_ids=ids))
    by_id = frame.set_index("customer_id")
    compared = 0
    for result in answer["results"]:
        row = by_id.loc[result["customer_id"]]
        for model in ("churn", "conversion"):
            assert result[model]["probability"] == pytest.approx(row[f"{model}_probability"], abs=1e-12)
            assert result[model]["band"] == row[f"{model}_band"]
        decision = result["decision"]
        for key in ("layer_activity", "layer_value", "layer_intent", "layer_risk", "tags", "action", "queue",
                    "action_rule", "group", "queue_status"):
            assert decision[key] == row[key], (result["customer_id"], key)
        assert (decision["priority"] is None and np.isnan(row["priority"])) or \
            decision["priority"] == pytest.approx(row["priority"], abs=1e-12)
        assert decision["as_of"] == f"{AS_OF:%Y-%m-%d}"
        if row["reasons_json"] != "[]":  # a customer with an action: the top cause that raises the score
            batch_causes = [r["cause"] for r in json.loads(row["reasons_json"]) if r["direction"] == "raises"]
            served = [r["cause"] for r in result[row["explain"]]["reasons"] if r["direction"] == "raises"]
            assert served[:1] == batch_causes[:1], result["customer_id"]
        compared += 1
    assert compared == len(ids) and (frame["action"] != "no action").any()


def test_predict_and_score_give_the_same_value_stakes_and_priority(champions):
    """With the value model among the champions: /predict and batch scoring give one customer on one date
    the same predicted value, value band, value_at_risk = P(churn) x value, value_upside = P(convert) x
    the expected order value, value layer and priority (both call serving.actions.decide)."""
    from serving.config import load_serving_config
    from serving.predictor import Predictor
    from serving.registry import ModelRegistry
    from serving.requests import PredictRequest
    from training.champion import TAG_TASK, load_model_version, register_booster

    train = _features(600, seed=1)
    spend = (train["spend_365d"] * 0.4 * (train["days_since_last_order"].fillna(300) < 150)).to_numpy()
    data = lgb.Dataset(train[CHURN].astype("float64"), label=spend, params={"verbose": -1})
    booster = lgb.train({"objective": "tweedie", "num_leaves": 7, "verbose": -1, "num_threads": 1}, data,
                        num_boost_round=20)
    register_booster(booster, "value", bands={"high": 150.0, "medium": 60.0}, feature_service="churn_v1",
                     alias="champion", extra_tags={TAG_TASK: "regression"})
    models = {**champions, "value": load_model_version("value")}
    assert models["value"].task == "regression"

    cfg = load_actions_config()
    feats = _features(150, seed=2)
    feats["avg_order_value_365d"] = feats["spend_365d"] / feats["orders_365d"].clip(lower=1)
    features = {"churn": feats, "value": feats,
                "conversion": feats[["customer_id", "event_timestamp", *CONVERSION, "rfm_segment", "lifecycle_stage"]]}
    frame = predict_and_tag(feats["customer_id"], AS_OF, models, features, cfg, load_bands(list(models)), StageTimes())
    assert {"value", "value_at_risk", "value_upside", "value_value", "value_band"} <= set(frame.columns)
    np.testing.assert_allclose(frame["value_at_risk"], frame["churn_probability"] * frame["value_value"])
    assert frame["value_band"].nunique() > 1 and frame["priority"].notna().any()

    table = feats.assign(found=True, as_of=AS_OF.timestamp())
    registry = ModelRegistry(["churn", "conversion", "value"])
    registry.load()
    predictor = Predictor(load_serving_config(), registry,
                          fetch_features=lambda ids, service: table.set_index("customer_id").loc[ids].reset_index())
    ids = frame["customer_id"].tolist()
    answer = predictor.predict(PredictRequest(customer_ids=ids))
    by_id = frame.set_index("customer_id")
    for result in answer["results"]:
        row = by_id.loc[result["customer_id"]]
        assert result["value"]["value"] == pytest.approx(row["value_value"], rel=1e-12)
        assert result["value"]["band"] == row["value_band"]
        decision = result["decision"]
        for key in ("value", "value_at_risk", "value_upside", "priority"):
            expected = row[key]
            assert (decision[key] is None and np.isnan(expected)) or \
                decision[key] == pytest.approx(expected, rel=1e-12), (result["customer_id"], key)
        for key in ("layer_value", "action", "action_rule", "queue", "queue_status"):
            assert decision[key] == row[key], (result["customer_id"], key)
    assert len(answer["results"]) == len(ids)


def test_empty_as_of_and_a_degenerate_list_are_refused(champions):
    from serving.batch import check_not_degenerate

    with pytest.raises(PropensityError, match="--as-of"):
        as_of_timestamp("")
    _, _, frame, _ = _score(champions, n=20)
    same = frame.assign(churn_probability=0.42)
    with pytest.raises(PropensityError, match="same score"):
        check_not_degenerate(same, champions)
    check_not_degenerate(frame, champions)  # a real list passes


def test_predict_can_leave_the_decision_out(champions):
    from serving.config import load_serving_config
    from serving.predictor import Predictor
    from serving.registry import ModelRegistry
    from serving.requests import PredictRequest

    _cfg, features, frame, _times = _score(champions, n=10)
    table = features["churn"].assign(found=True, as_of=AS_OF.timestamp())
    extra = [c for c in features["conversion"].columns if c not in table.columns]
    table = pd.concat([table, features["conversion"][extra]], axis=1)
    registry = ModelRegistry(["churn", "conversion"])
    registry.load()
    predictor = Predictor(load_serving_config(), registry,
                          fetch_features=lambda ids, service: table.set_index("customer_id").loc[ids].reset_index())
    ids = frame["customer_id"].tolist()[:3]
    lean = predictor.predict(PredictRequest(customer_ids=ids, decision=False))["results"]
    full = predictor.predict(PredictRequest(customer_ids=ids))["results"]
    assert all("decision" not in r for r in lean) and all("decision" in r for r in full)
    assert [r["churn"]["probability"] for r in lean] == [r["churn"]["probability"] for r in full]
