"""Evaluation metrics and Platt calibration. People read these probabilities, so they are calibrated."""

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


def auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y), np.asarray(score, dtype=np.float64)))
