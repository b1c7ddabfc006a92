"""Batch scoring on Ray (actions.yaml ``scoring.engine: ray``, or ``propensity score --engine ray``).

The same maths as the local engine, run in batches on a pool of Ray actors, in three kinds of pass:

- **predict**: ``serving.batch.predict_columns`` (every model's number, band, version) for every customer;
- **rank**: a model's TreeSHAP contributions and ranking past (``serving.causes.CauseRanks``) for the rows
  whose causes are asked for: by a rule that tests a top cause during the layers + actions, then by the
  reasons for the flagged rows not ranked yet. The driver's ``CauseRanks`` sends its missing rows here
  (``rank``) and keeps what comes back, so the driver runs no TreeSHAP and no row is explained twice;
- **text**: the reason text, JSON and top cause (``training.reasons.explain_table``) from the rows'
  contributions and past, one pass per model.

The actors live for the whole run and hold the driver's loaded models (the versions it resolved
``@champion`` to, put once into Ray's object store, so an alias moved mid-run cannot mix versions). One
pool for every pass, not one per pass as a Ray Data ``map_batches`` would start: a run has five passes,
and a fresh actor pays a process start, the imports and the models' load each time (docs/scale.md).
Row by row the results are those of the local engine: every step is per row.

What stays on the driver: the active customers and the feature retrieval (one DuckDB query over the
snapshot), and the layers + actions between the passes: quantile layers and queue capacities rank the
whole population, so they cannot be decided batch by batch (they are vectorised and cheap).

Where Ray runs: the cluster at ``RAY_ADDRESS`` when it is set (`ray start --head`, KubeRay; docs/scale.md),
else a Ray started for the run on this machine with ``scoring.ray.num_cpus`` CPUs, bound to loopback,
without dashboard and with usage stats off. Workers read the project through the same environment as
the driver (PROPENSITY_HOME, PROPENSITY_CONFIGS): a ranking that reads the customers' past reads it from
the offline store there, so on a cluster these must name storage every node can read (see docs/scale.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError
from serving.actions import RaySettings
from training.reasons import History

log = logging.getLogger("propensity.score")

SHAP_ROWS = "_shap_rows"  # per batch, on its first row: the distinct rows TreeSHAP ran on
CONTRIB, PAST = "_c/", "_h/"  # column prefixes of a ranking in a Ray frame


def start_ray(settings: RaySettings) -> bool:
    """Connect to RAY_ADDRESS or start a local Ray (``core.local_ray``); True when this call started it
    (the caller stops it). An already initialised Ray (a bench, a notebook) is used as it is."""
    from core.local_ray import start_ray as start

    return start(settings.num_cpus)


# ---- a ranking as columns: what the rank pass sends back and the text pass is sent -----------------------
def pack_ranking(contributions: np.ndarray, history: History | None) -> dict[str, np.ndarray]:
    """Row-aligned columns for a model's contributions and its past (``unpack_ranking`` reads them back
    exactly): ``_c/<j>`` per contribution, ``_h/<what>/<date ns>[/<cause>]`` per past date."""
    columns = {f"{CONTRIB}{j}": contributions[:, j] for j in range(contributions.shape[1])}
    if history is None:
        return columns
    for d, date in enumerate(history.dates):
        stamp = pd.Timestamp(date).value
        columns[f"{PAST}raw/{stamp}"] = history.raw[d]
        columns[f"{PAST}probability/{stamp}"] = history.probabilities[d]
        columns[f"{PAST}present/{stamp}"] = history.present[d]
        for c, cause in enumerate(history.causes):
            columns[f"{PAST}sum/{stamp}/{cause}"] = history.cause_sums[d, :, c]
            if history.events is not None and d > 0:  # events[t - 1]: the step into date t
                columns[f"{PAST}event/{stamp}/{cause}"] = history.events[d - 1, :, c]
    return columns


def unpack_ranking(frame: pd.DataFrame) -> tuple[np.ndarray, History | None]:
    """The contributions and the past in ``frame``'s ``pack_ranking`` columns, rows in frame order."""
    width = sum(c.startswith(CONTRIB) for c in frame.columns)
    contributions = frame[[f"{CONTRIB}{j}" for j in range(width)]].to_numpy(dtype=np.float64)
    stamps = [int(c.rsplit("/", 1)[1]) for c in frame.columns if c.startswith(f"{PAST}raw/")]
    if not stamps:
        return contributions, None
    first = f"{PAST}sum/{stamps[0]}/"
    causes = tuple(c[len(first):] for c in frame.columns if c.startswith(first))

    def stack(what: str, dtype) -> np.ndarray:
        return np.stack([frame[f"{PAST}{what}/{s}"].to_numpy(dtype=dtype) for s in stamps])

    def per_cause(what: str, at: list[int], dtype) -> np.ndarray:  # dates x rows x causes
        return np.stack([np.stack([frame[f"{PAST}{what}/{s}/{c}"].to_numpy(dtype=dtype) for c in causes], axis=1)
                         for s in at]) if at else np.empty((0, len(frame), len(causes)), dtype=dtype)

    has_events = f"{PAST}event/{stamps[-1]}/{causes[0]}" in frame.columns if causes and len(stamps) > 1 else False
    history = History(
        [pd.Timestamp(s, tz="UTC") for s in stamps], stack("raw", np.float64), stack("probability", np.float64),
        per_cause("sum", stamps, np.float64), stack("present", bool), causes,
        per_cause("event", stamps[1:], bool) if has_events else None,
    )
    return contributions, history


class RayEngine:
    """The runner ``serving.batch`` hands the per-row work to (``predict``, ``rank``, ``explain``); a
    context manager that starts Ray (unless one is running) and stops what it started."""

    def __init__(self, settings: RaySettings, models: dict[str, Any], top_k: int, lang: str, times) -> None:
        self.settings = settings
        self.models = models
        self.services = {name: model.feature_service for name, model in models.items()}
        self.top_k, self.lang, self.times = top_k, lang, times
        self.started = False
        self.workers = 1
        self._actors: list[Any] = []

    def __enter__(self) -> RayEngine:
        import ray

        with self.times.stage("ray: start", 0):
            self.started = start_ray(self.settings)
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if cpus < self.settings.cpus_per_worker:
                raise PropensityError(f"actions.yaml scoring.ray.cpus_per_worker is "
                                      f"{self.settings.cpus_per_worker} but the Ray cluster has {cpus} CPUs")
            self.workers = self.settings.workers or max(1, cpus // self.settings.cpus_per_worker)
            # One pool of actors for the whole run, each holding the driver's models (put once into the
            # object store): a pass costs no process start, no import and no model load.
            actor = ray.remote(num_cpus=self.settings.cpus_per_worker)(_Worker)
            models = ray.put(self.models)
            self._actors = [actor.remote(models, self.services) for _ in range(self.workers)]
            ray.get([a.ready.remote() for a in self._actors])  # started and imported: part of the start-up
        self.times.note("ray", f"{self.workers} workers x {self.settings.cpus_per_worker} CPUs "
                        f"({cpus} CPUs in the cluster), batches of {self.settings.batch_rows:,}")
        return self

    def __exit__(self, *exc) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self.started:
            ray.shutdown()

    # ---- the passes -------------------------------------------------------------------------------
    def predict(self, features: dict[str, pd.DataFrame], bands: dict[str, Any]) -> dict[str, np.ndarray]:
        """``predict_columns`` over every row, in batches; only the model inputs travel."""
        inputs: dict[str, list[str]] = {}
        for name, service in self.services.items():
            inputs.setdefault(service, [])
            inputs[service] += [c for c in self.models[name].feature_names if c not in inputs[service]]
        first = {service: name for name, service in reversed(self.services.items())}
        out = self._run({s: features[first[s]][cols] for s, cols in inputs.items()}, "predict", {"bands": bands})
        return {c: out[c].to_numpy() for c in out.columns}

    def rank(self, name: str, frame: pd.DataFrame) -> tuple[np.ndarray, History | None, int]:
        """Model ``name``'s contributions and ranking past for the rows of ``frame`` (its service's
        features with ``customer_id`` and ``event_timestamp``), and how many distinct rows TreeSHAP ran on
        (the workers skip repeated rows within each batch)."""
        with self.times.stage(f"causes: TreeSHAP (ray, {name})", len(frame)):
            out = self._run({"features": frame}, "rank", {"model": name})
            contributions, history = unpack_ranking(out)
        return contributions, history, int(out[SHAP_ROWS].sum())

    def explain(self, features: dict[str, pd.DataFrame], rows: np.ndarray, explain_with: np.ndarray,
                ranks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reasons, JSON and top cause for ``rows``, each from the model in ``explain_with``: the rows'
        rankings from ``ranks`` (its missing rows go through ``rank``), then a text pass per model, where
        every column of the model's service travels (a reason's sentence may cite any of them)."""
        from training.reasons import load_templates

        reasons = np.full(len(rows), "", dtype=object)
        reasons_json = np.full(len(rows), "[]", dtype=object)
        causes = np.full(len(rows), "", dtype=object)
        templates = load_templates()
        for name, model in self.models.items():
            mine = np.flatnonzero(explain_with == name)
            if mine.size == 0:
                continue
            contributions = ranks.contributions(name, rows[mine])
            context = ranks.context(name, rows[mine])
            with self.times.stage(f"reasons: text + JSON (ray, {name})", mine.size):
                out = self._run({"features": features[name].iloc[rows[mine]],
                                 "ranking": pd.DataFrame(pack_ranking(contributions, context.history))}, "text", {
                    "model": name, "feature_names": list(model.feature_names), "top_k": self.top_k,
                    "lang": self.lang, "templates": templates, "scale": context.scale,
                })
            reasons[mine] = out["reasons"].to_numpy(dtype=object)
            reasons_json[mine] = out["reasons_json"].to_numpy(dtype=object)
            causes[mine] = out["top_cause"].to_numpy(dtype=object)
        for name, (distinct, asked) in ranks.distinct.items():
            self.times.note(f"{name}: distinct rows", f"{distinct:,} of {asked:,} (distinct within each batch)")
        return reasons, reasons_json, causes

    def _run(self, parts: dict[str, pd.DataFrame], stage: str, kwargs: dict[str, Any]) -> pd.DataFrame:
        """The row-aligned frames ``parts`` through the workers' ``stage``, in batches of about equal size
        (at most ``batch_rows``, at least one per worker); the results in row order."""
        import ray
        from ray.util import ActorPool

        n = len(next(iter(parts.values())))
        count = min(n, max(-(-n // self.settings.batch_rows), len(self._actors)))
        bounds = np.linspace(0, n, count + 1).astype(np.int64)
        shared = ray.put(kwargs)  # once per pass, not once per batch

        def submit(actor, b: int):
            batch = {key: frame.iloc[bounds[b]:bounds[b + 1]].reset_index(drop=True) for key, frame in parts.items()}
            return actor.run.remote(stage, batch, shared)

        results = list(ActorPool(self._actors).map(submit, range(count)))  # in submission order
        sizes = [len(r) for r in results]
        if sizes != list(np.diff(bounds)):
            raise PropensityError(f"ray: {stage} batches came back with {sizes} rows for {list(np.diff(bounds))} sent")
        return pd.concat(results, ignore_index=True) if results else pd.DataFrame()


class _Worker:
    """One Ray actor for the whole run: the driver's models, then one batch per call through the local
    engine's code (a batch: row-aligned frames by name)."""

    def __init__(self, models: dict[str, Any], services: dict[str, str]) -> None:
        # What every pass imports, now: the actor is started before the first pass and ready for it.
        import serving.batch  # noqa: F401
        import serving.causes  # noqa: F401

        self.models, self.services = models, services

    def ready(self) -> bool:
        return True

    def run(self, stage: str, batch: dict[str, pd.DataFrame], kwargs: dict[str, Any]) -> pd.DataFrame:
        return getattr(self, stage)(batch, **kwargs)

    def predict(self, batch: dict[str, pd.DataFrame], bands: dict[str, Any]) -> pd.DataFrame:
        from serving.batch import predict_columns

        features = {name: batch[service] for name, service in self.services.items()}
        return pd.DataFrame(predict_columns(self.models, features, bands))

    def rank(self, batch: dict[str, pd.DataFrame], model: str) -> pd.DataFrame:
        from serving.causes import CauseRanks

        frame = batch["features"]
        ranks = CauseRanks({model: self.models[model]}, {model: frame})
        every = np.arange(len(frame))
        contributions = ranks.contributions(model, every)
        history = ranks.context(model, every).history
        shap_rows = np.zeros(len(frame), dtype=np.int64)
        shap_rows[:1] = ranks.distinct.get(model, (0, 0))[0]
        return pd.DataFrame({SHAP_ROWS: shap_rows, **pack_ranking(contributions, history)})

    def text(self, batch: dict[str, pd.DataFrame], model: str, feature_names: list[str], top_k: int, lang: str,
             templates: Any, scale: Any) -> pd.DataFrame:
        """The reason text from the rows' contributions and past (no model needed)."""
        from training.reasons import explain_table

        contributions, history = unpack_ranking(batch["ranking"])
        reasons, as_json, causes = explain_table(contributions, batch["features"], feature_names, model, top_k,
                                                 lang, templates, history, scale, with_top_cause=True)
        return pd.DataFrame({"reasons": reasons, "reasons_json": as_json, "top_cause": causes})
