"""``propensity forget``: remove customers from everything that holds their rows, and say what went.

Locations, in this order: the canonical event store (every table, every month partition), the raw
exports under data/raw (so a re-ingest of the demo data does not bring them back; ground truth too), the
ingest's quarantine (rows its cleaning rules removed), the Feast feature sources, the online store
(whichever ``features.online_store`` is configured, through its ``delete``), and every scores folder plus
latest.parquet and the feature snapshots kept for monitoring.

Each file is rewritten atomically (``core.io``); a file left empty is removed. MLflow holds no
customer rows by design (models log features only, monitoring logs aggregates); ``forget`` checks the
tracking store and artifacts for the ids and reports any hit instead of silently trusting that.
The ids themselves are never logged to a file or to MLflow.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from core.errors import PropensityError
from core.io import write_parquet, write_with

log = logging.getLogger("propensity.forget")


@dataclass
class ForgetReport:
    customers: int
    removed: dict[str, int] = field(default_factory=dict)  # location -> rows removed
    mlflow_hits: list[str] = field(default_factory=list)  # files/stores in MLflow that mention an id
    not_found: list[str] = field(default_factory=list)  # ids found nowhere

    def add(self, location: str, rows: int) -> None:
        if rows:
            self.removed[location] = self.removed.get(location, 0) + rows

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def _scrub_parquet(path: Path, ids: set[str], hits: set[str] | None = None, drop_empty: bool = True) -> int:
    """Remove rows whose customer_id is in ``ids``; returns rows removed. Reads only the id column first,
    so untouched files cost one column scan."""
    schema = pq.read_schema(path)
    if "customer_id" not in schema.names:
        return 0
    id_col = pq.read_table(path, columns=["customer_id"]).column("customer_id").to_pandas().astype(str)
    mask = id_col.isin(ids).to_numpy()
    if not mask.any():
        return 0
    if hits is not None:
        hits.update(id_col[mask].unique())
    df = pd.read_parquet(path)
    kept = df.loc[~mask]
    if kept.empty and drop_empty:
        path.unlink()
    else:
        write_parquet(path, kept)
    return int(mask.sum())


def _scrub_csv(path: Path, ids: set[str], hits: set[str] | None = None) -> int:
    df = pd.read_csv(path, dtype={"customer_id": str}, keep_default_na=False)
    if "customer_id" not in df.columns:
        return 0
    mask = df["customer_id"].isin(ids).to_numpy()
    if not mask.any():
        return 0
    if hits is not None:
        hits.update(df.loc[mask, "customer_id"].unique())
    kept = df.loc[~mask]
    write_with(path, lambda tmp: kept.to_csv(tmp, index=False))
    return int(mask.sum())


def forget_event_store(root: Path, ids: set[str], report: ForgetReport, hits: set[str]) -> None:
    """Remove the customers' rows from every table through the event store's own commit: under its lock
    (no ingest can interleave) and with the manifest kept in step, so `propensity validate` still passes."""
    from core.contract import TABLES
    from core.events import EventStore

    store = EventStore(root)
    with store.lock():
        for table in TABLES:
            kept_months: dict[str, pd.DataFrame] = {}
            emptied: set[str] = set()
            for part in store.partitions(table):
                ids_in_file = pq.read_table(part.path, columns=["customer_id"]).column("customer_id").to_pylist()
                if not ids.intersection(ids_in_file):
                    continue  # untouched files cost one column scan
                df = pd.read_parquet(part.path)
                mask = df["customer_id"].astype(str).isin(ids)
                hits.update(df.loc[mask, "customer_id"].astype(str).unique())
                report.add(f"event store: {table}", int(mask.sum()))
                if mask.all():
                    emptied.add(part.month)
                else:
                    kept_months[part.month] = df.loc[~mask]
            if kept_months or emptied:
                frame = pd.concat(kept_months.values(), ignore_index=True) if kept_months else None
                store.replace_months({table: frame} if frame is not None else {}, drop_months={table: emptied})


def forget_files(folder: Path, ids: set[str], report: ForgetReport, label: str, hits: set[str]) -> None:
    """Parquet and CSV files anywhere under ``folder`` that have a customer_id column."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".parquet":
            # Feature sources keep their file even when empty: Feast needs the schema.
            removed = _scrub_parquet(path, ids, hits, drop_empty=False)
        elif path.suffix == ".csv":
            removed = _scrub_csv(path, ids, hits)
        else:
            continue
        report.add(f"{label}: {path.relative_to(folder)}", removed)


def forget_online(ids: set[str], report: ForgetReport, hits: set[str]) -> None:
    """Delete the customers from the configured online store, whichever it is."""
    from features.online_store import OnlineStoreUnavailable, open_store

    store = open_store()
    try:
        deleted = store.delete(sorted(ids))
    except OnlineStoreUnavailable as exc:
        # The files are scrubbed already; forget is idempotent, so a re-run finishes the job.
        raise PropensityError(f"forget: {exc}; the customers are still in the online store, run forget again") from exc
    hits.update(deleted)
    report.add(f"online store ({store.target.kind})", sum(deleted.values()))


def check_mlflow(root: Path, ids: set[str], report: ForgetReport) -> None:
    """Look for the ids in the MLflow store and artifacts (text, Parquet, and the SQLite database)."""
    if not root.is_dir() or not ids:
        return
    pattern = re.compile(
        rb"(?<![A-Za-z0-9_-])(?:" + b"|".join(re.escape(i.encode()) for i in sorted(ids)) + rb")(?![A-Za-z0-9_-])"
    )
    for path in root.rglob("*"):
        if not path.is_file() or path.stat().st_size > 200_000_000:
            continue
        if path.suffix == ".parquet":
            try:
                df = pd.read_parquet(path)
            except Exception:  # not a table we can read: fall back to bytes below
                df = None
            if df is not None:
                text_cols = df.select_dtypes(include=["object", "string"]).columns
                if any(df[c].astype(str).isin(ids).any() for c in text_cols):
                    report.mlflow_hits.append(str(path.relative_to(root)))
                continue
        if pattern.search(path.read_bytes()):
            report.mlflow_hits.append(str(path.relative_to(root)))


def forget(customer_ids: list[str], check_tracking: bool = True) -> ForgetReport:
    """Remove ``customer_ids`` from every store (see module docstring); report rows removed per location."""
    from core.settings import project_paths
    from serving.batch import refresh_latest
    from serving.privacy import record_forgotten

    # Ids are taken as given: "ID " is another customer than "ID" (stripping would forget the wrong one).
    ids = {str(c) for c in customer_ids if str(c).strip()}
    if not ids:
        raise PropensityError("forget: give at least one customer id")
    paths = project_paths()
    report = ForgetReport(customers=len(ids))
    hits: set[str] = set()
    forget_event_store(paths.events, ids, report, hits)
    forget_files(paths.raw, ids, report, "raw exports", hits)
    forget_files(paths.quarantine, ids, report, "quarantine", hits)  # rows the ingest's cleaning removed
    forget_files(paths.feature_sources, ids, report, "feature sources", hits)
    forget_online(ids, report, hits)
    # Running services hold recent answers in memory: they drop these customers on their next poll.
    record_forgotten(ids, paths)
    # Every scores folder: the newest is what staff see, older ones feed realised-AUC monitoring.
    for as_of_dir in sorted(p for p in paths.scores.glob("*") if p.is_dir() and not p.name.startswith(".")):
        forget_files(as_of_dir, ids, report, f"scores {as_of_dir.name}", hits)
    latest = paths.scores / "latest.parquet"
    if latest.is_file():
        report.add("scores: latest.parquet", _scrub_parquet(latest, ids, hits))
        refresh_latest(paths)  # stays a copy of the (scrubbed) newest folder
    if check_tracking:
        check_mlflow(paths.mlruns, ids, report)
    report.not_found = sorted(ids - hits)
    for location, rows in report.removed.items():
        log.info("removed %d row(s) from %s", rows, location)
    if report.not_found:
        log.warning("%d of %d customer(s) were found nowhere", len(report.not_found), len(ids))
    if report.mlflow_hits:
        log.warning("MLflow mentions a forgotten id in: %s", ", ".join(report.mlflow_hits))
    return report
