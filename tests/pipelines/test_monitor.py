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
