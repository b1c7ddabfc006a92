"""Evaluation metrics and calibration (Platt, isotonic). People read these probabilities, so they are calibrated."""

from __future__ import annotations

import numpy as np

from training.champion import Calibration


def fit_platt(raw_score: np.ndarray, y: np.ndarray) -> Calibration:
    """Fit p = sigmoid(a * raw + b) by (almost unregularised) logistic regression on held-out rows."""
    from sklearn.linear_model import LogisticRegression

    raw = np.asarray(raw_score, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return Calibration()
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw, y)
    return Calibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


# Knots kept in an isotonic calibration (stored as a registry tag and read on every model load): more
# blocks than this are thinned to evenly spaced ones, which keeps the map increasing.
MAX_ISOTONIC_KNOTS = 200
# Knot probabilities stay inside (0, 1): the tails continue them in logit space.
_P_FLOOR = 1e-6


def fit_isotonic(raw_score: np.ndarray, y: np.ndarray) -> Calibration:
    """Isotonic regression of ``y`` on the raw score (held-out rows), as a strictly increasing map.

    Plain isotonic regression is a step function: every row of one block gets the block's rate, which
    puts large groups of different customers on one probability and ties their ranks. Here each block
    becomes one knot (its mean raw score, its rate) and the map interpolates linearly between knots, so
    ranks are kept and the probabilities follow the observed rates. Beyond the end knots it continues
    with the slope of a Platt fit on the same rows (in logit space)."""
    from sklearn.isotonic import IsotonicRegression

    raw = np.asarray(raw_score, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    platt = fit_platt(raw, y)
    if len(np.unique(y)) < 2:
        return platt
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(raw, y).predict(raw)
    order = np.argsort(raw, kind="stable")
    raw_sorted, fit_sorted = raw[order], fitted[order]
    starts = np.flatnonzero(np.r_[True, fit_sorted[1:] != fit_sorted[:-1]])
    x = np.add.reduceat(raw_sorted, starts) / np.diff(np.r_[starts, len(raw)])
    p = np.clip(fit_sorted[starts], _P_FLOOR, 1.0 - _P_FLOOR)
    keep = np.r_[True, (np.diff(x) > 0) & (np.diff(p) > 0)]  # clipping can merge the extreme blocks
    x, p = x[keep], p[keep]
    if len(x) > MAX_ISOTONIC_KNOTS:
        pick = np.unique(np.round(np.linspace(0, len(x) - 1, MAX_ISOTONIC_KNOTS)).astype(int))
        x, p = x[pick], p[pick]
    return Calibration(a=platt.a, b=platt.b, method="isotonic", x=tuple(map(float, x)), p=tuple(map(float, p)))


def fit_calibration(raw_score: np.ndarray, y: np.ndarray, method: str = "isotonic",
                    isotonic_min_rows: int = 0) -> Calibration:
    """The model spec's calibration (``calibration.method``) on held-out rows; isotonic falls back to
    Platt on fewer than ``isotonic_min_rows`` rows, where its blocks would follow noise."""
    if method not in ("isotonic", "platt"):
        raise ValueError(f"unknown calibration method {method!r} (platt or isotonic)")
    if method == "isotonic" and len(np.asarray(raw_score)) >= isotonic_min_rows:
        return fit_isotonic(raw_score, y)
    return fit_platt(raw_score, y)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def top_fraction_stats(y: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> tuple[float, float]:
    """Lift and recall of the top ``fraction`` of rows by score."""
    y = np.asarray(y, dtype=np.float64)
    n_top = max(1, int(round(len(y) * fraction)))
    order = np.argsort(-np.asarray(score), kind="stable")[:n_top]
    base_rate = y.mean()
    captured = y[order].sum()
    lift = float((captured / n_top) / base_rate) if base_rate > 0 else float("nan")
    recall = float(captured / y.sum()) if y.sum() > 0 else float("nan")
    return lift, recall


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier, ECE, lift and recall in the top 10%."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    lift, recall = top_fraction_stats(y, p, 0.1)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top10": lift,
        "recall_top10": recall,
        "label_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }


def auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y), np.asarray(score, dtype=np.float64), sample_weight=weights))


def gini(y: np.ndarray, score: np.ndarray) -> float:
    """Gini of ``y`` ordered by ``score`` (highest first): how much more of the total ``y`` the top of the
    ranking holds than a random order would (the area between the cumulative share and the diagonal)."""
    y = np.asarray(y, dtype=np.float64)
    order = np.lexsort((np.arange(len(y)), -np.asarray(score, dtype=np.float64)))  # ties: input order
    total = y.sum()
    if total <= 0:
        return float("nan")
    cumulative = np.cumsum(y[order]) / total
    return float(cumulative.mean() - (len(y) + 1) / (2 * len(y)))


def normalized_gini(y: np.ndarray, score: np.ndarray) -> float:
    """Gini of the model's ranking divided by the Gini of the perfect ranking (by ``y`` itself): 1 for a
    perfect order, 0 for a random one. The value model's promotion metric."""
    return float(gini(y, score) / gini(y, y))


def top_capture(y: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total ``y`` (e.g. future spend) held by the top ``fraction`` of rows by ``score``."""
    y = np.asarray(y, dtype=np.float64)
    n_top = max(1, int(round(len(y) * fraction)))
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:n_top]
    return float(y[order].sum() / y.sum()) if y.sum() > 0 else float("nan")


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Ranking (normalized Gini, top-decile capture) and error (MAE, RMSE, mean bias) of amounts."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return {
        "normalized_gini": normalized_gini(y, pred),
        "top_decile_capture": top_capture(y, pred, 0.1),
        "mae": float(np.mean(np.abs(y - pred))),
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "mean_bias": float(np.mean(pred - y)),
        "label_mean": float(np.mean(y)),
        "rows": float(len(y)),
    }


def task_metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of a model's task on one split."""
    return classification_metrics(y, pred) if task == "binary" else regression_metrics(y, pred)


def metric_value(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """One named metric (a spec's promotion metric): roc_auc, pr_auc, normalized_gini, top_decile_capture."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    functions = {
        "roc_auc": lambda: roc_auc_score(y, pred),
        "pr_auc": lambda: average_precision_score(y, pred),
        "normalized_gini": lambda: normalized_gini(y, pred),
        "top_decile_capture": lambda: top_capture(y, pred, 0.1),
    }
    return float(functions[name]())
