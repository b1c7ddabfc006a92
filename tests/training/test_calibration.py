"""Calibration: the isotonic map is strictly increasing (ranks and AUC kept, no plateaus), fixes a
shape Platt cannot, survives the registry tag, and is fitted on the validation rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.champion import Calibration
from training.metrics import auc, expected_calibration_error, fit_calibration, fit_isotonic, fit_platt


def _kinked(rng, n):
    """Raw scores whose true probability is no sigmoid of them: flat low, then a steep rise, then flat."""
    raw = rng.normal(0.0, 2.0, n)
    p = 0.15 + 0.7 / (1.0 + np.exp(-4.0 * (raw - 1.0)))
    return raw, (rng.random(n) < p).astype(int), p


def test_isotonic_is_strictly_increasing_everywhere_including_beyond_the_knots():
    rng = np.random.default_rng(0)
    raw, y, _ = _kinked(rng, 20_000)
    cal = fit_isotonic(raw, y)
    assert cal.method == "isotonic" and len(cal.x) >= 5
    assert np.all(np.diff(cal.x) > 0) and np.all(np.diff(cal.p) > 0)
    grid = np.linspace(raw.min() - 5.0, raw.max() + 5.0, 50_001)  # reaches past both end knots
    p = cal.apply(grid)
    assert np.all(np.diff(p) > 0)
    assert np.all((p > 0) & (p < 1))
    # Distinct raw scores keep distinct probabilities: the ranking (and AUC) is the raw score's.
    assert len(np.unique(cal.apply(raw))) == len(np.unique(raw))
    assert auc(y, cal.apply(raw)) == pytest.approx(auc(y, raw), abs=1e-12)


def test_isotonic_fixes_a_shape_platt_cannot_on_fresh_rows():
    rng = np.random.default_rng(1)
    raw_fit, y_fit, _ = _kinked(rng, 30_000)
    raw_new, y_new, _ = _kinked(rng, 30_000)  # rows neither calibrator saw
    platt, iso = fit_platt(raw_fit, y_fit), fit_isotonic(raw_fit, y_fit)
    platt_ece = expected_calibration_error(y_new, platt.apply(raw_new))
    iso_ece = expected_calibration_error(y_new, iso.apply(raw_new))
    assert iso_ece < 0.015 < platt_ece


def test_isotonic_survives_the_registry_tag():
    rng = np.random.default_rng(2)
    raw, y, _ = _kinked(rng, 5_000)
    cal = fit_isotonic(raw, y)
    back = Calibration.from_json(cal.to_json())
    assert back == cal
    grid = np.linspace(-8, 8, 1001)
    np.testing.assert_array_equal(back.apply(grid), cal.apply(grid))
    # Platt tags from before keep loading as they were.
    old = Calibration.from_json('{"method": "platt", "a": 0.8, "b": -0.3}')
    np.testing.assert_allclose(old.apply([0.0]), [1 / (1 + np.exp(0.3))])


def test_few_rows_fall_back_to_platt_and_unknown_methods_are_refused():
    rng = np.random.default_rng(3)
    raw, y, _ = _kinked(rng, 500)
    assert fit_calibration(raw, y, "isotonic", isotonic_min_rows=1000).method == "platt"
    assert fit_calibration(raw, y, "isotonic", isotonic_min_rows=100).method == "isotonic"
    assert fit_calibration(raw, y, "platt").method == "platt"
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        fit_calibration(raw, y, "beta")


def test_isotonic_on_one_class_is_platts_identity():
    cal = fit_isotonic(np.array([0.1, -0.3, 2.0]), np.array([1, 1, 1]))
    assert (cal.method, cal.a, cal.b) == ("platt", 1.0, 0.0)


def test_final_fit_calibrates_on_the_validation_rows_only(monkeypatch):
    """fit_final hands the calibrator the booster's raw scores of exactly the validation rows: the
    train rows (in-sample, over-confident) and the test rows (the holdout the gate and the logged
    metrics read) never reach it."""
    import training.metrics as metrics
    from core.specs import load_spec
    from training.dataset import TrainingSet
    from training.train import fit_final
    from training.tune import Datasets

    rng = np.random.default_rng(4)
    n = 3_000
    x = rng.normal(size=n)
    split = np.array(["train"] * 1500 + ["validation"] * 1200 + ["test"] * 300)
    frame = pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n)],
        "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
        "label": (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(np.int64),
        "split": split, "f1": x, "f2": rng.normal(size=n),
    })
    ts = TrainingSet("churn_v1", ["f1", "f2"], frame)
    cfg = load_spec("churn")
    cfg = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"monotone": {}, "num_threads": 1})})
    data = Datasets.build(ts.X("train"), ts.y("train"), ts.X("validation"), ts.y("validation"))
    seen = {}
    real = metrics.fit_calibration

    def spy(raw, y, method, min_rows):
        seen.update(raw=np.asarray(raw), y=np.asarray(y), method=method)
        return real(raw, y, method, min_rows)

    monkeypatch.setattr(metrics, "fit_calibration", spy)
    best = type("Trial", (), {"params": {"learning_rate": 0.1, "num_leaves": 7}})()
    booster, calibration, _, _ = fit_final(cfg, ts, data, best)
    validation = ts.X("validation").to_numpy()
    assert len(seen["raw"]) == len(validation) == 1200
    np.testing.assert_allclose(seen["raw"], booster.predict(validation, raw_score=True))
    np.testing.assert_array_equal(seen["y"], ts.y("validation"))
    assert seen["method"] == cfg.calibration.method == calibration.method == "isotonic"
