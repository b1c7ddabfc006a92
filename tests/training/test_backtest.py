"""`propensity backtest`: the bootstrap metrics against sklearn and hand-computed answers, the RFM summary
on a crafted event log, the shortened history, and one slow end-to-end run on a tiny generated business.
BG/NBD and Gamma-Gamma themselves: tests/features/test_btyd.py."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from core.events import EventStore
from core.settings import REPO_ROOT
from training.backtest import (
    bootstrap,
    bootstrap_amounts,
    calibration_table,
    history_spec,
    percentile_interval,
    resample_counts,
    rfm_summary,
    spend_before,
    top_stats,
    weighted_auc,
    weighted_average_precision,
    weighted_normalized_gini,
    weighted_top_capture,
)


# ---- metrics ----------------------------------------------------------------------------------------
def test_auc_and_average_precision_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    ones = np.ones((1, 4))
    # Pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both): 3 of 4.
    assert weighted_auc(y, s, ones)[0] == pytest.approx(0.75)
    # Ranked 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1: AP = 1/2 * 1 + 1/2 * 2/3.
    assert weighted_average_precision(y, s, ones)[0] == pytest.approx(5 / 6)
    # A tie between a positive and a negative counts one half.
    assert weighted_auc(np.array([0, 1]), np.array([1.0, 1.0]), np.ones((1, 2)))[0] == pytest.approx(0.5)


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    n = 2000
    y = (rng.random(n) < 0.3).astype(float)
    score = np.round(y * 0.6 + rng.normal(size=n), 1)  # rounded: many ties
    weights = next(resample_counts(n, 7, seed=11))
    aucs, aps = weighted_auc(y, score, weights), weighted_average_precision(y, score, weights)
    for w, a, p in zip(weights, aucs, aps, strict=True):
        assert a == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
        assert p == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-12)


def test_resamples_are_seeded_and_draw_n_customers():
    first = np.vstack(list(resample_counts(500, 250, seed=5)))
    again = np.vstack(list(resample_counts(500, 250, seed=5)))
    assert first.shape == (250, 500)
    np.testing.assert_array_equal(first, again)
    assert (first.sum(axis=1) == 500).all()
    assert not np.array_equal(first, np.vstack(list(resample_counts(500, 250, seed=6))))


def test_bootstrap_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random(n) < 0.25).astype(float)
    strong = y + rng.normal(size=n)
    scores = {"model": strong, "same": strong.copy(), "flipped": -strong, "noise": rng.normal(size=n)}
    out = bootstrap(y, scores, resamples=400, seed=1)
    for name, s in out.items():
        assert s["roc_auc_ci"][0] <= s["roc_auc"] <= s["roc_auc_ci"][1], name
        assert s["pr_auc_ci"][0] <= s["pr_auc"] <= s["pr_auc_ci"][1], name
    assert "auc_diff" not in out["model"]
    # Paired: the same scores give a difference of exactly zero in every resample.
    assert out["same"]["auc_diff"] == 0 and out["same"]["auc_diff_ci"] == [0.0, 0.0]
    assert out["flipped"]["roc_auc"] == pytest.approx(1 - out["model"]["roc_auc"])
    assert out["noise"]["roc_auc_ci"][0] < 0.5 < out["noise"]["roc_auc_ci"][1]
    lo, hi = out["noise"]["auc_diff_ci"]
    assert lo <= out["noise"]["auc_diff"] <= hi and lo > 0
    # The percentile interval of a known sample.
    assert percentile_interval(np.arange(1001.0)) == pytest.approx([25.0, 975.0])


def test_lift_capture_and_calibration_deciles():
    y = np.r_[np.ones(10), np.zeros(90)]
    perfect = -np.arange(100.0)  # the 10 positives score highest
    stats = top_stats(y, perfect)
    assert stats["lift_top10"] == pytest.approx(10) and stats["capture_top10"] == pytest.approx(1)
    assert stats["lift_top20"] == pytest.approx(5) and stats["capture_top20"] == pytest.approx(1)

    p = np.linspace(0.005, 0.995, 1000)
    outcome = (np.random.default_rng(2).random(1000) < p).astype(float)
    table = calibration_table(outcome, p)
    assert [r["bin"] for r in table] == list(range(1, 11)) and {r["rows"] for r in table} == {100}
    assert table[0]["mean_predicted"] == pytest.approx(p[:100].mean())
    assert table[-1]["observed_rate"] == pytest.approx(outcome[900:].mean())


# ---- amounts: normalised Gini and top capture -------------------------------------------------------
def test_amount_metrics_equal_training_metrics_and_count_repeats_as_weights():
    from training.metrics import normalized_gini, top_capture

    rng = np.random.default_rng(4)
    n = 500
    y = np.where(rng.random(n) < 0.6, 0.0, rng.gamma(1.5, 100.0, n))
    score = y * rng.lognormal(0, 1, n) + rng.random(n)  # continuous: no ties
    ones = np.ones((1, n))
    assert weighted_normalized_gini(y, score, ones)[0] == pytest.approx(normalized_gini(y, score), abs=1e-12)
    assert weighted_top_capture(y, score, ones)[0] == pytest.approx(top_capture(y, score, 0.1), abs=1e-12)
    # A bootstrap weight of k is the customer k times over (repeats tie only with themselves).
    weights = next(resample_counts(n, 5, seed=2))
    ginis, captures = weighted_normalized_gini(y, score, weights), weighted_top_capture(y, score, weights)
    for w, g, c in zip(weights, ginis, captures, strict=True):
        rep = w.astype(int)
        assert g == pytest.approx(normalized_gini(np.repeat(y, rep), np.repeat(score, rep)), abs=1e-12)
        assert c == pytest.approx(top_capture(np.repeat(y, rep), np.repeat(score, rep), 0.1), abs=1e-12)


def test_amount_metrics_by_hand_and_ties_as_a_random_order():
    y = np.array([0.0, 10.0, 30.0, 60.0])
    ones = np.ones((1, 4))
    # Perfect order 60, 30, 10, 0: cumulative shares 0.6, 0.9, 1, 1 -> Gini 0.875 - 0.625 = 0.25, normalised 1.
    assert weighted_normalized_gini(y, y, ones)[0] == pytest.approx(1.0)
    # Reversed: 0, 10, 30, 60 -> 0, 0.1, 0.4, 1 -> 0.375 - 0.625 = -0.25: normalised -1.
    assert weighted_normalized_gini(y, -y, ones)[0] == pytest.approx(-1.0)
    # One score for everyone is a random order: no ranking power, and the top 25% hold a quarter.
    flat = np.zeros(4)
    assert weighted_normalized_gini(y, flat, ones)[0] == pytest.approx(0.0, abs=1e-12)
    assert weighted_top_capture(y, flat, ones, 0.25)[0] == pytest.approx(0.25)
    # A tie across the cut counts pro rata: the top 2 of [60 | 30, 10 tied] hold 60 + (30 + 10) / 2.
    assert weighted_top_capture(y, np.array([0.0, 1.0, 1.0, 2.0]), ones, 0.5)[0] == pytest.approx(80 / 100)


def test_amount_bootstrap_intervals_and_paired_differences():
    rng = np.random.default_rng(5)
    n = 3000
    y = np.where(rng.random(n) < 0.5, 0.0, rng.gamma(1.0, 200.0, n))
    good = y + rng.gamma(1.0, 50.0, n)
    scores = {"model": good, "same": good.copy(), "noise": rng.random(n)}
    out = bootstrap_amounts(y, scores, resamples=300, seed=1)
    for name, s in out.items():
        assert s["normalized_gini_ci"][0] <= s["normalized_gini"] <= s["normalized_gini_ci"][1], name
        assert s["capture_top10_ci"][0] <= s["capture_top10"] <= s["capture_top10_ci"][1], name
    assert "normalized_gini_diff" not in out["model"]
    assert out["same"]["normalized_gini_diff"] == 0 and out["same"]["normalized_gini_diff_ci"] == [0.0, 0.0]
    assert out["noise"]["normalized_gini_ci"][0] < 0 < out["noise"]["normalized_gini_ci"][1]
    assert out["noise"]["capture_top10_diff_ci"][0] > 0 and out["noise"]["normalized_gini_diff_ci"][0] > 0
    assert out["noise"]["normalized_gini_diff"] == pytest.approx(
        out["model"]["normalized_gini"] - out["noise"]["normalized_gini"])


def test_plateau_counts_customers_sharing_a_prediction_without_sharing_inputs():
    from training.backtest import plateau_stats

    # p = 0.3: 4 customers, 3 with identical inputs (NaN equal to NaN) and 1 other; p = 0.5: 5 customers,
    # all identical; one customer alone at 0.9.
    inputs = pd.DataFrame({"a": [1, 1, 1, 2, 7, 7, 7, 7, 7, 3], "b": [np.nan] * 3 + [0.0] + [1.0] * 5 + [2.0]})
    p = np.array([0.3, 0.3, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9])
    out = plateau_stats(p, inputs)
    assert out["rows"] == 10 and out["distinct_predictions"] == 3 and out["distinct_inputs"] == 4
    assert out["largest_share"] == pytest.approx(0.5)  # the identical five
    # At 0.3: 4 customers minus the identical three plus one of them = 2; at 0.5: 5 - 5 + 1 = 1.
    assert out["largest_share_differing_inputs"] == pytest.approx(0.2)
    assert out["top10_predictions_share"] == pytest.approx(1.0)


def test_value_at_risk_ranks_the_big_spenders_who_leave_first(project_home):
    """Five small spenders at high churn risk, two big spenders at moderate risk who then churn: the
    churn probability alone fills the top with the small ones, P(churn) x value with the big losses."""
    from core.settings import project_paths
    from training.backtest import ModelBacktest, value_at_risk_check

    d = pd.Timestamp("2026-06-01", tz="UTC")
    ids = [f"c{i}" for i in range(10)]
    last_year = [1000.0, 900.0, 800.0, 700.0, 600.0] + [10.0] * 5
    EventStore(project_paths().events).replace_months({"orders": pd.DataFrame({
        "order_id": [f"o{i}" for i in range(10)], "customer_id": ids,
        "ordered_at": [d - pd.Timedelta(days=100)] * 10, "amount": last_year})})
    churned = [1, 1, 0, 0, 0, 1, 1, 1, 1, 1]
    p_churn = np.array([0.5, 0.5, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9])
    feats = pd.DataFrame({"value": [500.0] * 5 + [5.0] * 5})

    class Stub:  # a fitted model: its service and a prediction per row
        feature_service = "churn_v1"

        def predict(self, frame):
            return frame["value"].to_numpy()

    rows = pd.DataFrame({"customer_id": ids, "event_timestamp": d, "label": churned})
    common = dict(as_of=f"{d.date()}", rows=10, positives=7, label_rate=0.7, population="", training={},
                  scorers={}, calibration=[], oracle={})
    risk = ModelBacktest("churn", **common, bgnbd={}, task="binary",
                         scored={"rows": rows, "features": feats, "model": Stub(), "prediction": p_churn})
    value = ModelBacktest("value", **common, bgnbd={"horizon_days": 30}, task="regression",
                          scored={"rows": rows, "features": feats, "model": Stub(), "prediction": None})
    out = value_at_risk_check(risk, value, resamples=50, seed=0, fraction=0.2)
    lost = 1000 + 900 + 5 * 10
    assert out["rows"] == 10 and out["churned"] == 7 and out["revenue_lost_total"] == pytest.approx(lost)
    var, churn = out["rankings"]["value_at_risk"], out["rankings"]["churn_probability"]
    assert var["lost_capture_top20"] == pytest.approx(1900 / lost)
    # The top 2 by P(churn) are 2 of the 5 tied small spenders: pro rata, 2 x 10.
    assert churn["lost_capture_top20"] == pytest.approx(20 / lost)
    assert out["ratio"] == pytest.approx(95.0) and out["meets_goal"]
    lo, hi = var["ratio_to_churn_probability_ci"]
    assert lo <= hi and "ratio_to_churn_probability" not in churn
    # Without a spend in the 30 days before D, P(churn) x past spend is a tie: a random order.
    assert out["rankings"]["churn_x_past_spend"]["lost_capture_top20"] == pytest.approx(0.2)
    # Hindsight takes the two largest losses (1000 and 900): no ranking holds more.
    hindsight = out["rankings"]["hindsight"]
    assert hindsight["lost_capture_top20"] == pytest.approx(1900 / lost)
    assert all(r["lost_capture_top20"] <= hindsight["lost_capture_top20"] + 1e-12 for r in out["rankings"].values())
    assert "oracle_churn_x_lost_days_spend" not in out["rankings"]  # no ground truth: no ceiling row
    # With the true P(churn): true risk x last year's spend, the expected lost revenue. A truth that knows
    # the two big spenders leave (and nobody else does) puts exactly them on top.
    risk.scored["oracle"] = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    ceiling = value_at_risk_check(risk, value, resamples=50, seed=0, fraction=0.2)["rankings"]
    assert ceiling["oracle_churn_x_lost_days_spend"]["lost_capture_top20"] == pytest.approx(1900 / lost)
    assert ceiling["oracle_churn_x_lost_days_spend"]["ratio_to_churn_probability"] == pytest.approx(95.0)
    with pytest.raises(Exception, match="binary risk model"):
        value_at_risk_check(value, risk)


def test_rfm_summary_counts_purchase_days_before_the_date_only(tmp_path):
    d = pd.Timestamp("2026-03-01", tz="UTC")
    day = lambda k, h=12: d + pd.Timedelta(days=k, hours=h)  # noqa: E731
    orders = [("a", day(-30)), ("a", day(-30, 18)), ("a", day(-10)), ("a", day(0, 1)),  # same day twice; one at D
              ("b", day(-5)), ("c", day(3))]  # c orders only after D
    store = EventStore(tmp_path)
    store.replace_months({"orders": pd.DataFrame(
        [(f"o{i}", c, t, 10.0 * (i + 1)) for i, (c, t) in enumerate(orders)],
        columns=["order_id", "customer_id", "ordered_at", "amount"])})
    summary = rfm_summary(store, d.date()).set_index("customer_id")
    assert list(summary.index) == ["a", "b"]
    # a: day -30 spent 10 + 20 (its first purchase day, left out of the mean), day -10 spent 30.
    assert summary.loc["a"].to_dict() == {"frequency": 1.0, "recency": 20.0, "T": 30.0, "monetary_value": 30.0}
    assert summary.loc["b"].to_dict() == {"frequency": 0.0, "recency": 0.0, "T": 5.0, "monetary_value": 0.0}
    # Spend over the 20 days before D: a's day -10 (30), b's day -5 (50); c and an unknown id: 0.
    np.testing.assert_allclose(spend_before(store, d.date(), 20, pd.Series(["a", "b", "c", "zz"])), [30, 50, 0, 0])
    np.testing.assert_allclose(spend_before(store, d.date(), 40, pd.Series(["a"])), [60])


# ---- the shortened history --------------------------------------------------------------------------
def test_training_history_ends_before_the_as_of_date(tmp_path):
    from core.specs import load_spec
    from training.labels import data_end, plan_split

    as_of = pd.Timestamp("2026-08-03", tz="UTC")
    for path in sorted((REPO_ROOT / "configs" / "models").glob("*.yaml")):
        spec = load_spec(path=path)
        short = history_spec(spec, as_of.date())
        assert short.cutoffs.data_end == (as_of - pd.Timedelta(days=1)).date()
        end = data_end(EventStore(tmp_path), short.cutoffs)  # a configured end reads no events
        assert end == as_of
        cutoffs = short.cutoffs.model_copy(update={"anchor": as_of.date()})
        plan = plan_split(end, spec.labels.horizon_days, cutoffs, spec.split)
        horizon = pd.Timedelta(days=spec.labels.horizon_days)
        # No label window of any split reaches the as-of date.
        assert max(*plan.train, *plan.validation, plan.test) + horizon <= as_of


def test_oracle_comes_from_the_nearest_ground_truth_date_on_or_before(tmp_path):
    from core.specs import load_spec
    from training.backtest import _oracle

    spec = load_spec(path=REPO_ROOT / "configs" / "models" / "churn.yaml")
    column = spec.ground_truth.probability
    mondays = pd.to_datetime(["2026-03-02", "2026-03-09", "2026-03-16"], utc=True).astype("datetime64[us, UTC]")
    gt = pd.DataFrame({"customer_id": ["a", "b", "a", "b", "a", "b", "c"],
                       "as_of": [mondays[0]] * 2 + [mondays[1]] * 2 + [mondays[2]] * 3,
                       column: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]})
    rows = pd.DataFrame({"customer_id": ["b", "a"]})
    p, note = _oracle(spec, pd.Timestamp("2026-03-11").date(), rows, gt)  # a Wednesday
    np.testing.assert_allclose(p, [0.4, 0.3])
    assert note["as_of"] == "2026-03-09" and note["days_before"] == 2 and note["coverage"] == 1.0
    assert "2 day(s) earlier" in note["note"]
    # A customer the truth does not know yet at that date (signed up since) leaves a gap.
    p, note = _oracle(spec, pd.Timestamp("2026-03-16").date(), pd.DataFrame({"customer_id": ["c", "d"]}), gt)
    assert p[0] == 0.7 and np.isnan(p[1]) and note["coverage"] == 0.5 and note["days_before"] == 0
    p, note = _oracle(spec, pd.Timestamp("2026-03-01").date(), rows, gt)
    assert p is None and not note["available"]


# ---- end to end -------------------------------------------------------------------------------------
def _small_configs(dest):
    """The shipped configs, each model spec's tuning and minimum data scaled for a tiny business."""
    shutil.copytree(REPO_ROOT / "configs", dest)
    for path in (dest / "models").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        spec["tuning"].update(trials=2, max_boost_rounds=100, early_stopping_rounds=10, startup_trials=1,
                              pruner_warmup_rounds=10)
        spec["min_data"] = {"train_rows": 100, "train_positives": 10, "validation_rows": 30,
                            "validation_positives": 3, "test_rows": 20, "test_positives": 3}
        spec["shap_sample_rows"] = 100
        if spec["task"] == "regression":  # a 180-day label would need a generated history of over a year
            spec["labels"]["horizon_days"] = 60
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def _generate(**kwargs):
    try:  # the generator is moving between these two homes
        from pipelines.synthetic import generate
    except ImportError:
        from pipelines.generate import generate
    return generate(**kwargs)


@pytest.mark.slow
def test_backtest_end_to_end_on_a_generated_business(project_home, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from core.settings import project_paths
    from core.specs import specs_for_data
    from features.build import build_features, built_dates
    from pipelines.cli import app
    from pipelines.ingest import ingest
    from training.labels import data_end
    from training.tracking import client

    monkeypatch.setenv("PROPENSITY_CONFIGS", str(_small_configs(tmp_path / "configs")))
    raw = project_home / "data" / "raw"
    _generate(customers=1500, days=300, seed=7, out=raw, progress=False)
    ingest(orders=raw / "orders.parquet", customers=raw / "customers.parquet",
           page_views=raw / "page_views.parquet", complaints=raw / "complaints.parquet")
    build_features()
    snapshots = built_dates(project_paths().feature_sources)

    specs = specs_for_data()[0]
    assert {s.task for s in specs.values()} == {"binary", "regression"}
    store = EventStore(project_paths().events)
    end = min(data_end(store, s.cutoffs) - pd.Timedelta(days=s.labels.horizon_days) for s in specs.values())
    truth_dates = sorted(pd.read_parquet(project_paths().ground_truth)["as_of"].dt.tz_convert("UTC").unique())
    # On a ground-truth date, so the oracle is about exactly the labels' window (off it: see the test above).
    as_of = next(t for t in reversed(truth_dates) if t <= end).date()

    result = CliRunner().invoke(app, ["backtest", "--as-of", f"{as_of}", "--trials", "2", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "ROC AUC [95% CI]" in result.output and "bgnbd_expected" in result.output
    assert "normalised Gini [95% CI]" in result.output and "bgnbd_gamma_gamma" in result.output

    folder = project_paths().reports / f"backtest-{as_of}"
    report = json.loads((folder / "report.json").read_text())
    assert report["as_of"] == f"{as_of}" and report["resamples"] == 200
    assert [m["model"] for m in report["models"]] == list(specs)
    html = (folder / "index.html").read_text()
    for m in report["models"]:
        assert m["rows"] > 50 and 0 < m["label_rate"] < 1
        training = m["training"]
        assert training["data_end"] == f"{as_of - timedelta(days=1)}"
        horizon = pd.Timedelta(days=specs[m["model"]].labels.horizon_days)
        assert pd.Timestamp(training["test_cutoff"], tz="UTC") + horizon <= pd.Timestamp(as_of, tz="UTC")
        assert sum(r["rows"] for r in m["calibration"]) == m["rows"] and len(m["calibration"]) == 10
        assert m["bgnbd"]["converged"] and m["bgnbd"]["customers"] > 100
        for png in m["plots"].values():
            assert (folder / png).stat().st_size > 1000
            assert png in html
        assert m["model"] in html
        if m["task"] == "binary":
            _check_binary(m)
        else:
            _check_amounts(m)
    var = report["value_at_risk"]
    assert var["available"] and var["risk_model"] == "churn" and var["value_model"] == "value"
    assert var["rows"] == next(m["rows"] for m in report["models"] if m["model"] == "churn")
    assert 0 < var["churned"] < var["rows"] and var["revenue_lost_total"] > 0
    for name, r in var["rankings"].items():
        assert 0 <= r["lost_capture_top10"] <= 1 and r["lost_capture_top10_ci"][0] <= r["lost_capture_top10"] <= \
            r["lost_capture_top10_ci"][1], name
    assert var["ratio"] == pytest.approx(var["rankings"]["value_at_risk"]["lost_capture_top10"]
                                         / var["rankings"]["churn_probability"]["lost_capture_top10"])
    # Generated data: the churn model's truth reaches the check as the ceiling of a ranking made at D.
    ceiling = var["rankings"]["oracle_churn_x_lost_days_spend"]["lost_capture_top10"]
    assert ceiling <= var["rankings"]["hindsight"]["lost_capture_top10"] + 1e-12
    assert "Value at risk" in html
    # No customer ids anywhere in the report folder.
    ids = pd.read_parquet(raw / "customers.parquet")["customer_id"].astype(str)
    text = (folder / "report.json").read_text() + html
    assert not any(cid in text for cid in ids.sample(200, random_state=0))

    mlflow = client()
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("backtest").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == report["mlflow_run_id"]
    name = report["models"][0]["model"]
    assert runs[0].data.metrics[f"{name}.model.roc_auc"] == pytest.approx(report["models"][0]["scorers"]["model"]["roc_auc"])
    value = next(m for m in report["models"] if m["task"] == "regression")
    assert runs[0].data.metrics[f"{value['model']}.past_spend.normalized_gini_diff"] == pytest.approx(
        value["scorers"]["past_spend"]["normalized_gini_diff"])
    assert runs[0].data.metrics["value_at_risk.ratio"] == pytest.approx(var["ratio"])
    assert {a.path for a in mlflow.list_artifacts(runs[0].info.run_id, "report")} >= {
        "report/report.json", "report/index.html",
        *(f"report/{m['plots']['reliability']}" for m in report["models"] if m["task"] == "binary")}
    for m in report["models"]:
        assert runs[0].data.metrics[f"{m['model']}.model.plateau_largest_share"] == pytest.approx(
            m["plateau"]["largest_share"])
        if m["task"] == "binary":
            assert m["training"]["calibration"] in ("isotonic", "platt")
    # Trained and kept as runs, never registered: the registry's aliases are untouched.
    assert mlflow.search_model_versions() == []
    for m in report["models"]:
        assert mlflow.get_run(m["training"]["run_id"]).data.tags["registered"] == "false"
    # Features at the as-of date came from a scratch build: the feature store is as it was.
    assert built_dates(project_paths().feature_sources) == snapshots


def _check_binary(m: dict) -> None:
    assert set(m["scorers"]) == {"model", "baseline", "rfm", "bgnbd_expected", "bgnbd_p_order", "bgnbd_p_alive",
                                 "oracle"}, m["oracle"]
    for name, s in m["scorers"].items():
        for key in ("roc_auc", "pr_auc", "lift_top10", "capture_top10", "lift_top20", "capture_top20"):
            assert np.isfinite(s[key]), (m["model"], name, key)
        assert 0 <= s["roc_auc"] <= 1 and 0 <= s["pr_auc"] <= 1
        assert s["roc_auc_ci"][0] <= s["roc_auc"] <= s["roc_auc_ci"][1], (m["model"], name)
        assert s["pr_auc_ci"][0] <= s["pr_auc"] <= s["pr_auc_ci"][1], (m["model"], name)
        if name != "model":
            assert s["auc_diff"] == pytest.approx(m["scorers"]["model"]["roc_auc"] - s["roc_auc"])
            assert s["auc_diff_ci"][0] <= s["auc_diff"] <= s["auc_diff_ci"][1], (m["model"], name)
    # The oracle is the best ranking there is, and the model learnt something.
    assert m["scorers"]["oracle"]["roc_auc"] > 0.7 and m["scorers"]["model"]["roc_auc"] > 0.55
    assert m["oracle"]["days_before"] == 0 and m["oracle"]["coverage"] == 1.0


def _check_amounts(m: dict) -> None:
    # The generator's truth has no expected spend: no oracle for the value model (the note says why).
    assert set(m["scorers"]) == {"model", "past_spend", "baseline", "rfm", "bgnbd_gamma_gamma"}, m["oracle"]
    assert not m["oracle"]["available"]
    for name, s in m["scorers"].items():
        for key in ("normalized_gini", "capture_top10"):
            assert np.isfinite(s[key]) and s[f"{key}_ci"][0] <= s[key] <= s[f"{key}_ci"][1], (name, key)
            if name != "model":
                assert s[f"{key}_diff"] == pytest.approx(m["scorers"]["model"][key] - s[key])
                assert s[f"{key}_diff_ci"][0] <= s[f"{key}_diff"] <= s[f"{key}_diff_ci"][1], (name, key)
        assert ("mae" in s) == (name in ("model", "past_spend", "bgnbd_gamma_gamma"))
    assert m["scorers"]["model"]["normalized_gini"] > 0.3  # the model ranks future spend
    assert m["gamma_gamma"]["converged"] and m["gamma_gamma"]["q"] > 1
