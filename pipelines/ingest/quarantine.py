"""The quarantine: every row a cleaning rule removed, kept beside the store instead of lost.

Layout (``data/quarantine/`` for the project's store, ``<store>-quarantine/`` beside any other)::

    <quarantine>/<table>/<digest>.parquet    the rows one file lost to the rules, one file per input file

Each row keeps the columns it had when the rule removed it (canonical names; an order line its line
columns), plus ``rule`` (the rule's name), ``detail`` (why), ``source`` (the input file) and
``source_row`` (its row in that file, header not counted; an order made of lines: its first line).

The file name is a digest of the rows (not of where they came from), so ingesting the same file again
finds its quarantine file already recorded and writes nothing. The store's manifest records every
quarantine file with its counts per rule (``manifest["quarantine"]``): a file is written (atomically)
under the store lock just before the store's commit, and the commit's manifest lists it. A file the
manifest does not list was left by a run killed before its commit; the next ingest removes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.io import write_parquet
from core.schemas import Problem
from pipelines.ingest.cleaning import DETAIL_COLUMN, RULE_COLUMN

log = logging.getLogger("propensity.ingest")

SOURCE_COLUMN, ROW_COLUMN = "source", "source_row"
MANIFEST_KEY = "quarantine"


def quarantine_root(store_root: Path) -> Path:
    """Where the quarantine of the store at ``store_root`` lives (ProjectPaths.quarantine for the
    project's own ``data/events``)."""
    from core.settings import project_paths

    store_root = Path(store_root)
    paths = project_paths()
    if store_root.resolve() == paths.events.resolve():
        return paths.quarantine
    name = "quarantine" if store_root.name == "events" else f"{store_root.name}-quarantine"
    return store_root.parent / name


def build(removed: Iterable[pd.DataFrame], source: Path) -> pd.DataFrame | None:
    """One quarantine frame from the rules' removals (index = file row - 1), or None when empty."""
    frames = [f for f in removed if len(f)]
    if not frames:
        return None
    rows = pd.concat(frames) if len(frames) > 1 else frames[0]
    rows = rows.sort_index(kind="stable")
    rows.insert(2, SOURCE_COLUMN, str(Path(source).resolve()))
    rows.insert(3, ROW_COLUMN, (rows.index.to_numpy() + 1).astype(np.int64))
    rows = rows.reset_index(drop=True)
    for col in rows.columns:  # a column mixing types (numbers and text after a concat) is stored as text
        if rows[col].dtype == object and pd.api.types.infer_dtype(rows[col], skipna=True).startswith("mixed"):
            rows[col] = rows[col].astype("string").astype(object).where(rows[col].notna(), None)
    return rows


def digest(frame: pd.DataFrame) -> str:
    """A digest of the rows without their source path: the same rows make the same file name."""
    content = frame.drop(columns=[SOURCE_COLUMN])
    h = hashlib.sha256("\x1f".join(map(str, content.columns)).encode())
    h.update(pd.util.hash_pandas_object(content, index=False).to_numpy().tobytes())
    return h.hexdigest()[:20]


def counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame[RULE_COLUMN].value_counts(sort=False).sort_index().items()}


def relative_name(table: str, frame: pd.DataFrame) -> str:
    return f"{table}/{digest(frame)}.parquet"


def write(root: Path, table: str, frame: pd.DataFrame, manifest: dict) -> tuple[str, dict | None]:
    """Write ``frame`` as the table's quarantine file unless the manifest records it already.

    Returns (relative name, the manifest entry to add, or None when it is recorded already). The file
    is written atomically (``core.io``); the caller's commit makes it part of the record.
    """
    rel = relative_name(table, frame)
    if rel in manifest.get(MANIFEST_KEY, {}):
        return rel, None
    write_parquet(root / rel, frame)
    entry = {
        "table": table,
        "source": frame[SOURCE_COLUMN].iloc[0],
        "rows": len(frame),
        "rules": counts(frame),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return rel, entry


def files(root: Path) -> list[str]:
    """Quarantine files under ``root``, relative (``<table>/<digest>.parquet``)."""
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.parquet") if not p.name.startswith("."))


def remove_unrecorded(root: Path, manifest: dict) -> list[str]:
    """Delete quarantine files the manifest does not list (a run killed between writing them and its
    commit: its rows never reached the store either). Call under the store lock."""
    recorded = manifest.get(MANIFEST_KEY, {})
    gone = [rel for rel in files(root) if rel not in recorded]
    for rel in gone:
        log.info("quarantine %s: removing %s, left by a run killed before its commit", root, rel)
        (root / rel).unlink(missing_ok=True)
    return gone


def on_disk(root: Path, manifest: dict) -> tuple[dict[str, dict[str, int]], list[Problem]]:
    """Rows per table and rule in the quarantine files, and where files and manifest disagree."""
    import pyarrow.parquet as pq

    recorded = manifest.get(MANIFEST_KEY, {})
    found = files(root)
    totals: dict[str, dict[str, int]] = {}
    problems = []
    for rel in found:
        table = rel.split("/", 1)[0]
        rules = pq.read_table(root / rel, columns=[RULE_COLUMN]).column(RULE_COLUMN).to_pandas()
        per_table = totals.setdefault(table, {})
        for rule, n in rules.value_counts(sort=False).items():
            per_table[str(rule)] = per_table.get(str(rule), 0) + int(n)
        if rel not in recorded:
            problems.append(
                Problem(str(root / rel), None, "quarantine file not in the manifest (left by a run killed "
                        "before its commit; the next ingest removes it)")
            )
    for rel in sorted(set(recorded) - set(found)):
        problems.append(Problem(str(root / rel), None, "listed in the manifest's quarantine but missing"))
    return {t: dict(sorted(r.items())) for t, r in sorted(totals.items())}, problems


__all__ = [
    "DETAIL_COLUMN",
    "MANIFEST_KEY",
    "ROW_COLUMN",
    "RULE_COLUMN",
    "SOURCE_COLUMN",
    "build",
    "counts",
    "files",
    "on_disk",
    "quarantine_root",
    "remove_unrecorded",
    "write",
]
