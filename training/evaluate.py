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
from training.dataset import ExactFeatureSource, FeatureSource
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
    # Top cause = the generator's true driver on the flagged rows (truth "none" left out), with the
    # ranking configs/reasons.yaml picks for this model (driver_method), and with today's SHAP alone.
    driver_agreement: float = float("nan")
    driver_method: str = ""
    driver_agreement_snapshot: float = float("nan")
    # The supervised ceiling: a classifier of the true driver from the same features, cross-validated,
    # scored on the same flagged rows; and the agreement as a share of it.
    driver_ceiling: float = float("nan")
    driver_ceiling_ratio: float = float("nan")
    # The feature ceiling (training.ceiling, with ``ceiling=True``): the model's learner trained on the
    # true probabilities; the gap to the oracle splits into learning (model / ceiling) and information
    # the features lack (ceiling / oracle).
    ceiling_auc: float = float("nan")
    ceiling_rows: int = 0
    model_to_ceiling: float = float("nan")
    ceiling_to_oracle: float = float("nan")


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


def evaluate_model(name: str, alias: str = "champion", source: FeatureSource | None = None,
                   ground_truth: pd.DataFrame | None = None, ceiling: bool = False) -> Evaluation:
    """Score model ``name`` at ``alias`` on the latest matured ground-truth date, next to the oracle and
    the baselines, on the same labelled rows; with ``ceiling`` also the feature ceiling (it trains a model
    on up to five times the training rows: minutes, not seconds)."""
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
    feats = (source or ExactFeatureSource()).historical(rows[["customer_id", "event_timestamp"]],
                                                      model.feature_service).reset_index(drop=True)
    y = rows["label"].to_numpy()
    recency, rfm = _baselines(cfg.baseline, feats)
    model_auc = auc(y, model.predict_proba(feats))
    oracle_auc = auc(y, rows[cfg.ground_truth.probability].to_numpy())
    drivers = _driver_agreement(model, model.bands(cfg.bands), feats, rows, cfg.ground_truth.driver, as_of,
                                source or ExactFeatureSource(), cfg.tuning.num_threads)
    if ceiling:
        from training.ceiling import feature_ceiling

        c = feature_ceiling(cfg, model, gt, as_of, feats, y, source or ExactFeatureSource())
        drivers.update(ceiling_auc=c.auc, ceiling_rows=c.rows, model_to_ceiling=model_auc / c.auc,
                       ceiling_to_oracle=c.auc / oracle_auc)
    return Evaluation(name, model.version, alias, f"{as_of:%Y-%m-%d}", len(rows), float(y.mean()), model_auc,
                      oracle_auc, model_auc / oracle_auc, auc(y, recency), auc(y, rfm), **drivers)


def _driver_agreement(model, bands, feats: pd.DataFrame, rows: pd.DataFrame, driver_column: str,
                      as_of: pd.Timestamp, source, threads: int) -> dict:
    """How often the top cause shown for a flagged (high-band) row is the generator's true driver, with
    the configured ranking and with today's SHAP alone, next to the supervised ceiling on the same rows."""
    from training.cause_context import fit_cause_scale, model_scale, ranking_context
    from training.reasons import band, explain, load_templates, ranking_method, top_driver_agreement

    true_drivers = rows[driver_column].astype(str).to_numpy()
    X = model.matrix(feats)
    contributions = model.contributions(X)
    high = band(model.from_contributions(contributions), bands) == "high"
    if not high.any():
        return {"flagged": 0}
    templates = load_templates()
    names = list(model.feature_names)
    flagged = feats[high].reset_index(drop=True)
    truth = list(true_drivers[high])
    ids = rows["customer_id"].astype(str).to_numpy()
    # The scale stored with the version, as batch scoring and /predict use it; a version trained before
    # versions carried one is measured against the evaluated population instead.
    scale = model_scale(model, templates)
    if scale is None:
        scale = fit_cause_scale(model, feats, ids, as_of, source, templates, contributions)
    context = ranking_context(model, flagged, ids[high], as_of, source, templates, scale=scale)
    method = ranking_method(templates, model.name, context.history, context.scale)
    chosen = explain(contributions[high], flagged, names, model.name, 1, templates=templates,
                     history=context.history, scale=context.scale)
    snapshot = explain(contributions[high], flagged, names, model.name, 1, templates=templates)
    agreement = top_driver_agreement(chosen, truth)
    ceiling = driver_ceiling(X, true_drivers, high, templates.ceiling, threads)
    return {"flagged": int(high.sum()), "driver_agreement": agreement, "driver_method": method,
            "driver_agreement_snapshot": top_driver_agreement(snapshot, truth), "driver_ceiling": ceiling,
            "driver_ceiling_ratio": agreement / ceiling if ceiling > 0 else float("nan")}


def driver_ceiling(X: np.ndarray, true_drivers: np.ndarray, high: np.ndarray, ceiling, threads: int) -> float:
    """The supervised ceiling: a LightGBM multiclass classifier of the true driver from the same
    features (rows with a driver), ``ceiling.folds``-fold cross-validated; its out-of-fold accuracy on
    the flagged rows. What any attribution of these features could at best reach (a trained one,
    unlike the cause map, which is never fitted to the drivers)."""
    import lightgbm as lgb
    from sklearn.model_selection import StratifiedKFold

    has = true_drivers != "none"
    classes, y = np.unique(true_drivers[has], return_inverse=True)
    if len(classes) < 2 or np.bincount(y).min() < ceiling.folds or not high[has].any():
        return float("nan")
    Xd = X[has]
    predicted = np.empty(len(y), dtype=np.int64)
    params = {"objective": "multiclass", "num_class": len(classes), "learning_rate": ceiling.learning_rate,
              "num_leaves": ceiling.num_leaves, "num_threads": threads, "verbose": -1, "seed": ceiling.seed}
    for train, test in StratifiedKFold(ceiling.folds, shuffle=True, random_state=ceiling.seed).split(Xd, y):
        booster = lgb.train(params, lgb.Dataset(Xd[train], y[train]), num_boost_round=ceiling.rounds)
        predicted[test] = booster.predict(Xd[test]).argmax(axis=1)
    return float((predicted == y)[high[has]].mean())


def write_report(evaluations: list[Evaluation]) -> str:
    """Write data/reports/evaluation.json atomically; return its path."""
    from core.io import write_json

    return str(write_json(project_paths().reports / "evaluation.json", [asdict(e) for e in evaluations]))
