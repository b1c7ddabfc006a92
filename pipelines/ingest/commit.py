"""``ingest()``: read, clean and validate every file given, then, holding the store lock, check
customers, plan the merge and commit it in one atomic step (``EventStore.replace_months``).

The files are read, cleaned (``pipelines.ingest.cleaning``, configs/cleaning.yaml) and validated before
the lock is taken (that is the slow part and needs no store); everything that reads the store happens
under the lock, so a second ingest plans on the state the first one committed and no run's rows are
lost. The rows the cleaning rules removed are written to the quarantine just before the commit, whose
manifest records them (``pipelines.ingest.quarantine``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.contract import TABLES, entity_table
from core.errors import DataError
from core.events import EventStore
from core.schemas import Problem, check_table
from pipelines.ingest import quarantine
from pipelines.ingest.cleaning import CleaningConfig, clean_table, duplicate_rows, load_cleaning_config
from pipelines.ingest.columns import ColumnMap, load_column_map
from pipelines.ingest.parse import Source, read_source
from pipelines.ingest.plan import derive_customers, plan_table, unknown_customers

log = logging.getLogger("propensity.ingest")


@dataclass
class TableResult:
    """What one ingest did to one table."""

    table: str
    source: str | None  # the file read, 'derived' for customers built from events, None when not given
    rows_read: int = 0
    added: int = 0
    updated: int = 0
    already_present: int = 0
    duplicate_rows_dropped: int = 0  # identical rows inside a file of a table without ids
    months_written: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # cleaning rule -> rows quarantined
    quarantine_file: str | None = None  # relative to the quarantine folder
    quarantine_new: bool = False  # False: the same rows were quarantined by an earlier run


@dataclass
class IngestReport:
    store: Path
    tables: dict[str, TableResult]
    families: dict[str, str]  # table -> present | derived | absent, after this run
    notes: list[str] = field(default_factory=list)
    quarantine: Path | None = None  # the folder of the quarantined rows

    def removed(self) -> dict[str, dict[str, int]]:
        """table -> rule -> rows this run's cleaning rules removed (new or already quarantined)."""
        return {t: dict(r.removed) for t, r in self.tables.items() if r.removed}

    @property
    def absent(self) -> list[str]:
        return [t for t, status in self.families.items() if status == "absent"]

    @property
    def changed(self) -> bool:
        return any(r.added or r.updated for r in self.tables.values())

    def rows_added(self) -> dict[str, int]:
        return {t: r.added for t, r in self.tables.items()}


def ingest(
    main_file: str | Path | None = None,
    /,
    *,
    column_map: str | Path | ColumnMap | None = None,
    store: str | Path | EventStore | None = None,
    now: pd.Timestamp | None = None,
    progress: Callable[[str], None] | None = None,
    lock_timeout: float | None = None,
    cleaning: str | Path | CleaningConfig | bool | None = None,
    **files: str | Path | None,
) -> IngestReport:
    """Validate the given exports and merge them into the event store; see the package docstring.

    Files are given by table name (``orders=...``, ``customers=...``, one keyword per table of
    ``core.contract.TABLES``; None means not given); ``main_file`` is the required table's file
    (orders) given positionally. ``store`` defaults to ``data/events`` of the project; ``now`` (UTC) is
    the reference for "future" timestamps; ``progress`` receives a short text as each stage starts (the
    CLI shows it); ``lock_timeout`` is how long to wait for another writer of the store (seconds, default
    ``core.events.DEFAULT_LOCK_TIMEOUT``). ``cleaning`` is the cleaning rules: a YAML path or a
    ``CleaningConfig`` (None: configs/cleaning.yaml; False: every rule off); the column map's
    ``cleaning:`` section is laid over them.
    """
    from core.settings import project_paths

    given = _given_files(main_file, files)
    step = progress or (lambda _msg: None)
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    rules = _cleaning_rules(cleaning).with_overrides(cmap.cleaning, "column map")
    if not isinstance(store, EventStore):
        store = EventStore(Path(store) if store is not None else project_paths().events)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")

    sources: dict[str, Source] = {}
    repeated: dict[str, int] = {}
    notes: list[str] = []
    problems: list[Problem] = []
    for table, path in given.items():
        step(f"reading {table} from {Path(path).name}")
        src = read_source(path, table, cmap, now, rules)
        if src.frame is not None:
            if TABLES[table].id_column is None:  # no id: a row repeated in the file is one event
                again = duplicate_rows(src.frame)
                repeated[table] = int(again.sum())
                src.frame = src.frame[~again]
            if rules.any_enabled:
                step(f"cleaning {table} ({len(src.frame):,} rows)")
                cleaned = clean_table(table, src.frame, rules, src.marks, str(src.path))
                src.frame, src.removed = cleaned.frame, src.removed + cleaned.removed
                notes += cleaned.notes
            # Rows are numbered as in the file, also after the rules removed some.
            file_rows = src.frame.index.to_numpy()
            src.frame = src.frame.reset_index(drop=True)
            problems += check_table(  # the time range is checked in parsing
                src.frame, table, str(src.path), row_label=lambda i, f=file_rows, s=str(src.path): (s, int(f[i]) + 1)
            )
        problems += src.problems
        sources[table] = src
    _raise_if(problems)

    step(f"waiting for the lock of {store.root}")
    with store.lock(lock_timeout):
        store.recover()  # a killed run's commit is part of the store this run merges into
        return _merge(store, sources, repeated, given, now, step, notes)


def _cleaning_rules(cleaning: str | Path | CleaningConfig | bool | None) -> CleaningConfig:
    if isinstance(cleaning, CleaningConfig):
        return cleaning
    if cleaning is False:
        return CleaningConfig.disabled()
    if cleaning is True:
        cleaning = None
    return load_cleaning_config(cleaning)


def _given_files(main_file: str | Path | None, files: dict[str, str | Path | None]) -> dict[str, str | Path]:
    unknown = [t for t in files if t not in TABLES]
    if unknown:
        raise TypeError(f"ingest() got files for unknown table(s) {unknown}; tables: {', '.join(TABLES)}")
    required = [t for t, spec in TABLES.items() if spec.required_table]
    if main_file is not None:
        if files.get(required[0]) is not None:
            raise TypeError(f"ingest() got the {required[0]} file twice")
        files = {**files, required[0]: main_file}
    missing = [t for t in required if files.get(t) is None]
    if missing:
        raise DataError(f"no {' / '.join(missing)} file given: {', '.join(missing)} is required")
    # In contract order, so the report and the manifest list tables the same way every run.
    return {t: files[t] for t in TABLES if files.get(t) is not None}


def _merge(
    store: EventStore,
    sources: dict[str, Source],
    repeated: dict[str, int],
    given: dict[str, str | Path],
    now: pd.Timestamp,
    step: Callable[[str], None],
    cleaning_notes: list[str],
) -> IngestReport:
    qroot = quarantine.quarantine_root(store.root)
    quarantine.remove_unrecorded(qroot, store.manifest())  # rows of a run that never committed
    step("checking customers")
    entity = entity_table().name
    families = dict(store.families())
    frames = {t: s.frame for t, s in sources.items()}
    _raise_if(unknown_customers(store, sources, families))
    derived = entity not in frames and families.get(entity) != "present"
    if derived:
        frames = {entity: derive_customers(store, frames), **frames}
        _raise_if(check_table(frames[entity], entity, f"{entity} derived from events", now))

    results: dict[str, TableResult] = {}
    writes: dict[str, pd.DataFrame] = {}
    drops: dict[str, set[str]] = {}
    for table, frame in frames.items():
        step(f"merging {table} ({len(frame):,} rows)")
        src = sources.get(table)
        plan = plan_table(store, TABLES[table], frame, src.columns if src else None)
        results[table] = TableResult(
            table,
            str(src.path) if src else "derived",
            rows_read=src.rows_read if src else len(frame),
            added=plan.added,
            updated=plan.updated,
            already_present=plan.already_present,
            duplicate_rows_dropped=repeated.get(table, 0),
            months_written=plan.months,
        )
        if plan.frame is not None:
            writes[table] = plan.frame
        if plan.drop:
            drops[table] = plan.drop

    for table in TABLES:
        if table in sources:
            families[table] = "present"
        elif table == entity and derived:
            families[table] = "derived"
        else:
            families.setdefault(table, "absent")
        results.setdefault(table, TableResult(table, None))
    notes = [n for s in sources.values() for n in s.notes] + cleaning_notes
    report = IngestReport(store.root, {t: results[t] for t in TABLES}, families, notes, qroot)

    manifest = store.manifest()
    held = {t: quarantine.build(src.removed, src.path) for t, src in sources.items()}
    new_entries: dict[str, dict] = {}
    for table, frame in held.items():
        if frame is None:
            continue
        results[table].removed = quarantine.counts(frame)
        rel = quarantine.relative_name(table, frame)
        results[table].quarantine_file = rel
        results[table].quarantine_new = rel not in manifest.get(quarantine.MANIFEST_KEY, {})

    if report.changed or families != store.families() or any(r.quarantine_new for r in results.values()):
        for table, frame in held.items():
            if frame is not None and results[table].quarantine_new:
                step(f"quarantining {len(frame):,} {table} rows in {qroot}")
                rel, entry = quarantine.write(qroot, table, frame, manifest)
                new_entries[rel] = entry
        step(f"writing {sum(len(p) for p in writes.values()):,} rows to {store.root}")
        manifest["families"] = families
        manifest.setdefault(quarantine.MANIFEST_KEY, {}).update(new_entries)
        manifest.setdefault("ingested", []).append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": {t: str(Path(p).resolve()) for t, p in given.items()},
                "added": {t: r.added for t, r in results.items() if r.added},
                "updated": {t: r.updated for t, r in results.items() if r.updated},
                "quarantined": {e["table"]: e["rules"] for e in new_entries.values()},
                "notes": notes,
            }
        )
        # The quarantine files are in place before the commit point; a run killed in between leaves
        # files the manifest does not list, which the next ingest removes.
        store.root.mkdir(parents=True, exist_ok=True)  # a first run whose every row was quarantined
        store.replace_months(writes, manifest, drop_months=drops)
    for note in notes:
        log.info(note)
    return report


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"ingest rejected, nothing was written ({len(problems)} problem(s)):\n{lines}")
