"""Batch scoring for the CRM: every active customer -> probabilities, bands, segments, layers, reasons,
action and team queue, written per docs/internals.md ("Scores").

Features come from Feast's **offline store** through each champion's feature service, point in time at
the as-of date (``features.retrieval.historical_features``). Batch scoring always uses the offline path,
also when as-of is the latest build: it is exact for any date, reads millions of rows in seconds, and the
day counts are computed for the as-of date by the same ``add_derived`` the online path uses. The online
store serves the low-latency API.

Stages (each timed, rows/s logged): active customers -> features -> predict + bands -> layers + actions
-> reasons (only for customers who get an action: TreeSHAP, then text) -> write (temp folder, then rename).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError
from serving.actions import (
    LAYER_COLUMNS,
    STAKE_COLUMNS,
    ActionsConfig,
    decide,
    load_actions_config,
    load_tags_config,
    prediction_column,
    tag_due,
)
from serving.causes import SHAP_CHUNK, CauseRanks, distinct_rows, save_past  # noqa: F401 (distinct_rows: tests, bench)

log = logging.getLogger("propensity.score")

FEATURE_SNAPSHOT = "features.parquet"


def score_columns(models: dict[str, str] | list[str], stakes: list[str] = ()) -> list[str]:
    """The CRM file's columns for the scored models ({name: task}; a list means binary models), in order
    (docs/internals.md "Scores")."""
    tasks = models if isinstance(models, dict) else dict.fromkeys(models, "binary")
    per_model = [c for m, task in tasks.items() for c in (prediction_column(m, task), f"{m}_band")]
    return [
        "customer_id", "as_of", *per_model, *stakes, "rfm_segment", "lifecycle_stage", *LAYER_COLUMNS, "tags",
        "reasons", "reasons_json", "top_cause", "action", "queue", "action_rule", "group", "priority", "queue_status",
        *[f"{m}_model_version" for m in models],
    ]


# ---- timing ---------------------------------------------------------------------------------------------
@dataclass
class StageTimes:
    """Seconds and rows per stage, for the log and the bench."""

    stages: dict[str, tuple[float, int]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, rows: int) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start, rows)

    def note(self, name: str, text: str) -> None:
        """A fact about a stage that is not a time (e.g. how many rows were distinct)."""
        self.notes[name] = text
        log.info("%-22s %s", name, text)

    def record(self, name: str, seconds: float, rows: int) -> None:
        """A stage met again (e.g. a model's causes ranked for a rule, then for the reasons) adds up."""
        before = self.stages.get(name, (0.0, 0))
        self.stages[name] = (before[0] + seconds, before[1] + rows)
        log.info("%-22s %9d rows %7.2f s %12.0f rows/s", name, rows, seconds, rows / seconds if seconds else 0)

    @property
    def total(self) -> float:
        return sum(s for s, _ in self.stages.values())


@dataclass
class ScoreResult:
    as_of: pd.Timestamp
    rows: int
    flagged: int  # customers with an action other than the default
    by_action: dict[str, int]
    scores_dir: Path
    latest: Path
    model_versions: dict[str, str]
    times: StageTimes


# ---- stages -------------------------------------------------------------------------------------------
def as_of_timestamp(value: Any) -> pd.Timestamp:
    """UTC midnight of ``value`` (a date, a string or a timestamp)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PropensityError(f"--as-of: not a date: {value!r} (expected YYYY-MM-DD)") from exc
    if pd.isna(ts):  # "" and "NaT" parse to NaT
        raise PropensityError(f"--as-of: not a date: {value!r} (expected YYYY-MM-DD)")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize()


def check_not_degenerate(frame: pd.DataFrame, models: dict[str, Any]) -> None:
    """Refuse to write (and so to replace the latest list with) scores where a model gave every customer
    the same number: features that describe no one (e.g. all missing) give exactly that."""
    if len(frame) < 2:
        return
    for name, model in models.items():
        values = frame[prediction_column(name, model.task)]
        if values.nunique(dropna=False) == 1:
            raise PropensityError(
                f"{name}: every one of the {len(frame):,} customers got the same score ({values.iloc[0]:.4f}): "
                "the features describe no one at this date; nothing was written and the latest scores are kept"
            )


def check_as_of_covered(as_of: pd.Timestamp) -> None:
    """Refuse a date the event store cannot describe: after its data end (the day after the newest
    event) every customer would look idle, and the scores would be garbage."""
    from core.events import EventStore
    from core.settings import project_paths
    from core.specs import Cutoffs
    from training.labels import data_end

    end = data_end(EventStore(project_paths().events), Cutoffs())
    if as_of > end:
        raise PropensityError(
            f"--as-of {as_of:%Y-%m-%d} is after the data ends ({end - pd.Timedelta(days=1):%Y-%m-%d} is the last "
            f"day with events): features there would describe no one; use {end:%Y-%m-%d} or earlier"
        )


def default_as_of() -> pd.Timestamp:
    """The latest feature build: the newest snapshot date in the Feast sources."""
    from core.settings import project_paths
    from features.build import built_dates

    sources = project_paths().feature_sources
    dates = built_dates(sources)
    if not dates:
        raise PropensityError(f"no feature snapshots under {sources}: run `propensity features build` first")
    return as_of_timestamp(dates[-1])


def active_customers(as_of: pd.Timestamp, active_days: int, count_signup: bool = True, store=None) -> pd.Series:
    """Ids of customers with any event in [as_of - active_days, as_of), sorted (DuckDB over the store).

    The same edges as the features and labels: a snapshot at as_of (midnight) sees the events before it,
    and an event exactly ``active_days`` earlier still counts."""
    import duckdb

    from core.events import EventStore
    from core.settings import project_paths

    store = store or EventStore(project_paths().events)
    parts = []
    sources = [("orders", "ordered_at"), ("page_views", "viewed_at"), ("complaints", "opened_at")]
    if count_signup:
        sources.append(("customers", "signup_at"))
    for table, column in sources:
        if store.has(table):
            parts.append(
                f"SELECT customer_id FROM read_parquet('{store.glob(table)}') "
                f"WHERE {column} < $as_of AND {column} >= $start"
            )
    if not parts:
        raise PropensityError(f"the event store {store.root} is empty: run `propensity ingest` first")
    sql = f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(parts)}) ORDER BY customer_id"
    params = {"as_of": as_of.to_pydatetime(), "start": (as_of - pd.Timedelta(days=active_days)).to_pydatetime()}
    ids = duckdb.execute(sql, params).df()["customer_id"].astype(str)
    return ids.reset_index(drop=True)


def scorable_specs(store=None) -> dict[str, Any]:
    """The model specs the event store supports; a log line for each one skipped and why."""
    from core.specs import specs_for_data

    usable, skipped = specs_for_data(store)
    for name, why in skipped.items():
        log.info("model %s skipped: %s", name, why)
    if not usable:
        raise PropensityError("no model spec in configs/models/ can be scored with the event store's data")
    return usable


def load_champions(names: list[str] | None = None) -> dict[str, Any]:
    """The champion of each named model (default: every model the data supports)."""
    from training.champion import load_model_version

    if names is not None:
        return {name: load_model_version(name, alias="champion") for name in names}
    models = {}
    for name in scorable_specs():
        try:
            models[name] = load_model_version(name, alias="champion")
        except PropensityError as exc:  # supported by the data but never trained or promoted
            log.info("model %s skipped: %s", name, exc)
    if not models:
        raise PropensityError("no model has a champion yet: train and promote one (`propensity train MODEL`, "
                              "`propensity promote MODEL`)")
    return models


def retrieve_features(customer_ids: pd.Series, as_of: pd.Timestamp, models: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Features exact at ``as_of`` through each model's feature service, one row per customer: Feast's
    point-in-time join on a snapshot date, a snapshot built for the date otherwise (features.exact), so a
    date between two snapshots never reads stale day counts or windows."""
    from features.exact import exact_historical_features as historical_features

    entity = pd.DataFrame({"customer_id": customer_ids.to_numpy(), "event_timestamp": as_of})
    out: dict[str, pd.DataFrame] = {}
    by_service: dict[str, pd.DataFrame] = {}
    for name, model in models.items():
        if model.feature_service not in by_service:  # both models on one service: retrieve once
            frame = historical_features(entity, model.feature_service).reset_index(drop=True)
            if len(frame) != len(entity) or not (frame["customer_id"].to_numpy() == entity["customer_id"].to_numpy()).all():
                raise PropensityError(
                    f"feature service {model.feature_service}: retrieval returned {len(frame)} rows for "
                    f"{len(entity)} customers, or changed their order"
                )
            by_service[model.feature_service] = frame
        out[name] = by_service[model.feature_service]
    return out


def skipped_models(models: dict[str, Any]) -> list[str]:
    """Models with a spec that are not being scored (their rules and layers stand aside)."""
    from core.specs import model_names

    return [name for name in model_names() if name not in models]


def load_bands(names: list[str]) -> dict[str, Any]:
    """Band thresholds of each model from its spec (the API and the CRM list use the same cuts)."""
    from core.specs import load_spec

    return {name: load_spec(name).bands for name in names}


def predict_and_tag(
    customer_ids: pd.Series,
    as_of: pd.Timestamp,
    models: dict[str, Any],
    features: dict[str, pd.DataFrame],
    cfg: ActionsConfig,
    bands: dict[str, Any],
    times: StageTimes,
    engine: Any = None,
    ranks: CauseRanks | None = None,
) -> pd.DataFrame:
    """Probabilities, bands, segments, layers and actions; the frame also carries every feature column
    (rules may test any of them). ``engine`` (serving.ray_engine) runs ``predict_columns`` in batches
    elsewhere; the layers and actions stay here: quantile layers and queue capacities need everyone.
    ``ranks`` ranks the causes of the rows a ``top_cause`` condition tests."""
    n = len(customer_ids)
    frame = wide_frame(features)
    frame["customer_id"] = customer_ids.to_numpy()
    frame["as_of"] = as_of
    with times.stage(f"predict ({len(models)} models)", n):
        predicted = engine.predict(features, bands) if engine is not None else predict_columns(models, features, bands)
        for column, values in predicted.items():
            frame[column] = values
    ranges = {name: model.feature_ranges for name, model in models.items()}
    tags = load_tags_config()
    previous, due = previous_tags(as_of, tags)
    lookback = cfg.contact_lookback_days()
    history = contact_history(as_of, lookback) if lookback is not None else None
    with times.stage("layers + actions", n):
        decided = decide(frame, cfg, skipped_models(models), ranges, tags, previous, due, history,
                         ranks or CauseRanks(models, features, remote=engine))
        frame = pd.concat([frame, decided], axis=1)
    return frame


def predict_columns(models: dict[str, Any], features: dict[str, pd.DataFrame], bands: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each model's number, band and version for the rows of ``features`` (row by row: any split of the
    rows gives the same values; both engines call this)."""
    from training.reasons import band

    out: dict[str, np.ndarray] = {}
    for name, model in models.items():
        p = model.predict(features[name])
        out[prediction_column(name, model.task)] = p
        out[f"{name}_band"] = band(p, model.bands(bands[name]))
        out[f"{name}_model_version"] = np.full(len(p), str(model.version), dtype=object)
    return out


def contact_history(as_of: pd.Timestamp, lookback_days: int) -> pd.DataFrame:
    """Contacts in the ``lookback_days`` before ``as_of`` (customer_id, contacted_at, action_rule) for the
    contact policy: the CRM's export (the ``contacts`` event family) when the store has one, else the rows
    earlier lists put in a queue (treatment group, not held back, not over capacity), dated with the list.
    Only the lists inside the window are read, however many weeks of lists there are."""
    import pyarrow.parquet as pq

    from core.events import EventStore
    from core.settings import SCORES_FILE, project_paths
    from serving.actions import IN_QUEUE

    paths = project_paths()
    store = EventStore(paths.events)
    if store.has("contacts"):
        contacts = store.read("contacts")[["customer_id", "contacted_at", "action_rule"]]
        since = as_of - pd.Timedelta(days=lookback_days)
        keep = (contacts["contacted_at"] < as_of) & (contacts["contacted_at"] >= since)
        return contacts[keep].reset_index(drop=True)
    parts = []
    first = f"{as_of - pd.Timedelta(days=lookback_days):%Y-%m-%d}"
    for day in paths.scored_dates():
        if day < first:
            continue
        if day >= f"{as_of:%Y-%m-%d}":
            break
        path = paths.scores / day / SCORES_FILE
        if "queue_status" not in pq.read_schema(path).names:
            continue
        listed = pd.read_parquet(path, columns=["customer_id", "action_rule", "queue_status"])
        listed = listed[listed["queue_status"] == IN_QUEUE]
        parts.append(listed.assign(contacted_at=pd.Timestamp(day, tz="UTC"))[["customer_id", "contacted_at", "action_rule"]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["customer_id", "contacted_at", "action_rule"])


def previous_tags(as_of: pd.Timestamp, tags) -> tuple[pd.Series | None, set[str] | None]:
    """The last earlier list's tags per customer and which tags are due at ``as_of`` (see
    serving.actions.tag_due); (None, None) when there is no earlier list: every tag is computed."""
    from core.settings import SCORES_FILE, project_paths

    paths = project_paths()
    earlier = [d for d in paths.scored_dates() if d < f"{as_of:%Y-%m-%d}"]
    if not earlier:
        return None, None
    previous = pd.read_parquet(paths.scores / earlier[-1] / SCORES_FILE)
    if "tags" not in previous.columns:
        return None, None
    due = {t.name for t in tags.tags if tag_due(t.refresh, as_of, pd.Timestamp(earlier[-1], tz="UTC"))}
    return previous.set_index("customer_id")["tags"], due


def wide_frame(features: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One frame with every column of every model's features (models on one service share columns)."""
    frames = list(features.values())
    frame = frames[0].copy()
    for other in frames[1:]:
        extra = [c for c in other.columns if c not in frame.columns]
        if extra:
            frame = pd.concat([frame, other[extra]], axis=1)
    return frame


def add_reasons(frame: pd.DataFrame, models: dict[str, Any], features: dict[str, pd.DataFrame],
                cfg: ActionsConfig, times: StageTimes, engine: Any = None,
                ranks: CauseRanks | None = None) -> pd.DataFrame:
    """Plain-language reasons (and JSON) and the top cause for every customer whose action is not the
    default, from the model the customer's rule names (``explain_rows``; ``engine`` runs it in batches
    elsewhere; ``ranks`` holds the rows a rule already ranked)."""
    reasons = np.full(len(frame), "", dtype=object)
    reasons_json = np.full(len(frame), "[]", dtype=object)
    causes = np.full(len(frame), "", dtype=object)
    rows = np.flatnonzero(frame["action"].to_numpy() != cfg.default.action)
    explain_with = frame["explain"].to_numpy()[rows]
    if engine is not None:
        reasons[rows], reasons_json[rows], causes[rows] = engine.explain(
            features, rows, explain_with, ranks or CauseRanks(models, features, remote=engine))
    else:
        reasons[rows], reasons_json[rows], causes[rows] = explain_rows(
            models, features, rows, explain_with, cfg.scoring.top_k, cfg.scoring.lang, times, ranks=ranks)
    frame["reasons"] = reasons
    frame["reasons_json"] = reasons_json
    frame["top_cause"] = causes
    return frame


def explain_rows(models: dict[str, Any], features: dict[str, pd.DataFrame], rows: np.ndarray,
                 explain_with: np.ndarray, top_k: int, lang: str, times: StageTimes, templates=None,
                 progress: bool = True, ranks: CauseRanks | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reasons, their JSON and the top raising cause for ``rows`` (positions in ``features``), each from
    the model in ``explain_with`` (aligned with ``rows``); both engines call this.

    Two timed stages: exact TreeSHAP with the ranking's past (``serving.causes.CauseRanks``: LightGBM
    ``pred_contrib`` in chunks, once per distinct row; ``ranks`` may already hold some rows, e.g. those
    an action rule tested the top cause of) and the text, built column-wise by
    ``training.reasons.explain_table``.
    """
    from rich.progress import Progress

    from training.reasons import explain_table, load_templates

    templates = templates or load_templates()
    reasons = np.full(len(rows), "", dtype=object)
    reasons_json = np.full(len(rows), "[]", dtype=object)
    causes = np.full(len(rows), "", dtype=object)
    mine = {name: np.flatnonzero(explain_with == name) for name in models}  # positions within rows
    n_flagged = int(sum(m.size for m in mine.values()))

    chunk = SHAP_CHUNK
    contributions: dict[str, np.ndarray] = {}
    contexts = {}
    with times.stage("reasons: SHAP", n_flagged), \
            Progress(transient=True, disable=not progress or n_flagged < 2 * chunk) as bar:
        task = bar.add_task("TreeSHAP for customers with an action", total=n_flagged)
        ranks = ranks or CauseRanks(models, features, templates)
        ranks.on_shap = lambda done: bar.advance(task, done)
        for name in models:
            contributions[name] = ranks.contributions(name, rows[mine[name]])
            contexts[name] = ranks.context(name, rows[mine[name]])
        ranks.on_shap = None
        for name, (distinct, asked) in ranks.distinct.items():
            times.note(f"{name}: distinct rows", f"{distinct:,} of {asked:,}")
    with times.stage("reasons: text + JSON", n_flagged):
        for name, model in models.items():
            at = mine[name]
            # In chunks: the text is built column-wise, and a chunk's intermediate strings (several per
            # cause and fact) stay small; every row's text depends on that row alone.
            for start in range(0, at.size, chunk):
                part = at[start:start + chunk]
                context = contexts[name].take(np.arange(start, start + part.size))
                reasons[part], reasons_json[part], causes[part] = explain_table(
                    contributions[name][start:start + chunk], features[name].iloc[rows[part]],
                    list(model.feature_names), name, top_k, lang, templates, context.history, context.scale,
                    with_top_cause=True,
                )
    return reasons, reasons_json, causes


def feature_snapshot(frame: pd.DataFrame, models: dict[str, Any], features: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each model's inputs under ``<model>__<feature>`` with the customer id (forget removes rows here too)."""
    parts = {"customer_id": frame["customer_id"].to_numpy()}
    for name, model in models.items():
        inputs = features[name][model.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64")
        for col in model.feature_names:
            parts[f"{name}__{col}"] = inputs[col].to_numpy()
    return pd.DataFrame(parts)


def write_scores(scores: pd.DataFrame, snapshot: pd.DataFrame | None, as_of: pd.Timestamp, paths=None,
                 ranks: CauseRanks | None = None) -> Path:
    """Write the as-of's folder (Parquet, CSV, feature snapshot, the ranked customers' past for /predict)
    into a temp folder and swap it in, then refresh the latest copy if this as-of is the newest. A failure
    leaves the previous files intact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.io import atomic_path
    from core.settings import SCORES_CSV, SCORES_FILE, project_paths

    paths = paths or project_paths()
    final = paths.scores_for(as_of)
    # One pandas -> Arrow conversion for both files: on a million rows it costs as much as a write.
    table = pa.Table.from_pandas(scores, preserve_index=False)
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / SCORES_FILE)
        write_csv(table, tmp / SCORES_CSV)
        if snapshot is not None:
            snapshot.to_parquet(tmp / FEATURE_SNAPSHOT, index=False)
        if ranks is not None:
            save_past(ranks, tmp)
    refresh_latest(paths)
    return final


def write_csv(scores, path: Path) -> None:
    """The CRM's CSV (from the scores as an Arrow table or a DataFrame) with Arrow's writer (several times
    faster than pandas' on a million rows; measured in bench.bench_score), dates as YYYY-MM-DD, quotes only
    where a value needs them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = scores if isinstance(scores, pa.Table) else pa.Table.from_pandas(scores, preserve_index=False)
    at = table.schema.get_field_index("as_of")
    if at >= 0:
        # Formatted once per distinct date: strftime per row was half the CSV's time on a million rows.
        days = pc.dictionary_encode(table.column(at)).combine_chunks()
        labels = pc.strftime(days.dictionary, format="%Y-%m-%d")
        table = table.set_column(at, "as_of", pc.take(labels, days.indices))
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))


def refresh_latest(paths=None) -> Path | None:
    """Copy the newest as-of's scores to the latest file (temp + rename), or remove it if none is left."""
    from core.io import write_with
    from core.settings import SCORES_FILE, project_paths

    paths = paths or project_paths()
    dated = paths.scored_dates()
    if not dated:
        paths.latest_scores.unlink(missing_ok=True)
        return None
    newest = paths.scores / dated[-1] / SCORES_FILE
    return write_with(paths.latest_scores, lambda tmp: shutil.copyfile(newest, tmp))


# ---- the command --------------------------------------------------------------------------------------
ENGINES = ("local", "ray")


@contextmanager
def _engine(name: str, cfg: ActionsConfig, models: dict[str, Any], times: StageTimes) -> Iterator[Any]:
    """None for the local engine (this process); for ray, serving.ray_engine's runner, started here."""
    if name == "local":
        yield None
        return
    from serving.ray_engine import RayEngine

    with RayEngine(cfg.scoring.ray, models, cfg.scoring.top_k, cfg.scoring.lang, times) as runner:
        yield runner


def score(as_of: Any = None, cfg: ActionsConfig | None = None, models: dict[str, Any] | None = None,
          engine: str | None = None) -> ScoreResult:
    """Score every active customer at ``as_of`` (default: the latest feature build) with the champion of
    every model the data supports (or ``models``), on ``engine`` (default: actions.yaml scoring.engine)."""
    from core.settings import project_paths

    cfg = cfg or load_actions_config()
    engine = engine or cfg.scoring.engine
    if engine not in ENGINES:
        raise PropensityError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    paths = project_paths()
    as_of = as_of_timestamp(as_of) if as_of is not None else default_as_of()
    check_as_of_covered(as_of)
    times = StageTimes()
    models = models or load_champions()
    log.info("scoring at %s with %s; features from the offline store (point in time)", f"{as_of:%Y-%m-%d}",
             ", ".join(f"{n} v{m.version}" for n, m in models.items()))

    started = time.perf_counter()
    ids = active_customers(as_of, cfg.scoring.active_days, cfg.scoring.count_signup_as_activity)
    times.record("active customers", time.perf_counter() - started, len(ids))
    if ids.empty:
        raise PropensityError(
            f"no active customer at {as_of:%Y-%m-%d} (no event in the {cfg.scoring.active_days} days before)"
        )
    with times.stage("features (offline)", len(ids)):
        features = retrieve_features(ids, as_of, models)
    with _engine(engine, cfg, models, times) as runner:
        # A row's causes are ranked once (on the runner, if any), for the rules and the reasons.
        ranks = CauseRanks(models, features, remote=runner)
        frame = predict_and_tag(ids, as_of, models, features, cfg, load_bands(list(models)), times, runner, ranks)
        frame = add_reasons(frame, models, features, cfg, times, runner, ranks)
    check_not_degenerate(frame, models)
    with times.stage("write", len(frame)):
        snapshot = feature_snapshot(frame, models, features) if cfg.scoring.keep_feature_snapshot else None
        stakes = [c for c in STAKE_COLUMNS if c in frame.columns]
        columns = score_columns({n: m.task for n, m in models.items()}, stakes)
        # The CRM works one queue at a time, most at stake first.
        order = frame.sort_values(["queue", "priority"], ascending=[True, False], na_position="last",
                                  kind="stable").index
        scores_dir = write_scores(frame.loc[order, columns].reset_index(drop=True), snapshot, as_of, paths, ranks)
    by_action = frame["action"].value_counts().to_dict()
    flagged = int((frame["action"] != cfg.default.action).sum())
    log.info("scored %d customers in %.1f s; %d with an action -> %s", len(frame), times.total, flagged, scores_dir)
    return ScoreResult(
        as_of=as_of, rows=len(frame), flagged=flagged, by_action={str(k): int(v) for k, v in by_action.items()},
        scores_dir=scores_dir, latest=paths.latest_scores,
        model_versions={n: str(m.version) for n, m in models.items()}, times=times,
    )
