"""Monitoring statistics, the verdict against thresholds, and the HTML report. The end-to-end monitor on
generated data with a behaviour shift is in test_run.py (it needs the whole chain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.monitor import (
    ModelSignals,
    Thresholds,
    feature_drift,
    load_monitor_config,
    psi,
    verdict,
    write_report,
)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    assert psi(ref, rng.normal(loc=1.0, size=20_000)) > 0.25
    # Symmetric enough to be a distance, and finite even with empty bins.
    assert psi(ref, np.full(1000, 10.0)) > 1.0


def test_psi_counts_missing_values_and_handles_discrete_features():
    rng = np.random.default_rng(1)
    counts = rng.poisson(1.0, size=10_000).astype(float)  # few distinct values: deduplicated bins
    assert psi(counts, rng.poisson(1.0, size=10_000).astype(float)) < 0.01
    # The same values, but a third of the rows now arrive empty: that is drift.
    current = rng.poisson(1.0, size=10_000).astype(float)
    current[: len(current) // 3] = np.nan
    assert psi(counts, current) > 0.25
    assert np.isnan(psi([], [1.0]))


def test_feature_drift_ranks_features_by_psi():
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"stable": rng.normal(size=5000), "moved": rng.normal(size=5000)})
    cur = pd.DataFrame({"stable": rng.normal(size=5000), "moved": rng.normal(2.0, size=5000)})
    out = feature_drift(ref, cur, ["stable", "moved", "absent"], bins=10)
    assert out["feature"].tolist() == ["moved", "stable"]
    assert out.loc[0, "psi"] > 0.25 > out.loc[1, "psi"]
    assert out.loc[0, "current_mean"] == pytest.approx(cur["moved"].mean())


def _signals(max_psi: float, score_psi: float, aucs: list[float], holdout: float = 0.8) -> ModelSignals:
    drift = pd.DataFrame({"feature": ["a", "b", "c"], "psi": [max_psi, max_psi, 0.01],
                          "reference_mean": 0.0, "current_mean": 0.0})
    realised = pd.DataFrame({"as_of": pd.date_range("2026-01-01", periods=len(aucs), freq="7D", tz="UTC"),
                             "rows": 500, "positives": 100, "auc": aucs})
    return ModelSignals("churn", "3", holdout, drift, score_psi, realised)


def test_verdict_against_thresholds():
    t = Thresholds(feature_psi=0.25, max_drifted_features=1, score_psi=0.2, min_realised_auc=0.65, max_auc_drop=0.05)
    assert not verdict([_signals(0.05, 0.05, [0.80, 0.79])], t).retrain
    drifted = verdict([_signals(0.4, 0.05, [0.80])], t)
    assert drifted.retrain and "2 feature(s) with PSI > 0.25" in drifted.reasons[0]
    assert verdict([_signals(0.05, 0.3, [0.80])], t).reasons == ["churn: score PSI 0.30 > 0.2"]
    low = verdict([_signals(0.05, 0.05, [0.80, 0.60])], t)  # the latest matured AUC counts
    assert low.retrain and "realised AUC (all rows) 0.600" in low.reasons[0]
    drop = verdict([_signals(0.05, 0.05, [0.70], holdout=0.80)], t)
    assert drop.retrain and "below the holdout AUC" in drop.reasons[0]
    # Immature scores (NaN AUC) are not evidence either way.
    assert not verdict([_signals(0.05, 0.05, [np.nan])], t).retrain
    assert verdict([_signals(0.05, 0.05, [0.80])], t).text.startswith("OK")


def test_report_has_plots_tables_and_the_verdict(tmp_path):
    sig = _signals(0.4, 0.3, [0.8, 0.7])
    rng = np.random.default_rng(3)
    hists = {"churn": (rng.uniform(size=500), rng.uniform(size=500) ** 2)}
    v = verdict([sig], Thresholds())
    out = tmp_path / "monitor-2026-10-31"
    report = write_report([sig], v, "2026-10-31", hists, out)
    text = report.read_text()
    assert "RETRAIN" in text and "churn" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["churn_feature_psi.png", "churn_realised_auc.png", "churn_scores.png"]
    assert all(f"src='{name}'" in text for name in pngs)
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in pngs)
    # Rewriting replaces the folder whole (no stale temp folder left behind).
    write_report([sig], v, "2026-10-31", {}, out)
    assert not (out / "churn_scores.png").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_repo_monitor_config_validates():
    cfg = load_monitor_config()
    assert cfg.thresholds.feature_psi > 0 and cfg.experiment == "monitoring"


# ---- the value model (a regression): realised error on matured amounts ------------------------------
def test_value_model_realised_gini_capture_and_error_on_matured_amounts(project_home):
    """Scores of the value model on two dates: the one whose 180-day window has closed is measured
    against the spend that followed (the value label), with training.metrics' definitions; the other
    is not matured yet and gives no row."""
    from core.events import EventStore
    from core.settings import SCORES_FILE, project_paths
    from core.specs import load_spec
    from pipelines.monitor import MonitorConfig, _realised
    from training.metrics import regression_metrics

    spec = load_spec("value")
    as_of = pd.Timestamp("2026-01-03", tz="UTC")
    horizon = pd.Timedelta(days=spec.labels.horizon_days)
    rng = np.random.default_rng(6)
    n = 80
    ids = [f"c{i:02d}" for i in range(n)]
    future = np.where(rng.random(n) < 0.5, 0.0, rng.gamma(2.0, 60.0, n))  # half buy nothing
    orders = [(f"p{i}", c, as_of - pd.Timedelta(days=30), 50.0) for i, c in enumerate(ids)]  # eligible at as_of
    orders += [(f"f{i}", c, as_of + pd.Timedelta(days=10), float(a)) for i, (c, a) in enumerate(zip(ids, future, strict=True))
               if a > 0]
    orders.append(("late", "other", as_of + horizon + pd.Timedelta(days=5), 1.0))  # the data runs past the window
    EventStore(project_paths().events).replace_months({"orders": pd.DataFrame(
        orders, columns=["order_id", "customer_id", "ordered_at", "amount"])})
    predicted = future * rng.lognormal(0, 0.5, n) + rng.gamma(1.0, 20.0, n)
    later = as_of + pd.Timedelta(days=28)  # its window ends after the data: not matured
    for day in (as_of, later):
        folder = project_paths().scores / f"{day:%Y-%m-%d}"
        folder.mkdir(parents=True)
        pd.DataFrame({"customer_id": ids, "value_value": predicted}).to_parquet(folder / SCORES_FILE)

    cfg = MonitorConfig()
    frame, note = _realised("value", [f"{as_of:%Y-%m-%d}", f"{later:%Y-%m-%d}"], project_paths(),
                            EventStore(project_paths().events), cfg)
    assert note == "" and len(frame) == 1
    row = frame.iloc[0]
    expected = regression_metrics(future, predicted)
    assert row["as_of"] == as_of and row["rows"] == n and row["positives"] == int((future > 0).sum())
    assert row["normalized_gini"] == pytest.approx(expected["normalized_gini"])
    assert row["capture_top10"] == pytest.approx(expected["top_decile_capture"])
    assert row["mae"] == pytest.approx(expected["mae"]) and row["mean_bias"] == pytest.approx(expected["mean_bias"])
    assert row["mean_realised"] == pytest.approx(future.mean())
    assert 0.3 < row["normalized_gini"] < 1  # a prediction built from the outcome ranks it

    # Too few buyers for a Gini: the row stays, without the metrics, and the note says why.
    frame, note = _realised("value", [f"{as_of:%Y-%m-%d}"], project_paths(), EventStore(project_paths().events),
                            MonitorConfig(min_positives_for_auc=n))
    assert np.isnan(frame.iloc[0]["normalized_gini"]) and "no matured scores" in note


def _value_signals(ginis: list[float], holdout: float | None = 0.7) -> ModelSignals:
    realised = pd.DataFrame({"as_of": pd.date_range("2026-01-01", periods=len(ginis), freq="7D", tz="UTC"),
                             "rows": 500, "positives": 200, "normalized_gini": ginis, "capture_top10": 0.4,
                             "mae": 50.0, "mean_bias": 1.0, "mean_predicted": 80.0, "mean_realised": 79.0})
    return ModelSignals("value", "2", holdout, pd.DataFrame(), None, realised, task="regression")


def test_verdict_on_the_value_models_realised_gini(tmp_path):
    t = Thresholds(min_realised_gini=0.3, max_gini_drop=0.1)
    assert not verdict([_value_signals([0.68, 0.65])], t).retrain
    low = verdict([_value_signals([0.65, 0.25])], t)  # the latest matured date counts
    assert low.retrain and low.reasons == ["value: realised normalised Gini 0.250 on 2026-01-08 < 0.3"]
    drop = verdict([_value_signals([0.55])], t)
    assert drop.retrain and "0.150 below the holdout's 0.700" in drop.reasons[0]
    assert not verdict([_value_signals([0.55], holdout=None)], t).retrain  # no holdout score: no drop check
    assert not verdict([_value_signals([np.nan])], t).retrain  # immature: no evidence

    # The report plots amounts on their own scale and the realised Gini over time.
    sig = _value_signals([0.68, 0.25])
    sig.score_psi = 0.05
    rng = np.random.default_rng(7)
    hists = {"value": (rng.gamma(1.0, 100.0, 500), rng.gamma(1.0, 120.0, 500))}
    out = tmp_path / "monitor-2026-01-08"
    text = write_report([sig], verdict([sig], t), "2026-01-08", hists, out).read_text()
    assert "normalised Gini" in text and "RETRAIN" in text
    assert sorted(p.name for p in out.glob("*.png")) == ["value_realised_auc.png", "value_scores.png"]
    from pipelines.monitor import MonitorResult

    metrics = MonitorResult(verdict([sig], t), [sig], out / "index.html", "2026-01-08").metrics()
    assert metrics["value_realised_normalized_gini_latest"] == pytest.approx(0.25)
    assert metrics["value_realised_mae_latest"] == pytest.approx(50.0) and "value_realised_auc_latest" not in metrics
