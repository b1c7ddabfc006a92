"""``propensity evaluate``: a model's test AUC against the oracle AUC on the same rows.

On generated data the generator's ground truth (data/raw/ground_truth.parquet) holds each customer's true
probability at weekly ``as_of`` dates. For the latest ``as_of`` whose label window has passed, the
eligible customers are labelled from the event store, scored by the model, and the model's AUC is put
next to the AUC of the true probabilities (the best any model could do on those rows) and of two simple
baselines: recency alone, and the RFM score.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipelines.errors import DataError, PropensityError
from pipelines.events import EventStore
from pipelines.settings import project_paths
from training.config import ChurnLabels, load_training_config
from training.dataset import FeastFeatureSource, FeatureSource
from training.labels import TEST, build_labels, data_end
from training.metrics import auc

log = logging.getLogger("propensity.training")

ORACLE_COLUMN = {"churn": "p_churn", "conversion": "p_convert"}


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


def read_ground_truth(path=None) -> pd.DataFrame:
    path = path or project_paths().raw / "ground_truth.parquet"
    if not os.path.isfile(path):
        raise DataError(f"ground truth not found: {path} (it comes from `propensity generate`)")
    gt = pd.read_parquet(path)
    missing = {"customer_id", "as_of", "p_churn", "p_convert"} - set(gt.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    gt["customer_id"] = gt["customer_id"].astype(str)
    gt["as_of"] = pd.to_datetime(gt["as_of"], utc=True).astype("datetime64[us, UTC]")
    return gt


def _baselines(kind: str, feats: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Recency alone and the RFM score, oriented so that a higher value means more likely positive."""
    need = ["days_since_last_order", "days_since_last_visit", "r_score", "f_score", "m_score"]
    missing = [c for c in need if c not in feats.columns]
    if missing:
        raise DataError(f"feature retrieval lacks baseline column(s) {', '.join(missing)}")
    rfm = sum(pd.to_numeric(feats[c], errors="coerce").fillna(0) for c in ("r_score", "f_score", "m_score"))
    if kind == "churn":
        days = pd.to_numeric(feats["days_since_last_order"], errors="coerce")
        return days.fillna(days.max() + 1).to_numpy(), -rfm.to_numpy()
    days = pd.to_numeric(feats["days_since_last_visit"], errors="coerce")
    return -days.fillna(days.max() + 1).to_numpy(), rfm.to_numpy()


def evaluate_model(name: str, alias: str = "champion", source: FeatureSource | None = None,
                   ground_truth: pd.DataFrame | None = None) -> Evaluation:
    from training.champion import load_model_version

    cfg = load_training_config(name)
    model = load_model_version(name, alias)
    gt = read_ground_truth() if ground_truth is None else ground_truth
    store = EventStore(project_paths().events)
    end = data_end(store, cfg.cutoffs)
    matured = sorted(t for t in gt["as_of"].unique() if t + pd.Timedelta(days=cfg.labels.horizon_days) <= end)
    if not matured:
        raise PropensityError(f"{name}: no ground-truth as_of date has a matured {cfg.labels.horizon_days}-day label")
    as_of = pd.Timestamp(matured[-1])
    cutoffs = pd.DataFrame({"cutoff": pd.Series([as_of]).astype("datetime64[us, UTC]"), "split": [TEST]})
    rows = build_labels(store, cfg.labels, cutoffs)
    truth = gt[gt["as_of"] == as_of][["customer_id", ORACLE_COLUMN[name]]]
    rows = rows.merge(truth, on="customer_id", how="inner")
    if len(rows) == 0 or rows["label"].nunique() < 2:
        raise PropensityError(f"{name}: too few labelled rows with ground truth at {as_of:%Y-%m-%d} to evaluate")
    feats = (source or FeastFeatureSource()).historical(rows[["customer_id", "event_timestamp"]], model.feature_service)
    y = rows["label"].to_numpy()
    recency, rfm = _baselines("churn" if isinstance(cfg.labels, ChurnLabels) else "conversion", feats)
    model_auc = auc(y, model.predict_proba(feats))
    oracle_auc = auc(y, rows[ORACLE_COLUMN[name]].to_numpy())
    return Evaluation(name, model.version, alias, f"{as_of:%Y-%m-%d}", len(rows), float(y.mean()), model_auc,
                      oracle_auc, model_auc / oracle_auc, auc(y, recency), auc(y, rfm))


def write_report(evaluations: list[Evaluation]) -> str:
    """Write data/reports/evaluation.json atomically; return its path."""
    out = project_paths().reports
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".evaluation.json.tmp"
    tmp.write_text(json.dumps([asdict(e) for e in evaluations], indent=2))
    os.replace(tmp, out / "evaluation.json")
    return str(out / "evaluation.json")
