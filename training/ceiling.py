"""The feature ceiling on generated data: how much of the gap to the oracle is learning, how much is
information the features lack.

The oracle AUC (``training.evaluate``) scores the generator's true probabilities, which see the hidden
state of every customer. The feature ceiling is the best this feature set can do: the model's own learner
(LightGBM with the registered version's tuned parameters and the spec's monotone constraints) trained not
on 0/1 outcomes but on the true probabilities (cross-entropy on soft labels, so no label noise), on up to
``rows_factor`` times the model's training rows (every earlier ground-truth date, newest first). Measured on
the same rows as the model and the oracle:

- model / ceiling: what better learning (more data, less noise) could still add;
- ceiling / oracle: what the features cannot see.

Generated data only (it needs the ground truth). Training dates end a label horizon before the evaluation
date, as the model's own training does, so the ceiling sees no later behaviour than the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import PropensityError
from core.events import EventStore
from core.settings import project_paths
from core.specs import ModelSpec

log = logging.getLogger("propensity.training")

ROWS_FACTOR = 5  # the "five times the rows": enough that sample size is not what limits the ceiling
VALID_SHARE = 0.2  # newest share of the ceiling's training dates held out for early stopping


@dataclass
class Ceiling:
    rows: int  # training rows the ceiling used
    dates: int  # ground-truth dates they come from
    target_rows: int  # rows_factor x the model's training rows
    auc: float  # on the evaluation rows, against realised labels


def _tuned_params(run_id: str | None) -> dict:
    """The best trial's parameters of the registered version's training run (logged as best_<name>)."""
    from training.tracking import client

    if not run_id:
        return {}
    params = client().get_run(run_id).data.params
    out = {}
    for key, value in params.items():
        if key.startswith("best_"):
            try:
                number = float(value)
            except ValueError:
                continue
            out[key[len("best_"):]] = int(number) if number.is_integer() and "fraction" not in key else number
    return out


def _train_rows(run_id: str | None) -> int:
    from training.tracking import client

    if not run_id:
        return 0
    value = client().get_run(run_id).data.params.get("train_rows")
    return int(float(value)) if value else 0


def ceiling_training_rows(spec: ModelSpec, gt: pd.DataFrame, eval_as_of: pd.Timestamp, target_rows: int,
                          store: EventStore) -> pd.DataFrame:
    """Eligible (customer, date) rows on ground-truth dates at least a horizon before ``eval_as_of``,
    newest first until ``target_rows``, with the true probability as ``soft_label``."""
    from training.labels import TRAIN, build_labels

    probability = spec.ground_truth.probability
    horizon = pd.Timedelta(days=spec.labels.horizon_days)
    dates = sorted((t for t in gt["as_of"].unique() if t + horizon <= eval_as_of), reverse=True)
    if not dates:
        raise PropensityError(f"{spec.name}: no ground-truth date a {spec.labels.horizon_days}-day horizon "
                              f"before {eval_as_of:%Y-%m-%d} to train the feature ceiling on")
    cutoffs = pd.DataFrame({"cutoff": pd.Series(dates).astype("datetime64[us, UTC]"), "split": TRAIN})
    rows = build_labels(store, spec.labels, cutoffs)
    rows = rows.merge(gt[["customer_id", "as_of", probability]],
                      left_on=["customer_id", "event_timestamp"], right_on=["customer_id", "as_of"], how="inner")
    rows = rows.sort_values(["event_timestamp", "customer_id"], ascending=[False, True], kind="stable")
    if target_rows and len(rows) > target_rows:
        # Whole dates only: the newest ones whose rows reach the target.
        per_date = rows.groupby("event_timestamp", sort=False).size().cumsum()
        keep = per_date.index[: int(np.searchsorted(per_date.to_numpy(), target_rows)) + 1]
        rows = rows[rows["event_timestamp"].isin(keep)]
    rows = rows.rename(columns={probability: "soft_label"})
    return rows[["customer_id", "event_timestamp", "soft_label"]].reset_index(drop=True)


def feature_ceiling(spec: ModelSpec, model, gt: pd.DataFrame, eval_as_of: pd.Timestamp, eval_features: pd.DataFrame,
                    y_eval: np.ndarray, source, rows_factor: int = ROWS_FACTOR) -> Ceiling:
    """Train the ceiling learner and score the evaluation rows (``eval_features``, labels ``y_eval``)."""
    import lightgbm as lgb

    from training.metrics import auc
    from training.tune import base_params

    store = EventStore(project_paths().events)
    target = rows_factor * _train_rows(model.run_id)
    rows = ceiling_training_rows(spec, gt, eval_as_of, target, store)
    feats = source.historical(rows[["customer_id", "event_timestamp"]], model.feature_service).reset_index(drop=True)
    X = model.matrix(feats)
    dates = np.sort(rows["event_timestamp"].unique())
    n_valid = max(1, int(round(len(dates) * VALID_SHARE))) if len(dates) > 1 else 0
    is_valid = rows["event_timestamp"].isin(dates[len(dates) - n_valid:]).to_numpy() if n_valid else np.zeros(len(rows), bool)
    params = {**base_params(spec.tuning, spec.tuning.seed, model.feature_names), **_tuned_params(model.run_id),
              "objective": "cross_entropy", "metric": "cross_entropy"}
    y = rows["soft_label"].to_numpy(dtype=np.float64)
    # The same start as the model's (boost_from), so the ceiling is the same learner.
    start = model.boost_from
    init = start.offset(X, list(model.feature_names)) if start is not None else None
    train = lgb.Dataset(X[~is_valid], y[~is_valid], free_raw_data=False,
                        init_score=None if init is None else init[~is_valid])
    callbacks, valid_sets = [], []
    if is_valid.any():
        valid_sets = [lgb.Dataset(X[is_valid], y[is_valid], reference=train,
                                  init_score=None if init is None else init[is_valid])]
        callbacks = [lgb.early_stopping(spec.tuning.early_stopping_rounds, verbose=False)]
    # Soft labels carry far more signal per row than 0/1 outcomes, so allow more rounds than tuning did.
    booster = lgb.train(params, train, num_boost_round=4 * spec.tuning.max_boost_rounds, valid_sets=valid_sets,
                        callbacks=callbacks)
    X_eval = model.matrix(eval_features)
    raw_eval = booster.predict(X_eval, raw_score=True)
    if start is not None:
        raw_eval = raw_eval + start.offset(X_eval, list(model.feature_names))
    ceiling_auc = auc(y_eval, raw_eval)
    log.info("%s: feature ceiling trained on %d rows from %d dates (target %d), %d rounds: AUC %.4f", spec.name,
             len(rows), len(dates), target, booster.current_iteration(), ceiling_auc)
    return Ceiling(len(rows), len(dates), target, ceiling_auc)
