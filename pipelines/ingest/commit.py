"""``ingest()``: read and validate every file given, then, holding the store lock, check customers,
plan the merge and commit it in one atomic step (``EventStore.replace_months``).

The files are read and validated before the lock is taken (that is the slow part and needs no store);
everything that reads the store happens under the lock, so a second ingest plans on the state the first
one committed and no run's rows are lost.
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
from pipelines.ingest.columns import ColumnMap, load_column_map
from pipelines.ingest.parse import Source, read_source
from pipelines.ingest.plan import derive_customers, drop_repeated_rows, plan_table, unknown_customers

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


@dataclass
class IngestReport:
    store: Path
    tables: dict[str, TableResult]
    families: dict[str, str]  # table -> present | derived | absent, after this run
    notes: list[str] = field(default_factory=list)

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
    **files: str | Path | None,
) -> IngestReport:
    """Validate the given exports and merge them into the event store; see the package docstring.

    Files are given by table name (``orders=...``, ``customers=...``, one keyword per table of
    ``core.contract.TABLES``; None means not given); ``main_file`` is the required table's file
    (orders) given positionally. ``store`` defaults to ``data/events`` of the project; ``now`` (UTC) is
    the reference for "future" timestamps; ``progress`` receives a short text as each stage starts (the
    CLI shows it); ``lock_timeout`` is how long to wait for another writer of the store (seconds, default
    ``core.events.DEFAULT_LOCK_TIMEOUT``).
    """
    from core.settings import project_paths

    given = _given_files(main_file, files)
    step = progress or (lambda _msg: None)
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    if not isinstance(store, EventStore):
        store = EventStore(Path(store) if store is not None else project_paths().events)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")

    sources: dict[str, Source] = {}
    rows_in_file: dict[str, int] = {}
    problems: list[Problem] = []
    for table, path in given.items():
        step(f"reading {table} from {Path(path).name}")
        src = read_source(path, table, cmap, now)
        if src.frame is not None:
            problems += check_table(src.frame, table, str(src.path))  # the time range is checked in parsing
            rows_in_file[table] = len(src.frame)
            if TABLES[table].id_column is None:  # no id: a row repeated in the file is one event
                src.frame = drop_repeated_rows(src.frame)
        problems += src.problems
        sources[table] = src
    _raise_if(problems)

    step(f"waiting for the lock of {store.root}")
    with store.lock(lock_timeout):
        store.recover()  # a killed run's commit is part of the store this run merges into
        return _merge(store, sources, rows_in_file, given, now, step)


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
    rows_in_file: dict[str, int],
    given: dict[str, str | Path],
    now: pd.Timestamp,
    step: Callable[[str], None],
) -> IngestReport:
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
        rows_read = rows_in_file.get(table, len(frame))
        results[table] = TableResult(
            table,
            str(src.path) if src else "derived",
            rows_read=rows_read,
            added=plan.added,
            updated=plan.updated,
            already_present=plan.already_present,
            duplicate_rows_dropped=rows_read - len(frame),
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
    notes = [n for s in sources.values() for n in s.notes]
    report = IngestReport(store.root, {t: results[t] for t in TABLES}, families, notes)

    if report.changed or families != store.families():
        step(f"writing {sum(len(p) for p in writes.values()):,} rows to {store.root}")
        manifest = store.manifest()
        manifest["families"] = families
        manifest.setdefault("ingested", []).append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": {t: str(Path(p).resolve()) for t, p in given.items()},
                "added": {t: r.added for t, r in results.items() if r.added},
                "updated": {t: r.updated for t, r in results.items() if r.updated},
                "notes": notes,
            }
        )
        store.replace_months(writes, manifest, drop_months=drops)
    for note in notes:
        log.info(note)
    return report


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"ingest rejected, nothing was written ({len(problems)} problem(s)):\n{lines}")
