"""``validate_store()`` (``propensity validate``): re-check a whole event store.

Every partition file against the table's schema, each row in the partition of its month, ids unique
across months, every event's customer in customers, the manifest's families against the files, and the
manifest's record of partition files (size and SHA-256) against the files on disk, which finds a commit
left half-done and files changed behind the store's back; and the quarantine's files against the
manifest's record of them (the rows per cleaning rule are in each table's summary). Runs under the store lock, so it never sees
a commit in the middle; it reports what a killed run left and repairs nothing (the next ingest does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import ENTITY_KEY, TABLES, entity_table
from core.errors import DataError
from core.events import EventStore, month_keys
from core.schemas import Problem, check_table, problem_from_mask
from pipelines.ingest import quarantine
from pipelines.ingest.plan import concat


@dataclass
class TableSummary:
    table: str
    status: str
    rows: int = 0
    customers: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    months: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # cleaning rule -> rows in the quarantine


def validate_store(
    store: str | Path | EventStore | None = None,
    now: pd.Timestamp | None = None,
    lock_timeout: float | None = None,
) -> list[TableSummary]:
    """Re-check every month file of a store; see the module docstring.

    Returns one summary per table; raises DataError naming the partition files and rows when broken.
    """
    from core.settings import project_paths

    if not isinstance(store, EventStore):
        store = EventStore(Path(store) if store is not None else project_paths().events)
    if not store.root.is_dir():
        raise DataError(f"{store.root}: no event store here; run `propensity ingest` first")
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    with store.lock(lock_timeout):
        problems, summaries = _check(store, now)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"event store {store.root} is invalid ({len(problems)} problem(s)):\n{lines}")
    return summaries


def _check(store: EventStore, now: pd.Timestamp) -> tuple[list[Problem], list[TableSummary]]:
    families = store.families()
    problems = [Problem(str(m.path), None, m.what) for m in store.check_manifest()]
    held, found = quarantine.on_disk(quarantine.quarantine_root(store.root), store.manifest())
    problems += found
    summaries: list[TableSummary] = []
    customer_ids: pd.Index | None = None
    frames: dict[str, tuple[pd.DataFrame, Callable]] = {}
    for table, spec in TABLES.items():
        status = families.get(table, "absent")
        parts = store.partitions(table)
        if status == "absent" and parts:
            problems.append(
                Problem(str(store.table_dir(table)), None, "holds files but the manifest says absent")
            )
        if status != "absent" and not parts:
            problems.append(
                Problem(str(store.table_dir(table)), None, f"manifest says {status} but no files")
            )
        if not parts:
            summaries.append(TableSummary(table, status, quarantined=held.get(table, {})))
            continue
        files = [p.path for p in parts]
        frames_read = [pd.read_parquet(f) for f in files]
        offsets = np.cumsum([0] + [len(p) for p in frames_read])
        df = concat(frames_read)

        def row_label(i: int, files=files, offsets=offsets) -> tuple[str, int]:
            k = int(np.searchsorted(offsets, i, side="right")) - 1
            return str(files[k]), i - int(offsets[k]) + 1

        problems += check_table(df, table, str(store.table_dir(table)), now, row_label)
        if spec.time_column in df.columns and pd.api.types.is_datetime64_any_dtype(df[spec.time_column]):
            expected = np.repeat([p.month for p in parts], [len(p) for p in frames_read])
            wrong = month_keys(df[spec.time_column]).to_numpy() != expected
            problems += _labelled(
                problem_from_mask(
                    "", spec.time_column, "row in the wrong month partition", wrong, df[spec.time_column]
                ),
                row_label,
            )
        frames[table] = (df, row_label)
        summaries.append(
            TableSummary(
                table,
                status,
                rows=len(df),
                customers=int(df[ENTITY_KEY].nunique()),
                first=df[spec.time_column].min(),
                last=df[spec.time_column].max(),
                months=len(parts),
                quarantined=held.get(table, {}),
            )
        )
        if spec.entity:
            customer_ids = pd.Index(df[ENTITY_KEY])
    if customer_ids is not None:
        entity = entity_table().name
        for table, (df, row_label) in frames.items():
            if table != entity:
                problems += _labelled(
                    problem_from_mask(
                        "",
                        ENTITY_KEY,
                        f"unknown customer (not in {entity})",
                        ~df[ENTITY_KEY].isin(customer_ids),
                        df[ENTITY_KEY],
                    ),
                    row_label,
                )
    return problems, summaries


def _labelled(problem: Problem | None, row_label: Callable) -> list[Problem]:
    """Point a problem found on a concatenated store table at the partition file of its first row."""
    if problem is None:
        return []
    labelled = [row_label(r - 1) for r in problem.rows]
    src = labelled[0][0]
    keep = [i for i, (s, _) in enumerate(labelled) if s == src]  # the rows that live in that same file
    rows = [labelled[i][1] for i in keep]
    return [
        Problem(src, problem.column, problem.what, problem.count, rows, [problem.values[i] for i in keep])
    ]
