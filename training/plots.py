"""PNG plots logged with every trained model: SHAP summary, calibration curve, cumulative gain, importance."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display here, and plots go to files anyway
    import matplotlib.pyplot as plt

    return plt


def calibration_curve_plot(y: np.ndarray, p: np.ndarray, path: Path, title: str, bins: int = 10) -> Path:
    plt = _pyplot()
    idx = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    mean_p, rate, counts = [], [], []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            mean_p.append(p[mask].mean())
            rate.append(y[mask].mean())
            counts.append(mask.sum())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, rate, "o-", label="model")
    for x, r, n in zip(mean_p, rate, counts, strict=True):
        ax.annotate(str(n), (x, r), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cumulative_gain_plot(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> Path:
    plt = _pyplot()
    order = np.argsort(-p, kind="stable")
    gain = np.concatenate([[0], np.cumsum(y[order]) / max(y.sum(), 1)])
    share = np.linspace(0, 1, len(gain))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(share, gain, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.axvline(0.1, color="tab:red", lw=0.8, ls=":", label="top 10%")
    ax.set(xlabel="share of customers contacted (by score)", ylabel="share of positives reached", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def feature_importance_plot(booster, path: Path, title: str, top: int = 20) -> Path:
    plt = _pyplot()
    gain = pd.Series(booster.feature_importance(importance_type="gain"), index=booster.feature_name())
    gain = gain.sort_values().tail(top)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(gain) + 1.5))
    ax.barh(gain.index, gain.to_numpy())
    ax.set(xlabel="total gain", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def shap_summary_plot(booster, X: pd.DataFrame, path: Path, title: str) -> Path:
    """Beeswarm of SHAP values (raw-score space) drawn by the shap package."""
    plt = _pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap and matplotlib emit deprecation noise on import and per call
        import shap

        contributions = booster.predict(X.to_numpy(dtype=np.float64), pred_contrib=True)[:, :-1]
        shap.summary_plot(contributions, X, show=False, max_display=20)
    fig = plt.gcf()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
