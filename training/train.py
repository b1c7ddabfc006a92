"""The training stage end to end: labels -> training set -> Optuna -> final model -> calibration ->
metrics and plots in MLflow -> registered as ``challenger``.

``train_model(cfg, ...)`` is what the CLI and the end-to-end pipeline call.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import NotEnoughDataError
from core.events import EventStore
from core.settings import project_paths
from core.specs import ModelSpec
from training.dataset import FeatureSource, TrainingSet, assemble_training_set
from training.labels import TEST, TRAIN, VALIDATION, check_min_data, label_rows

log = logging.getLogger("propensity.training")



@dataclass
class TrainResult:
    model: str
    run_id: str
    study_name: str
    storage: str
    trials_in_study: int
    version: str | None = None  # None for a tune-only worker
    best_params: dict = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    validation_metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    seconds: float = 0.0
    # The fitted model itself, so a caller that did not register it (``register=False``) can still score.
    booster: object | None = field(default=None, repr=False)
    calibration: object | None = field(default=None, repr=False)
    boost_from: object | None = field(default=None, repr=False)  # training.champion.BoostFrom
    never_fill: dict[str, float] = field(default_factory=dict)  # what "never" is read as (TAG_NEVER)


def build_training_set(cfg: ModelSpec, source: FeatureSource | None = None) -> TrainingSet:
    """Labels from the event store, the minimum-data guard, then point-in-time features."""
    store = EventStore(project_paths().events)
    missing = cfg.missing_families(f for f, status in store.families().items() if status != "absent")
    if missing:
        raise NotEnoughDataError(
            f"{cfg.name}: needs {', '.join(missing)}, which the event store {store.root} does not hold "
            f"({cfg.config_file}: labels.kind {cfg.labels.kind!r}, needs {cfg.needs})"
        )
    plan, rows = label_rows(store, cfg.labels, cfg.cutoffs, cfg.split, cfg.config_file)
    check_min_data(rows, cfg.min_data, cfg.name, plan, cfg.config_file)
    return assemble_training_set(rows, cfg.feature_service, source, plan)


def train_model(
    cfg: ModelSpec,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    tune_only: bool = False,
    source: FeatureSource | None = None,
    training_set: TrainingSet | None = None,
    progress: bool = True,
    register: bool = True,
) -> TrainResult:
    """Tune, fit, calibrate, evaluate, log and register one model. ``tune_only`` adds trials to the
    study and stops (an extra worker); the process without it fits the final model from the best trial.
    ``register=False`` keeps the MLflow run (metrics, plots, lineage) but registers no version and moves
    no alias: a backtest's model must never become a challenger. The booster and calibration come back
    on the result instead."""
    import mlflow

    from training.tracking import ensure_experiment
    from training.tune import Datasets, best_trial, default_storage, open_study, run_trials

    started = time.perf_counter()
    ts = training_set or build_training_set(cfg, source)
    lineage = ts.lineage()
    storage = storage or default_storage()
    study_name = study_name or f"{cfg.name}-{lineage['training_set_sha256'][:12]}"
    n_trials = cfg.tuning.trials if trials is None else trials
    timeout = cfg.tuning.timeout_seconds if timeout is None else timeout

    unknown = sorted(set(cfg.tuning.monotone) - set(ts.feature_names))
    if unknown:
        log.warning("%s: monotone constraint(s) on %s ignored: not inputs of %s", cfg.name, ", ".join(unknown),
                    cfg.feature_service)
    never = [name for name in cfg.tuning.never_as_oldest if name in ts.feature_names]
    if len(never) < len(cfg.tuning.never_as_oldest):
        log.warning("%s: never_as_oldest on %s ignored: not inputs of %s", cfg.name,
                    ", ".join(sorted(set(cfg.tuning.never_as_oldest) - set(never))), cfg.feature_service)
    if never:  # after the lineage: the training set's hash is of the data, not of the model's reading of it
        ts = ts.with_never_fill(never)
    experiment_id = ensure_experiment(cfg.name)
    role = "tune-worker" if tune_only else "train" if register else "train-unregistered"
    run_name = f"{role}-{cfg.name}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as parent:
        mlflow.set_tags({"role": role, "optuna_study": study_name, "registered": str(register and not tune_only).lower(),
                         "optuna_storage": _redact(storage), "feature_service": cfg.feature_service})
        mlflow.log_params(_lineage_params(lineage))
        start = boost_from(cfg, ts)
        init = (None, None) if start is None else (start_scores(start, ts.X(TRAIN)), start_scores(start, ts.X(VALIDATION)))
        data = Datasets.build(ts.X(TRAIN), ts.y(TRAIN), ts.X(VALIDATION), ts.y(VALIDATION), *init)
        # An extra worker gets another sampler seed, or it would repeat the first worker's random trials.
        study = open_study(study_name, storage, cfg.tuning, worker_seed_offset=os.getpid() if tune_only else 0,
                           task=cfg.task)
        log.info("%s: tuning study %r (%d trials here; %d already in it)", cfg.name, study_name, n_trials,
                 len(study.trials))
        run_trials(study, data, cfg.tuning, n_trials, timeout, progress=progress, task=cfg.task)
        result = TrainResult(cfg.name, parent.info.run_id, study_name, _redact(storage), len(study.trials),
                             lineage=lineage)
        if tune_only:
            result.seconds = time.perf_counter() - started
            return result

        best = best_trial(study)
        result.best_params = dict(best.params)
        booster, calibration, val_metrics, test_metrics = fit_final(cfg, ts, data, best, start)
        result.validation_metrics, result.test_metrics = val_metrics, test_metrics
        headline = cfg.promotion.metric
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metrics({f"validation_{k}": v for k, v in val_metrics.items()})
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        mlflow.log_metric("best_iteration", booster.current_iteration())
        if calibration is not None:
            mlflow.set_tag("calibration_method", calibration.method)
        mlflow.log_metric("trials_in_study", len(study.trials))
        if start is not None:
            from training.champion import TAG_BOOST_FROM

            mlflow.set_tag(TAG_BOOST_FROM, start.to_json())
        _log_artifacts(cfg, ts, booster, calibration, lineage, start)
        result.booster, result.calibration, result.boost_from = booster, calibration, start
        result.never_fill = ts.never_fill
        if not register:
            result.seconds = time.perf_counter() - started
            log.info("%s: trained without registering (test %s %.4f, %d trials in study, %.0f s, run %s)",
                     cfg.name, headline, test_metrics[headline], result.trials_in_study, result.seconds, result.run_id)
            return result

        from training.champion import TAG_HOLDOUT_METRIC, TAG_HOLDOUT_SCORE, TAG_TASK, register_booster

        result.version = register_booster(
            booster,
            cfg.name,
            feature_service=cfg.feature_service,
            calibration=calibration,
            holdout_auc=test_metrics.get("roc_auc"),
            input_example=ts.X(TEST).head(5),
            extra_tags={
                "holdout_cutoff": lineage["test_cutoffs"][0],
                "training_set_sha256": lineage["training_set_sha256"],
                "optuna_study": study_name,
                TAG_TASK: cfg.task,
                TAG_HOLDOUT_METRIC: headline,
                TAG_HOLDOUT_SCORE: f"{test_metrics[headline]:.6f}",
                **scoring_tags(cfg, ts, booster, calibration, start),
            },
        )
    result.seconds = time.perf_counter() - started
    log.info("%s: registered version %s as challenger (test %s %.4f, %d trials in study, %.0f s)",
             cfg.name, result.version, headline, test_metrics[headline], result.trials_in_study, result.seconds)
    return result


def boost_from(cfg: ModelSpec, ts: TrainingSet):
    """The spec's ``boost_from`` fitted on the train split (its fill), or None."""
    from core.errors import ConfigError
    from training.champion import BoostFrom

    if cfg.boost_from is None:
        return None
    if cfg.boost_from not in ts.feature_names:
        raise ConfigError(f"{cfg.config_file}: boost_from {cfg.boost_from!r} is not an input of feature service "
                          f"{cfg.feature_service!r} ({', '.join(ts.feature_names)})")
    values = ts.X(TRAIN)[cfg.boost_from].to_numpy(dtype=np.float64)
    known = values[~np.isnan(values)]
    if cfg.task == "binary" and len(known) and (known.min() < 0 or known.max() > 1):
        raise ConfigError(f"{cfg.config_file}: boost_from {cfg.boost_from!r} is not a probability (values "
                          f"{known.min():g}..{known.max():g} in the train split)")
    if cfg.task == "regression":
        if len(known) and known.min() < 0:
            raise ConfigError(f"{cfg.config_file}: boost_from {cfg.boost_from!r} is not an amount (values down to "
                              f"{known.min():g} in the train split)")
        return BoostFrom.fit(cfg.boost_from, values, link="log", y=ts.y(TRAIN))
    return BoostFrom.fit(cfg.boost_from, values)


def start_scores(start, X) -> np.ndarray:
    """The raw scores the trees start from on the rows of ``X`` (a frame of the model's inputs)."""
    return start.offset(X.to_numpy(dtype=np.float64), list(X.columns))


def input_tags(start, never_fill: dict[str, float]) -> dict[str, str]:
    """How a version reads its inputs, as tags: where its trees start (``boost_from``) and what a missing
    "never" value is read as (``tuning.never_as_oldest``). Registered and backtest models alike."""
    from training.champion import TAG_BOOST_FROM, TAG_NEVER

    tags = {}
    if start is not None:
        tags[TAG_BOOST_FROM] = start.to_json()
    if never_fill:
        tags[TAG_NEVER] = json.dumps(never_fill, separators=(",", ":"))
    return tags


def scoring_tags(cfg: ModelSpec, ts: TrainingSet, booster, calibration, start=None) -> dict[str, str]:
    """What scoring needs to know about the training population, stored with the version: the band cuts
    (resolved on the test split's scores when the spec gives shares of the distribution), each
    feature's range over the training rows (how far a scored customer lies outside what was learnt) and
    the cause scale the reasons rank by (``training.cause_context``)."""
    from core.specs import BandThresholds
    from training.champion import TAG_BANDS, TAG_FEATURE_RANGES

    if isinstance(cfg.bands, BandThresholds):
        bands = cfg.bands
    else:
        bands = cfg.bands.thresholds(predictions(cfg, booster, calibration, ts.X(TEST), start))
    X = ts.X(TRAIN)
    ranges = {c: [float(X[c].min()), float(X[c].max())] for c in X.columns if X[c].notna().any()}
    from training.cause_context import TAG_CAUSE_SCALE, training_scale

    tags = {TAG_BANDS: json.dumps({"high": bands.high, "medium": bands.medium}),
            TAG_FEATURE_RANGES: json.dumps(ranges, separators=(",", ":"))}
    tags.update(input_tags(start, ts.never_fill))
    scale = training_scale(cfg, ts, booster, calibration, tags=tags)
    if scale is not None:
        tags[TAG_CAUSE_SCALE] = scale
    return tags


def predictions(cfg: ModelSpec, booster, calibration, X, start=None) -> np.ndarray:
    """What the model says for ``X``: a calibrated probability (binary) or an amount (regression)."""
    if cfg.task == "binary":
        return calibration.apply(raw_scores(booster, X, start))
    return np.exp(raw_scores(booster, X, start))  # the log link (Tweedie)


def raw_scores(booster, X, start=None) -> np.ndarray:
    """The model's raw score on ``X`` (log-odds, or log amount): the trees, plus where they start from
    (``boost_from``)."""
    raw = booster.predict(X.to_numpy(), raw_score=True)
    return raw if start is None else raw + start_scores(start, X)


def fit_final(cfg: ModelSpec, ts: TrainingSet, data, best, start=None):
    """Refit the best trial on the train split, calibrate on validation (binary models: the spec's
    ``calibration``), score the test split."""
    from training.metrics import fit_calibration, task_metrics
    from training.tune import base_params, fit_booster

    params = {**base_params(cfg.tuning, cfg.tuning.seed, ts.feature_names, cfg.task), **best.params}
    if cfg.tuning.engine == "ray":
        from training.ray_train import fit_booster_on_ray

        booster = fit_booster_on_ray(params, data, cfg.tuning.max_boost_rounds, cfg.tuning.early_stopping_rounds,
                                     cfg.tuning.ray)
    else:
        booster = fit_booster(params, data, cfg.tuning.max_boost_rounds, cfg.tuning.early_stopping_rounds)
    # Keep only the trees up to the best validation round.
    booster = booster.model_from_string(booster.model_to_string(num_iteration=booster.best_iteration))
    calibration = None
    if cfg.task == "binary":
        calibration = fit_calibration(raw_scores(booster, ts.X(VALIDATION), start), ts.y(VALIDATION),
                                      cfg.calibration.method, cfg.calibration.isotonic_min_rows)
        if calibration.method != cfg.calibration.method:
            log.info("%s: %d validation rows, fewer than calibration.isotonic_min_rows %d: Platt calibration "
                     "instead of isotonic (%s)", cfg.name, len(ts.y(VALIDATION)), cfg.calibration.isotonic_min_rows,
                     cfg.config_file)
    val = task_metrics(cfg.task, ts.y(VALIDATION), predictions(cfg, booster, calibration, ts.X(VALIDATION), start))
    test = task_metrics(cfg.task, ts.y(TEST), predictions(cfg, booster, calibration, ts.X(TEST), start))
    return booster, calibration, val, test


def _log_artifacts(cfg: ModelSpec, ts: TrainingSet, booster, calibration, lineage: dict, start=None) -> None:
    import mlflow

    from training import plots

    X_test, y_test = ts.X(TEST), ts.y(TEST)
    pred = predictions(cfg, booster, calibration, X_test, start)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        title = f"{cfg.name} (test cutoff {lineage['test_cutoffs'][0]})"
        if cfg.task == "binary":
            plots.calibration_curve_plot(y_test, pred, out / "calibration_curve.png", title)
            plots.cumulative_gain_plot(y_test, pred, out / "cumulative_gain.png", title)
        plots.feature_importance_plot(booster, out / "feature_importance.png", title)
        sample = X_test.sample(min(len(X_test), cfg.shap_sample_rows), random_state=0)
        plots.shap_summary_plot(booster, sample, out / "shap_summary.png", title)
        mlflow.log_artifacts(str(out), "plots")
        mlflow.log_dict(lineage, "lineage.json")
        # The holdout the promotion gate re-scores: features and labels, never customer ids.
        holdout = ts.part(TEST)[["event_timestamp", "label", *ts.feature_names]].reset_index(drop=True)
        holdout_path = out / "holdout.parquet"
        holdout.to_parquet(holdout_path, index=False)
        mlflow.log_artifact(str(holdout_path), "holdout")


def _lineage_params(lineage: dict) -> dict[str, str]:
    out = {}
    for key, value in lineage.items():
        if isinstance(value, list):
            value = json.dumps(value) if len(value) <= 3 else f"{value[0]}..{value[-1]} ({len(value)})"
        out[key] = str(value)
    return out


def _redact(url: str) -> str:
    """A storage URL without its password, for tags and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
