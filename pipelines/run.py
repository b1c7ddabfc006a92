"""``propensity run``: the whole chain, as small named stages.

    generate (or use data/raw) -> ingest -> validate -> build features -> apply + materialize
    -> train_<model> for each spec in configs/models/ -> promote (gate) -> score -> report

Each stage is a plain function ``stage_<name>(ctx) -> dict`` (facts for the summary) that other code and
the CLI can call alone. Stages are idempotent (re-running one redoes its work with the same result:
generation is deterministic by seed, ingest de-duplicates, the feature build replaces its dates,
training registers a new *challenger* only) and the run is resumable: progress is kept in
``data/runs/<run_id>/state.json`` and ``--resume`` continues after the last stage that finished.

A model whose spec needs an event family the data lacks (a browsing model on a transactions-only log) is
skipped with a line saying why, in training, promotion and scoring alike.

Why a failure is harmless: training never touches ``champion``; every model is trained before any
is promoted, and promotion happens only through the gate; scores are written to a temp folder and
renamed. So a failed stage leaves the current champions, the online store (written by the materialize
stage only) and the last scores as they were.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import StrictModel, config_path, load_config
from core.errors import PropensityError

log = logging.getLogger("propensity.run")


# ---- configuration ---------------------------------------------------------------------------------
class Size(StrictModel):
    customers: int = Field(gt=0)
    days: int = Field(gt=0)
    trials: int = Field(ge=1, description="Optuna trials per model")
    timeout_seconds: float | None = Field(None, gt=0, description="Optuna time budget per model")


class RunConfig(StrictModel):
    default_size: str
    sizes: dict[str, Size]
    seed: int = 7
    end: date | None = Field(None, description="last generated day; null: the generator's own default")
    source: Literal["generate", "raw"] = "generate"
    shift_at: date | None = Field(None, description="generated behaviour changes from this day (monitoring demos)")
    serve_hint: str = "propensity serve --port 3000"

    @model_validator(mode="after")
    def _default_known(self) -> RunConfig:
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size '{self.default_size}' is not one of sizes: {sorted(self.sizes)}")
        return self

    def size(self, name: str | None) -> Size:
        name = name or self.default_size
        if name not in self.sizes:
            raise PropensityError(f"--size {name}: unknown size; configs/run.yaml defines {sorted(self.sizes)}")
        return self.sizes[name]


def load_run_config(path: str | Path | None = None) -> RunConfig:
    return load_config(path or config_path("run.yaml"), RunConfig)


# ---- run state ---------------------------------------------------------------------------------------
@dataclass
class RunState:
    """What a run did so far; saved after every stage so ``--resume`` can continue."""

    run_id: str
    size: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {status, seconds, facts}
    selected: list[str] = field(default_factory=list)  # the stages this run was asked for, in order
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @staticmethod
    def folder() -> Path:
        from core.settings import project_paths

        return project_paths().runs

    @property
    def path(self) -> Path:
        return self.folder() / self.run_id / "state.json"

    def save(self) -> None:
        from core.io import write_json

        write_json(self.path, self.__dict__)

    @classmethod
    def load(cls, run_id: str) -> RunState:
        path = cls.folder() / run_id / "state.json"
        if not path.is_file():
            raise PropensityError(f"no run state at {path}")
        return cls(**json.loads(path.read_text()))

    @classmethod
    def latest(cls) -> RunState | None:
        states = sorted(cls.folder().glob("*/state.json"), key=lambda p: p.stat().st_mtime)
        return cls.load(states[-1].parent.name) if states else None

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") == "done"


@dataclass
class RunContext:
    cfg: RunConfig
    size: Size
    state: RunState
    trials: int | None = None  # overrides of the size's budget (CLI)
    timeout: float | None = None

    def facts(self, stage: str) -> dict[str, Any]:
        return self.state.stages.get(stage, {}).get("facts", {})


# ---- stages -------------------------------------------------------------------------------------------
def stage_generate(ctx: RunContext) -> dict:
    """Simulate the business into data/raw (deterministic by seed), unless the source is your own data."""
    from core.settings import project_paths

    raw = project_paths().raw
    if ctx.cfg.source == "raw":
        if not any(raw.glob("orders.*")):
            raise PropensityError(f"source is 'raw' but {raw} has no orders.parquet or orders.csv")
        return {"source": f"existing exports in {raw}"}
    from pipelines.synthetic import generate, load_generator_config

    report = generate(customers=ctx.size.customers, days=ctx.size.days, seed=ctx.cfg.seed, out=raw,
                      end=ctx.cfg.end, shift_at=ctx.cfg.shift_at, config=load_generator_config())
    return {"source": f"generated {ctx.size.customers} customers x {ctx.size.days} days (seed {ctx.cfg.seed})",
            "report": _plain(report)}


def _raw_file(raw: Path, table: str) -> Path | None:
    for ext in ("parquet", "csv"):
        if (raw / f"{table}.{ext}").is_file():
            return raw / f"{table}.{ext}"
    return None


def stage_ingest(ctx: RunContext) -> dict:
    """Validate the raw exports into the canonical event store (re-ingesting the same files adds nothing)."""
    from core.contract import TABLES
    from core.settings import project_paths
    from pipelines.ingest import ingest

    raw = project_paths().raw
    files = {t: _raw_file(raw, t) for t in TABLES}
    for name, table in TABLES.items():
        if table.required_table and files[name] is None:
            raise PropensityError(f"no {name} file in {raw} ({name}.parquet or {name}.csv)")
    report = ingest(**files)
    return {"report": _plain(report)}


def stage_validate(ctx: RunContext) -> dict:
    """Re-validate the event store (pipelines.ingest.validate_store): rows, customers, date range per table."""
    from pipelines.ingest import validate_store

    tables = {}
    for t in validate_store():
        tables[t.table] = {"rows": t.rows, "customers": t.customers, "status": t.status,
                           "first": "" if t.first is None else f"{t.first:%Y-%m-%d}",
                           "last": "" if t.last is None else f"{t.last:%Y-%m-%d}"}
    if not tables.get("orders", {}).get("rows"):
        raise PropensityError("the event store has no orders after ingest")
    return {"tables": tables}


def stage_features(ctx: RunContext) -> dict:
    """Point-in-time feature snapshots from the event store into the Feast Parquet sources."""
    from features.build import build_features

    return {"report": _plain(build_features(progress=True))}


def stage_online(ctx: RunContext) -> dict:
    """Register the Feast repo and load the latest snapshot into the online store."""
    from features.store import apply, materialize

    applied = apply()
    materialized = materialize()
    return {"apply": _plain(applied), "materialize": _plain(materialized)}


def _usable_models() -> tuple[list[str], dict[str, str]]:
    from core.specs import specs_for_data

    usable, skipped = specs_for_data()
    return list(usable), skipped


def stage_train(model: str) -> Callable[[RunContext], dict]:
    """The stage that tunes and registers a challenger of ``model`` (the champion alias is not touched),
    or says why the data cannot support it."""

    def train(ctx: RunContext) -> dict:
        from core.errors import NotEnoughDataError
        from core.specs import load_spec
        from training.train import train_model

        usable, skipped = _usable_models()
        if model in skipped:
            log.info("model %s skipped: %s", model, skipped[model])
            return {"skipped": skipped[model]}
        try:
            result = train_model(load_spec(model), trials=ctx.trials or ctx.size.trials,
                                 timeout=ctx.timeout or ctx.size.timeout_seconds)
        except NotEnoughDataError as exc:
            # One model the history cannot support must not stop the others (a line, not a failure).
            log.warning("model %s not trained: %s", model, exc)
            return {"skipped": str(exc)}
        metric = load_spec(model).promotion.metric
        return {"version": result.version, "test_auc": result.test_metrics.get("roc_auc"),
                "test_metric": metric, "test_score": result.test_metrics.get(metric),
                "trials": result.trials_in_study, "seconds": round(result.seconds, 1), "run_id": result.run_id}

    train.__name__ = f"stage_train_{model}"
    train.__doc__ = f"Tune and register a {model} challenger (the champion alias is not touched)."
    return train


def stage_promote(ctx: RunContext) -> dict:
    """The gate: each challenger becomes champion only if it beats the champion on the same holdout."""
    from training.promotion import promote

    usable, skipped = _usable_models()
    for model in list(usable):
        trained = ctx.facts(f"train_{model}")
        if "skipped" in trained:
            skipped[model] = trained["skipped"]
            usable.remove(model)
    out = {model: _plain(promote(model)) for model in usable}
    out.update({model: {"decision": "skipped", "reason": why} for model, why in skipped.items()})
    return out


def stage_score(ctx: RunContext) -> dict:
    """Batch scoring of every active customer with the champions of the models the data supports."""
    from serving.batch import score

    result = score()
    return {"as_of": f"{result.as_of:%Y-%m-%d}", "rows": result.rows, "flagged": result.flagged,
            "by_action": result.by_action, "scores_dir": str(result.scores_dir), "latest": str(result.latest),
            "model_versions": result.model_versions,
            "stage_seconds": {k: round(v[0], 2) for k, v in result.times.stages.items()}}


def stage_report(ctx: RunContext) -> dict:
    """Write the run summary (JSON beside the state) for the table printed at the end."""
    from core.io import write_json

    path = ctx.state.path.parent / "summary.json"
    write_json(path, {name: s.get("facts", {}) for name, s in ctx.state.stages.items()})
    return {"summary": str(path)}


def stages() -> list[tuple[str, Callable[[RunContext], dict]]]:
    """The stages in order: one training stage per model spec in configs/models/."""
    from core.specs import model_names

    return [
        ("generate", stage_generate),
        ("ingest", stage_ingest),
        ("validate", stage_validate),
        ("features", stage_features),
        ("online", stage_online),
        *[(f"train_{m}", stage_train(m)) for m in model_names()],
        ("promote", stage_promote),
        ("score", stage_score),
        ("report", stage_report),
    ]


def stage_names() -> list[str]:
    return [name for name, _ in stages()]


def _plain(obj: Any) -> Any:
    """A JSON-friendly view of a stage's report object (dataclass, pydantic model, dict or scalar)."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if hasattr(obj, "model_dump"):
        return _plain(obj.model_dump())
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return str(obj)


# ---- the runner ------------------------------------------------------------------------------------------
def run(size: str | None = None, *, resume: bool = False, only: list[str] | None = None,
        start_at: str | None = None, trials: int | None = None, timeout: float | None = None,
        cfg: RunConfig | None = None) -> RunState:
    """Run the stages in order. ``resume`` continues the latest run after its last finished stage;
    ``start_at`` skips the stages before one; ``only`` runs just the named stages."""
    cfg = cfg or load_run_config()
    all_stages = stages()
    names = [name for name, _ in all_stages]
    for name in [*(only or []), *([start_at] if start_at else [])]:
        if name not in names:
            raise PropensityError(f"unknown stage '{name}'; stages: {', '.join(names)}")
    state = RunState.latest() if resume else None
    if resume and state is None:
        raise PropensityError(f"--resume: no earlier run under {RunState.folder()}")
    if state is None:
        size_name = size or cfg.default_size
        cfg.size(size_name)  # fail early on an unknown size
        state = RunState(run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", size=size_name)
    ctx = RunContext(cfg=cfg, size=cfg.size(state.size), state=state, trials=trials, timeout=timeout)
    if resume and state.selected:
        selected = state.selected  # a resumed run keeps the stages it was started with
    elif only:
        selected = list(only)
    elif start_at:
        selected = names[names.index(start_at):]
    else:
        selected = list(names)
    state.selected = selected
    log.info("run %s (size %s): %s", state.run_id, state.size, " -> ".join(selected))
    for name, fn in all_stages:
        if name not in selected:
            continue
        if resume and state.done(name):
            log.info("stage %-17s already done in this run: skipped", name)
            continue
        log.info("stage %-17s ...", name)
        started = time.perf_counter()
        try:
            facts = fn(ctx)
        except Exception as exc:
            state.stages[name] = {"status": "failed", "seconds": round(time.perf_counter() - started, 1),
                                  "error": f"{type(exc).__name__}: {exc}"}
            state.save()
            message = (f"stage '{name}' failed: {exc}\nChampions, the online store and the last scores are as "
                       f"they were. Fix the cause, then `propensity run --resume` continues from '{name}'.")
            if isinstance(exc, PropensityError):
                raise PropensityError(message) from exc
            log.error(message)
            raise
        seconds = round(time.perf_counter() - started, 1)
        state.stages[name] = {"status": "done", "seconds": seconds, "facts": _plain(facts)}
        state.save()
        log.info("stage %-17s done in %.1f s", name, seconds)
    return state


def retrain_stages() -> list[str]:
    """Everything after the data is in: features, online store, every model, gate, scores, report."""
    names = stage_names()
    return names[names.index("features"):]


def retrain(if_needed: bool = False, trials: int | None = None, timeout: float | None = None,
            cfg: RunConfig | None = None):
    """Rebuild features, train every model, promote by the gate, re-score. With ``if_needed`` only when
    the monitoring verdict says so. Returns (monitor result or None, run state or None)."""
    checked = None
    if if_needed:
        from pipelines.monitor import monitor

        checked = monitor()
        if not checked.verdict.retrain:
            log.info("no retraining needed: %s", checked.verdict.text)
            return checked, None
        log.info("retraining: %s", checked.verdict.text)
    return checked, run(only=retrain_stages(), trials=trials, timeout=timeout, cfg=cfg)


# ---- the summary ------------------------------------------------------------------------------------------
def summary_tables(state: RunState, serve_hint: str) -> list:
    """Rich tables: stages, data sizes, models against the champion, scoring, where files are."""
    from rich.table import Table

    stages = Table(title=f"propensity run {state.run_id} (size {state.size})")
    for col in ("stage", "status", "seconds"):
        stages.add_column(col)
    for name in stage_names():
        s = state.stages.get(name)
        if s:
            stages.add_row(name, s["status"], f"{s.get('seconds', 0):.1f}")
    out = [stages]

    tables = state.stages.get("validate", {}).get("facts", {}).get("tables")
    if tables:
        data = Table(title="event store")
        for col in ("table", "rows", "customers", "from", "to", "status"):
            data.add_column(col)
        for name, t in tables.items():
            data.add_row(name, f"{t.get('rows', 0):,}", f"{t.get('customers', '')}", t.get("first", ""),
                         t.get("last", ""), t.get("status", ""))
        out.append(data)

    from core.specs import model_names

    promote = state.stages.get("promote", {}).get("facts")
    if promote or any(state.stages.get(f"train_{m}") for m in model_names()):
        models = Table(title="models")
        for col in ("model", "metric", "challenger", "challenger score", "champion before", "champion score",
                    "decision"):
            models.add_column(col)
        for m in model_names():
            trained = state.stages.get(f"train_{m}", {}).get("facts", {})
            decision = (promote or {}).get(m) or {}
            models.add_row(
                m, str(decision.get("metric") or trained.get("test_metric", "")), str(trained.get("version", "")),
                _fmt(decision.get("challenger_score", trained.get("test_score", trained.get("test_auc")))),
                str(decision.get("champion_version") or "none"),
                _fmt(decision.get("champion_score")),
                f"{decision.get('decision')}: {decision.get('reason')}" if decision else "-",
            )
        out.append(models)

    scored = state.stages.get("score", {}).get("facts")
    if scored:
        sc = Table(title=f"batch scores at {scored['as_of']}")
        sc.add_column("action")
        sc.add_column("customers", justify="right")
        for action, n in sorted(scored["by_action"].items(), key=lambda kv: -kv[1]):
            sc.add_row(action, f"{n:,}")
        sc.add_row("[b]flagged (any action)[/b]", f"[b]{scored['flagged']:,}[/b] of {scored['rows']:,}")
        out.append(sc)

    from core.settings import project_paths

    paths = project_paths()
    where = Table(title="where things are")
    where.add_column("what")
    where.add_column("path")
    where.add_row("event store", str(paths.events))
    where.add_row("feature sources / online store", f"{paths.feature_sources} / {paths.online_store}")
    where.add_row("MLflow (mlflow ui --backend-store-uri ...)", paths.tracking_uri())
    if scored:
        where.add_row("CRM list (Parquet + CSV)", scored["scores_dir"])
        where.add_row("staff page data", scored["latest"])
    where.add_row("run state", str(state.path))
    where.add_row("start serving", f"{serve_hint}   (staff page: /ui)")
    out.append(where)
    return out


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "-"
