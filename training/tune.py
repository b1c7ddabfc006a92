"""Optuna tuning of LightGBM: TPE with a seed, LightGBM pruning callback, early stopping on validation AUC.

The study lives in an Optuna RDB storage: by default a SQLite file under mlruns/, or any RDB URL, so
several ``propensity train`` processes can add trials to one study at once. Each trial is logged to
MLflow as a nested run under the current (parent) run.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError
from core.settings import project_paths
from core.specs import Param, Tuning

log = logging.getLogger("propensity.training")

VALID_NAME = "validation"
# Per task: LightGBM objective, the validation metric early stopping and pruning watch, its direction.
# Amounts: Tweedie (a mass at zero, a long tail of spenders; its log link keeps predictions positive).
TASK_OBJECTIVE = {"binary": ("binary", "auc", "maximize"), "regression": ("tweedie", "tweedie", "minimize")}


def default_storage() -> str:
    path = project_paths().mlruns / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def base_params(tuning: Tuning, seed: int, feature_names: list[str], task: str = "binary") -> dict[str, Any]:
    monotone = {}
    if tuning.monotone:
        monotone = {"monotone_constraints": [tuning.monotone.get(n, 0) for n in feature_names],
                    "monotone_constraints_method": "advanced"}
    return {
        "objective": TASK_OBJECTIVE[task][0],
        "metric": TASK_OBJECTIVE[task][1],
        "verbosity": -1,
        "num_threads": tuning.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,  # skips LightGBM's row/col-wise timing test on every trial
        **monotone,
        **tuning.fixed_params,
    }


def suggest(trial, space: dict[str, Param]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            out[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
    return out


@dataclass
class Datasets:
    """LightGBM datasets built once and shared by every trial (binning 200k rows per trial is waste)."""

    train: Any
    valid: Any
    feature_names: list[str]

    @classmethod
    def build(cls, X_train: pd.DataFrame, y_train: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray,
              init_train: np.ndarray | None = None, init_valid: np.ndarray | None = None):
        """``init_*``: raw scores the trees start from per row (a spec's ``boost_from``), else a constant."""
        import lightgbm as lgb

        # feature_pre_filter=False: otherwise trials that vary min_child_samples fail on a shared dataset.
        train = lgb.Dataset(X_train, y_train, params={"feature_pre_filter": False, "verbosity": -1},
                            free_raw_data=False, init_score=init_train)
        valid = lgb.Dataset(X_valid, y_valid, reference=train, free_raw_data=False, init_score=init_valid)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Overriding the parameters from Reference Dataset.*")
            return cls(train.construct(), valid.construct(), list(X_train.columns))


def fit_booster(params: dict[str, Any], data: Datasets, max_rounds: int, early_stopping: int, callbacks=()):
    import lightgbm as lgb

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding the parameters from Reference Dataset.*")
        warnings.filterwarnings("ignore", message=".*categorical_column in param dict is overridden.*")
        return lgb.train(
            params,
            data.train,
            num_boost_round=max_rounds,
            valid_sets=[data.valid],
            valid_names=[VALID_NAME],
            callbacks=[lgb.early_stopping(early_stopping, verbose=False), *callbacks],
        )


def open_study(name: str, storage: str | None, tuning: Tuning, worker_seed_offset: int = 0, task: str = "binary"):
    """Create or load study ``name``. Extra workers pass a seed offset so they do not repeat the first
    worker's random start-up trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=tuning.seed + worker_seed_offset, n_startup_trials=tuning.startup_trials
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=tuning.pruner_startup_trials, n_warmup_steps=tuning.pruner_warmup_rounds
    )
    url = storage or default_storage()
    try:
        rdb = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=None)
    except Exception as exc:  # bad URL or driver: say which
        raise PropensityError(f"cannot open Optuna storage {url!r}: {exc}") from exc
    return optuna.create_study(
        study_name=name, storage=rdb, sampler=sampler, pruner=pruner, direction=TASK_OBJECTIVE[task][2],
        load_if_exists=True
    )


def _engine_kwargs(url: str) -> dict:
    # Several processes share one SQLite file: wait for the lock instead of failing at once.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def run_trials(
    study,
    data: Datasets,
    tuning: Tuning,
    trials: int,
    timeout: float | None,
    log_to_mlflow: bool = True,
    progress: bool = True,
    task: str = "binary",
) -> None:
    """Add up to ``trials`` trials (or until ``timeout`` seconds) to ``study``."""
    import optuna
    from optuna_integration.lightgbm import LightGBMPruningCallback

    if trials <= 0:
        return
    seed = tuning.seed
    metric = TASK_OBJECTIVE[task][1]

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params(tuning, seed, data.feature_names, task), **suggest(trial, tuning.search_space)}
        state, value, best_iteration = "complete", None, None
        try:
            booster = fit_booster(
                params, data, tuning.max_boost_rounds, tuning.early_stopping_rounds,
                callbacks=[LightGBMPruningCallback(
                    trial, metric, VALID_NAME, report_interval=tuning.report_every_rounds
                )],
            )
            value = float(booster.best_score[VALID_NAME][metric])
            best_iteration = int(booster.best_iteration or booster.current_iteration())
            trial.set_user_attr("best_iteration", best_iteration)
            return value
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            if log_to_mlflow:
                _log_trial(trial, params, state, value, best_iteration, metric)

    with _progress(progress, trials, study, metric) as callback:
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[callback], gc_after_trial=False)


def _log_trial(trial, params: dict, state: str, value: float | None, best_iteration: int | None,
               metric: str = "auc") -> None:
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        return
    # Without experiment_id a nested run lands in the Default experiment, away from its parent.
    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                          experiment_id=parent.info.experiment_id, parent_run_id=parent.info.run_id):
        mlflow.log_params({k: v for k, v in params.items() if k in trial.params})
        mlflow.set_tags({"optuna_trial": str(trial.number), "optuna_study": trial.study.study_name,
                         "state": state, "worker_pid": str(os.getpid())})
        if value is not None:
            mlflow.log_metric(f"validation_{metric}", value)
        if best_iteration is not None:
            mlflow.log_metric("best_iteration", best_iteration)


class _progress:
    """A rich progress bar over the trials this process runs, showing the study's best score so far."""

    def __init__(self, enabled: bool, total: int, study, metric: str = "auc") -> None:
        self.enabled, self.total, self.study, self.metric = enabled, total, study, metric
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]tuning[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(f"best {self.metric} -", total=self.total)
        return self._callback

    def _callback(self, study, trial) -> None:
        try:
            best = f"best {self.metric} {study.best_value:.4f}"
        except ValueError:
            best = f"best {self.metric} -"
        pruned = sum(t.state.name == "PRUNED" for t in study.get_trials(deepcopy=False))
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"{best} ({pruned} pruned in study)")
        else:
            log.debug("trial %d %s; %s", trial.number, trial.state.name, best)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def best_trial(study):
    """The best finished trial of the study, or a PropensityError if none finished."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        raise PropensityError(
            f"Optuna study {study.study_name!r} has no finished trials: run with --trials > 0 "
            "(or a longer --timeout)"
        )
    return study.best_trial
