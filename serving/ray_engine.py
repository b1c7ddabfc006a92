"""Batch scoring on Ray (actions.yaml ``scoring.engine: ray``, or ``propensity score --engine ray``).

The same maths as the local engine, run as Ray Data batches: ``serving.batch.predict_columns`` (every
model's number, band, version) and ``serving.batch.explain_rows`` (TreeSHAP + reasons) are called by a
Ray actor per worker, which loads the models once from the MLflow registry (the versions the driver
resolved ``@champion`` to, so an alias moved mid-run cannot mix versions). Row by row the results are
those of the local engine: every step is per row.

What stays on the driver: the active customers and the feature retrieval (one DuckDB query over the
snapshot), and the layers + actions between the two Ray passes: quantile layers and queue capacities
rank the whole population, so they cannot be decided batch by batch (they are vectorised and cheap).

Where Ray runs: the cluster at ``RAY_ADDRESS`` when it is set (`ray start --head`, KubeRay; docs/scale.md),
else a Ray started for the run on this machine with ``scoring.ray.num_cpus`` CPUs, bound to loopback,
without dashboard and with usage stats off. Workers read the project through the same environment as
the driver (PROPENSITY_HOME, PROPENSITY_CONFIGS, MLFLOW_TRACKING_URI): on a cluster these must name
storage every node can read (see docs/scale.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError
from serving.actions import RaySettings

log = logging.getLogger("propensity.score")

# What a worker needs from the driver's environment to find the project and the registry.
WORKER_ENV = ("PROPENSITY_HOME", "PROPENSITY_CONFIGS", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY",
              "DO_NOT_TRACK", "FEAST_USAGE", "GIT_PYTHON_REFRESH")
ROW, EXPLAIN = "_row", "_explain"


def start_ray(settings: RaySettings) -> bool:
    """Connect to RAY_ADDRESS or start a local Ray (``core.local_ray``); True when this call started it
    (the caller stops it). An already initialised Ray (a bench, a notebook) is used as it is."""
    from core.local_ray import start_ray as start

    return start(settings.num_cpus, WORKER_ENV)


class RayEngine:
    """The runner ``serving.batch`` hands the per-chunk work to (``predict``, ``explain``); a context
    manager that starts Ray (unless one is running) and stops what it started."""

    def __init__(self, settings: RaySettings, models: dict[str, Any], top_k: int, lang: str, times) -> None:
        self.settings = settings
        self.versions = {name: str(model.version) for name, model in models.items()}
        self.services = {name: model.feature_service for name, model in models.items()}
        self.feature_names = {name: list(model.feature_names) for name, model in models.items()}
        self.top_k, self.lang, self.times = top_k, lang, times
        self.started = False
        self.workers = 1

    def __enter__(self) -> RayEngine:
        import ray
        from ray.data import DataContext

        with self.times.stage("ray: start", 0):
            self.started = start_ray(self.settings)
            cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < self.settings.cpus_per_worker:
            raise PropensityError(f"actions.yaml scoring.ray.cpus_per_worker is {self.settings.cpus_per_worker} "
                                  f"but the Ray cluster has {cpus} CPUs")
        self.workers = self.settings.workers or max(1, cpus // self.settings.cpus_per_worker)
        self.times.note("ray", f"{self.workers} workers x {self.settings.cpus_per_worker} CPUs "
                        f"({cpus} CPUs in the cluster), batches of {self.settings.batch_rows:,}")
        DataContext.get_current().enable_progress_bars = False  # the stage lines say the same, once
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()

    # ---- the two passes ---------------------------------------------------------------------------
    def predict(self, features: dict[str, pd.DataFrame], bands: dict[str, Any]) -> dict[str, np.ndarray]:
        """``predict_columns`` over every row, in batches; only the model inputs travel."""
        inputs: dict[str, list[str]] = {}
        for name, service in self.services.items():
            inputs.setdefault(service, [])
            inputs[service] += [c for c in self.feature_names[name] if c not in inputs[service]]
        first = {service: name for name, service in reversed(self.services.items())}
        n = len(next(iter(features.values())))
        shipped = self._frame(n, {s: features[first[s]][cols] for s, cols in inputs.items()})
        out = self._run(shipped, {"stage": "predict", "bands": bands})
        return {c: out[c].to_numpy() for c in out.columns if c != ROW}

    def explain(self, features: dict[str, pd.DataFrame], rows: np.ndarray, explain_with: np.ndarray,
                times) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``explain_rows`` for ``rows``, in batches; every column of each feature service travels (a
        reason's sentence may cite any of them)."""
        from training.reasons import load_templates

        with times.stage("reasons: SHAP + text (ray)", len(rows)):
            if len(rows) == 0:
                return np.empty(0, dtype=object), np.empty(0, dtype=object), np.empty(0, dtype=object)
            by_service = {s: features[name].iloc[rows] for name, s in reversed(self.services.items())}
            shipped = self._frame(len(rows), by_service).assign(**{EXPLAIN: explain_with})
            out = self._run(shipped, {"stage": "explain", "templates": load_templates()})
        return (out["reasons"].to_numpy(dtype=object), out["reasons_json"].to_numpy(dtype=object),
                out["top_cause"].to_numpy(dtype=object))

    @staticmethod
    def _frame(n: int, by_service: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """One frame for Ray: the row number, then each service's columns as ``<service>/<column>``
        (dtypes kept: pandas blocks travel as they are)."""
        parts = [pd.DataFrame({ROW: np.arange(n)})]
        parts += [frame.reset_index(drop=True).add_prefix(f"{service}/") for service, frame in by_service.items()]
        return pd.concat(parts, axis=1)

    def _run(self, shipped: pd.DataFrame, kwargs: dict[str, Any]) -> pd.DataFrame:
        """Map ``shipped`` through a pool of ``_Worker`` actors, one block per batch; back in row order."""
        import ray

        size = self.settings.batch_rows
        # One block per batch: a single block would go to a single actor.
        blocks = [shipped.iloc[i:i + size] for i in range(0, len(shipped), size)]
        ds = ray.data.from_pandas(blocks).map_batches(
            _Worker, batch_size=None, batch_format="pandas", zero_copy_batch=True,
            fn_constructor_kwargs={"versions": self.versions, "services": self.services, "top_k": self.top_k,
                                   "lang": self.lang, **kwargs},
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(blocks))),
            num_cpus=self.settings.cpus_per_worker,
        )
        out = ds.to_pandas().sort_values(ROW, kind="stable").reset_index(drop=True)
        if len(out) != len(shipped) or not (out[ROW].to_numpy() == np.arange(len(shipped))).all():
            raise PropensityError(f"ray: {len(out)} rows came back for {len(shipped)} sent, or some twice")
        return out


class _Worker:
    """One Ray actor: the models loaded once, then one batch per call through the local engine's code."""

    def __init__(self, versions: dict[str, str], services: dict[str, str], top_k: int, lang: str, stage: str,
                 bands: dict[str, Any] | None = None, templates: Any = None) -> None:
        from training.champion import load_model_version

        self.services, self.top_k, self.lang, self.stage = services, top_k, lang, stage
        self.bands, self.templates = bands, templates
        self.models = {n: load_model_version(n, version=v) for n, v in versions.items()}

    def _features(self, batch: pd.DataFrame) -> dict[str, pd.DataFrame]:
        out = {}
        for name, service in self.services.items():
            prefix = f"{service}/"
            cols = [c for c in batch.columns if c.startswith(prefix)]
            out[name] = batch[cols].rename(columns=lambda c, k=len(prefix): c[k:]).reset_index(drop=True)
        return out

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from serving.batch import StageTimes, explain_rows, predict_columns

        rows = batch[ROW].to_numpy()
        features = self._features(batch)
        if self.stage == "predict":
            return pd.DataFrame({ROW: rows, **predict_columns(self.models, features, self.bands)})
        reasons, as_json, causes = explain_rows(self.models, features, np.arange(len(batch)),
                                                batch[EXPLAIN].to_numpy(), self.top_k, self.lang, StageTimes(),
                                                self.templates, progress=False)
        return pd.DataFrame({ROW: rows, "reasons": reasons, "reasons_json": as_json, "top_cause": causes})
