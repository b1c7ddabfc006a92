"""training/metrics.py against answers worked out by hand: ECE, lift and recall in the top fraction,
Platt scaling, AUC and the metrics bundle logged for every training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.champion import Calibration
from training.metrics import (
    auc,
    classification_metrics,
    expected_calibration_error,
    fit_platt,
    top_fraction_stats,
)


# ---- expected calibration error ---------------------------------------------------------------------
def test_ece_of_perfectly_calibrated_bins_is_zero():
    # Bin [0.2, 0.3): four rows at 0.25, one positive (rate 0.25). Bin [0.7, 0.8): four at 0.75, three
    # positive (0.75). Bin [0.9, 1.0]: p = 1.0 (the last bin is closed) with y = 1.
    p = [0.25] * 4 + [0.75] * 4 + [1.0]
    y = [1, 0, 0, 0] + [1, 1, 1, 0] + [1]
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_two_bin_case():
    # Five rows at 0.2 with two positives: |0.4 - 0.2| = 0.2. Five rows at 0.9 with three: |0.6 - 0.9| = 0.3.
    # Weighted by 5/10 each: 0.5 * 0.2 + 0.5 * 0.3 = 0.25.
    p = [0.2] * 5 + [0.9] * 5
    y = [1, 1, 0, 0, 0] + [1, 1, 1, 0, 0]
    assert expected_calibration_error(y, p) == pytest.approx(0.25, abs=1e-12)
    # One bin: the errors of opposite sign cancel, |mean y - mean p| = |0.5 - 0.55| = 0.05.
    assert expected_calibration_error(y, p, bins=1) == pytest.approx(0.05, abs=1e-12)


def test_ece_compares_means_within_a_bin_and_weights_bins_by_rows():
    # 0.11 and 0.19 share the bin [0.1, 0.2): mean p 0.15, rate 0.5 -> 0.35, weight 2/4.
    # 0.55 and 0.55 in [0.5, 0.6): rate 0.5 -> 0.05, weight 2/4. ECE = 0.5 * 0.35 + 0.5 * 0.05 = 0.2.
    assert expected_calibration_error([0, 1, 1, 0], [0.11, 0.19, 0.55, 0.55]) == pytest.approx(0.2, abs=1e-12)
    # Four rows, a bin of 3 and a bin of 1: (3 * |1/3 - 0.1| + 1 * |1 - 0.9|) / 4 = (0.7 + 0.1) / 4 = 0.2.
    assert expected_calibration_error([1, 0, 0, 1], [0.1, 0.1, 0.1, 0.9]) == pytest.approx(0.2, abs=1e-12)


def test_ece_of_always_wrong_certainty_is_one():
    assert expected_calibration_error([0, 1], [1.0, 0.0]) == pytest.approx(1.0)


# ---- lift and recall in the top fraction ------------------------------------------------------------
def constructed_ranking(positives_in_top: int) -> tuple[np.ndarray, np.ndarray]:
    """100 rows, 20 positives; scores fall with the row number, and ``positives_in_top`` of the 20
    positives are among the 10 highest scores."""
    y = np.zeros(100, dtype=int)
    y[:positives_in_top] = 1
    y[10:10 + 20 - positives_in_top] = 1
    score = np.linspace(1.0, 0.0, 100)
    return y, score


@pytest.mark.parametrize("in_top,lift,recall", [
    (10, 5.0, 0.5),   # a perfect top decile: rate 10/10 against base 20/100 -> lift 5; 10 of 20 found
    (8, 4.0, 0.4),    # 8/10 / 0.2 = 4; 8 of 20
    (2, 1.0, 0.1),    # 2/10 is the base rate: no lift; 2 of 20
    (0, 0.0, 0.0),
])
def test_lift_and_recall_in_top_10_percent(in_top, lift, recall):
    y, score = constructed_ranking(in_top)
    assert top_fraction_stats(y, score, 0.1) == pytest.approx((lift, recall))
    # The order of the rows does not matter, only the scores.
    perm = np.random.default_rng(0).permutation(100)
    assert top_fraction_stats(y[perm], score[perm], 0.1) == pytest.approx((lift, recall))


def test_top_fraction_size_and_ties():
    # 15 rows at 10%: round(1.5) = 2 rows in the top. 4 rows: at least one row.
    y = np.array([0, 1] + [0] * 13)
    score = np.array([0.9, 0.8] + [0.1] * 13)
    lift, recall = top_fraction_stats(y, score, 0.1)
    assert (lift, recall) == pytest.approx(((1 / 2) / (1 / 15), 1.0))
    assert top_fraction_stats([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.1) == pytest.approx((4.0, 1.0))
    # Equal scores keep the input order (stable sort): the first rows make the top.
    assert top_fraction_stats([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0.5] * 10, 0.1) == pytest.approx((10.0, 1.0))
    assert top_fraction_stats([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0.5] * 10, 0.1) == pytest.approx((0.0, 0.0))


def test_lift_without_positives_is_undefined():
    lift, recall = top_fraction_stats([0, 0, 0, 0], [0.4, 0.3, 0.2, 0.1], 0.5)
    assert math.isnan(lift) and math.isnan(recall)


# ---- Platt scaling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.6, -1.2), (2.5, 0.8)])
def test_platt_recovers_a_known_sigmoid(a, b):
    rng = np.random.default_rng(42)
    raw = rng.normal(0.0, 2.0, 50_000)
    y = (rng.random(raw.size) < 1 / (1 + np.exp(-(a * raw + b)))).astype(int)
    cal = fit_platt(raw, y)
    # Standard errors at 50k rows are about 0.01-0.03 for these (a, b); 0.08 is several of them.
    assert cal.a == pytest.approx(a, abs=0.08)
    assert cal.b == pytest.approx(b, abs=0.08)
    assert cal.method == "platt"
    np.testing.assert_allclose(cal.apply([0.0, 1.0]), 1 / (1 + np.exp(-np.array([cal.b, cal.a + cal.b]))))


def test_platt_improves_calibration_of_an_overconfident_score():
    # True p = sigmoid(0.5 * raw): reading the raw score through LightGBM's own sigmoid is overconfident.
    rng = np.random.default_rng(1)
    raw = rng.normal(0.0, 3.0, 20_000)
    y = (rng.random(raw.size) < 1 / (1 + np.exp(-0.5 * raw))).astype(int)
    identity = Calibration().apply(raw)
    calibrated = fit_platt(raw, y).apply(raw)
    assert expected_calibration_error(y, calibrated) < 0.02 < expected_calibration_error(y, identity)


def test_platt_on_one_class_is_the_identity():
    cal = fit_platt(np.array([0.1, -0.3, 2.0]), np.array([1, 1, 1]))
    assert (cal.a, cal.b) == (1.0, 0.0)


# ---- AUC --------------------------------------------------------------------------------------------
def test_auc_by_hand():
    # Positive/negative pairs: 0.35 beats 0.1 but not 0.4; 0.8 beats both -> 3 of 4 pairs.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert auc([1, 1, 0], [3, 2, 1]) == pytest.approx(1.0)  # integer scores (day counts) work too
    assert auc([1, 0], [0.2, 0.9]) == pytest.approx(0.0)


def test_auc_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    score = y + rng.normal(0, 1.5, 2000)
    score[:100] = np.round(score[:100])  # some ties
    assert auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


# ---- the bundle logged per training -----------------------------------------------------------------
def test_classification_metrics_of_a_small_case():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.2, 0.8, 0.4, 0.6])
    m = classification_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(1.0) and m["pr_auc"] == pytest.approx(1.0)  # perfect ranking
    # Brier: (0.2^2 + 0.2^2 + 0.4^2 + 0.4^2) / 4 = 0.1. Log loss: -(ln 0.8 + ln 0.6) / 2.
    assert m["brier"] == pytest.approx(0.1)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # One row per bin, |y - p|: (0.2 + 0.2 + 0.4 + 0.4) / 4 = 0.3.
    assert m["ece"] == pytest.approx(0.3)
    # Top 10% of 4 rows is one row (0.8, a positive): lift 1 / 0.5 = 2, recall 1 of 2.
    assert (m["lift_top10"], m["recall_top10"]) == pytest.approx((2.0, 0.5))
    assert (m["label_rate"], m["rows"]) == (0.5, 4.0)
    assert set(m) == {"roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "recall_top10",
                      "label_rate", "rows"}


def test_classification_metrics_clip_certain_mistakes():
    # p of exactly 0 or 1 would make the log loss infinite; clipped to 1e-7, each mistake costs -ln(1e-7).
    m = classification_metrics(np.array([1, 0]), np.array([0.0, 1.0]))
    assert m["log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert m["roc_auc"] == pytest.approx(0.0) and m["brier"] == pytest.approx(1.0, abs=1e-6)
