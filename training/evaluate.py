"""``propensity evaluate``: a model's test AUC against the oracle AUC on the same rows.

On generated data the generator's ground truth (data/raw/ground_truth.parquet) holds each customer's true
probability at weekly ``as_of`` dates (Mondays). For the latest ``as_of`` whose label window has passed,
the eligible customers are labelled from the event store, scored by the model, and the model's AUC is put
next to the AUC of the true probabilities (the best any model could do on those rows) and of two simple
baselines: recency alone, and the RFM score.

Rows, labels, features and oracle all refer to the same instant: features come from ``features.exact``,
which builds a snapshot for a date off the feature store's grid instead of reading an older one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from core.errors import DataError, PropensityError
from core.events import EventStore
from core.settings import project_paths
from core.specs import Baseline, load_spec
from training.dataset import FeatureSource
from training.labels import TEST, build_labels, data_end
from training.metrics import auc

log = logging.getLogger("propensity.training")



@dataclass
class Evaluation:
    model: str
    version: str
    alias: str
    as_of: str
    rows: int
    label_rate: float
    model_auc: float
    oracle_auc: float
    oracle_ratio: float
    recency_auc: float
    rfm_auc: float
    flagged: int = 0  # rows in the model's high band (the spec's bands)
    driver_agreement: float = float("nan")  # share of flagged rows whose top reason is the true driver


def read_ground_truth(path=None, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The generator's ground truth with at least ``columns`` (besides customer_id and as_of)."""
    path = path or project_paths().ground_truth
    if not os.path.isfile(path):
        raise DataError(f"ground truth not found: {path} (it comes from `propensity generate`)")
    gt = pd.read_parquet(path)
    missing = {"customer_id", "as_of", *columns} - set(gt.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    gt["customer_id"] = gt["customer_id"].astype(str)
    gt["as_of"] = pd.to_datetime(gt["as_of"], utc=True).astype("datetime64[us, UTC]")
    return gt


def _baselines(baseline: Baseline, feats: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The spec's one-feature baseline and the RFM score, oriented so that a higher value means more
    likely positive. RFM points the way the baseline feature does: a high RFM score means a recent,
    frequent, big spender, so it lowers the risk when a larger baseline value raises it."""
    need = [baseline.feature, "r_score", "f_score", "m_score"]
    missing = [c for c in need if c not in feats.columns]
    if missing:
        raise DataError(f"feature retrieval lacks baseline column(s) {', '.join(missing)}")
    rfm = sum(pd.to_numeric(feats[c], errors="coerce").fillna(0) for c in ("r_score", "f_score", "m_score"))
    sign = 1.0 if baseline.higher_means_positive else -1.0
    values = pd.to_numeric(feats[baseline.feature], errors="coerce")
    # Missing (e.g. never ordered) counts as beyond the largest value seen.
    return sign * values.fillna(values.max() + 1).to_numpy(), -sign * rfm.to_numpy()


class SnapshotFeatures:
    """Features exactly at each row's timestamp (``features.exact``): ground truth sits on Mondays, the
    feature store's grid need not."""

    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        from features.exact import exact_historical_features

        return exact_historical_features(entity_df, service)


def evaluate_model(name: str, alias: str = "champion", source: FeatureSource | None = None,
                   ground_truth: pd.DataFrame | None = None) -> Evaluation:
    """Score model ``name`` at ``alias`` on the latest matured ground-truth date, next to the oracle and
    the baselines, on the same labelled rows."""
    from training.champion import load_model_version

    cfg = load_spec(name)
    if cfg.ground_truth is None:
        raise PropensityError(f"{name}: {cfg.config_file} names no ground_truth columns to evaluate against")
    truth_cols = (cfg.ground_truth.probability, cfg.ground_truth.driver)
    model = load_model_version(name, alias)
    gt = read_ground_truth(columns=truth_cols) if ground_truth is None else ground_truth
    store = EventStore(project_paths().events)
    end = data_end(store, cfg.cutoffs)
    horizon = pd.Timedelta(days=cfg.labels.horizon_days)
    matured = sorted(t for t in gt["as_of"].unique() if t + horizon <= end)
    if not matured:
        raise PropensityError(
            f"{name}: no ground-truth as_of date has a matured {cfg.labels.horizon_days}-day label "
            f"(ground truth {gt['as_of'].min():%Y-%m-%d}..{gt['as_of'].max():%Y-%m-%d}, events end "
            f"{end - pd.Timedelta(days=1):%Y-%m-%d})"
        )
    as_of = pd.Timestamp(matured[-1])
    cutoffs = pd.DataFrame({"cutoff": pd.Series([as_of]).astype("datetime64[us, UTC]"), "split": [TEST]})
    rows = build_labels(store, cfg.labels, cutoffs)
    truth = gt[gt["as_of"] == as_of][["customer_id", *truth_cols]]
    rows = rows.merge(truth, on="customer_id", how="inner")
    if len(rows) == 0 or rows["label"].nunique() < 2:
        raise PropensityError(f"{name}: too few labelled rows with ground truth at {as_of:%Y-%m-%d} to evaluate")
    feats = (source or SnapshotFeatures()).historical(rows[["customer_id", "event_timestamp"]],
                                                      model.feature_service).reset_index(drop=True)
    y = rows["label"].to_numpy()
    recency, rfm = _baselines(cfg.baseline, feats)
    model_auc = auc(y, model.predict_proba(feats))
    oracle_auc = auc(y, rows[cfg.ground_truth.probability].to_numpy())
    flagged, agreement = _driver_agreement(model, model.bands(cfg.bands), feats, rows[cfg.ground_truth.driver].to_numpy())
    return Evaluation(name, model.version, alias, f"{as_of:%Y-%m-%d}", len(rows), float(y.mean()), model_auc,
                      oracle_auc, model_auc / oracle_auc, auc(y, recency), auc(y, rfm), flagged, agreement)


def _driver_agreement(model, bands, feats: pd.DataFrame, true_drivers: np.ndarray) -> tuple[int, float]:
    """How often the top reason shown for a flagged (high-band) row names the generator's true driver."""
    from training.reasons import band, explain_model, load_templates, top_driver_agreement

    high = band(model.predict_proba(feats), bands) == "high"
    if not high.any():
        return 0, float("nan")
    templates = load_templates()
    reasons = explain_model(model, feats[high].reset_index(drop=True), top_k=1, templates=templates)
    return int(high.sum()), top_driver_agreement(reasons, list(true_drivers[high]), model.name, templates)


def write_report(evaluations: list[Evaluation]) -> str:
    """Write data/reports/evaluation.json atomically; return its path."""
    from core.io import write_json

    return str(write_json(project_paths().reports / "evaluation.json", [asdict(e) for e in evaluations]))
