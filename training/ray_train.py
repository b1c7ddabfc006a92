"""The final fit on Ray Train (a spec's ``tuning.engine: ray``, or ``propensity train --engine ray``).

The trials stay on Optuna's study (any number of processes or machines share it through
``--storage``); the refit of the best trial, the one fit on all training rows, runs on Ray Train's
LightGBM trainer: data-parallel LightGBM (``tree_learner: data``) over ``tuning.ray.workers`` workers,
each holding its shard of the training rows and the whole validation split (so every worker takes the
same early-stopping decision). Rank 0 reports the trees up to the best validation round as a checkpoint,
and the driver reads the booster back from it; calibration, metrics and registration are the local
ones. One worker gives the local fit's trees exactly (a test checks this); more workers give LightGBM's
distributed trees, whose histograms are merged over the workers.

Where Ray runs: the cluster at ``RAY_ADDRESS`` when it is set, else a Ray started on this machine
(``core.local_ray``: loopback only, no dashboard, usage stats off); the run's files go to a temp folder.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError

log = logging.getLogger("propensity.training")

LABEL, INIT = "_label", "_init_score"
MODEL_FILE = "model.txt"


def _frame(dataset) -> pd.DataFrame:
    """A constructed ``lgb.Dataset`` (raw data kept) as one frame: features, label, start score."""
    X = dataset.get_data()
    if not isinstance(X, pd.DataFrame):
        raise PropensityError("ray fit: the training data must be a DataFrame (its raw data was freed)")
    frame = X.reset_index(drop=True).assign(**{LABEL: np.asarray(dataset.get_label(), dtype=np.float64)})
    init = dataset.get_init_score()
    return frame.assign(**{INIT: np.asarray(init, dtype=np.float64)}) if init is not None else frame


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard of the training rows, all validation rows, one LightGBM fit."""
    import lightgbm as lgb
    import ray.train
    from ray.train.lightgbm import get_network_params

    def dataset(name: str, reference=None):
        frame = ray.train.get_dataset_shard(name).materialize().to_pandas()
        X = frame[config["features"]]
        init = frame[INIT].to_numpy() if INIT in frame.columns else None
        return lgb.Dataset(X, frame[LABEL].to_numpy(), init_score=init, reference=reference,
                           params={"feature_pre_filter": False, "verbosity": -1})

    train = dataset("train")
    valid = dataset("valid", reference=train)
    params = {**config["params"], **get_network_params(), "tree_learner": "data", "pre_partition": True}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding the parameters from Reference Dataset.*")
        booster = lgb.train(params, train, num_boost_round=config["max_rounds"], valid_sets=[valid],
                            valid_names=["valid"],
                            callbacks=[lgb.early_stopping(config["early_stopping"], verbose=False)])
    metrics = {"best_iteration": int(booster.best_iteration)}
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MODEL_FILE).write_text(booster.model_to_string(num_iteration=booster.best_iteration))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def fit_booster_on_ray(params: dict[str, Any], data, max_rounds: int, early_stopping: int, settings) -> Any:
    """``training.tune.fit_booster`` on Ray Train: the same params and ``Datasets``; the booster holds the
    trees up to the best validation round."""
    import lightgbm as lgb
    import ray
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    from core.local_ray import start_ray

    started = start_ray(settings.num_cpus)
    try:
        if int(ray.cluster_resources().get("CPU", 0)) < settings.workers * settings.cpus_per_worker:
            raise PropensityError(f"tuning.ray asks for {settings.workers} workers x {settings.cpus_per_worker} "
                                  f"CPUs; the Ray cluster has {int(ray.cluster_resources().get('CPU', 0))}")
        datasets = {"train": ray.data.from_pandas(_frame(data.train)), "valid": ray.data.from_pandas(_frame(data.valid))}
        with tempfile.TemporaryDirectory(prefix="propensity-ray-train-") as tmp:
            trainer = LightGBMTrainer(
                _train_loop,
                train_loop_config={"params": {**params, "num_threads": settings.cpus_per_worker},
                                   "features": list(data.feature_names), "max_rounds": max_rounds,
                                   "early_stopping": early_stopping},
                scaling_config=ray.train.ScalingConfig(num_workers=settings.workers,
                                                       resources_per_worker={"CPU": settings.cpus_per_worker}),
                run_config=ray.train.RunConfig(name="final-fit", storage_path=tmp),
                datasets=datasets,
                dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
            )
            result = trainer.fit()
            if result.checkpoint is None:
                raise PropensityError("ray fit: Ray Train finished without the model checkpoint")
            with result.checkpoint.as_directory() as folder:
                text = (Path(folder) / MODEL_FILE).read_text()
        log.info("final fit on Ray Train: %d workers x %d CPUs, best round %d", settings.workers,
                 settings.cpus_per_worker, result.metrics.get("best_iteration", -1))
        return lgb.Booster(model_str=text)
    finally:
        if started:
            ray.shutdown()
