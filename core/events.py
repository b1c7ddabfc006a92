"""The canonical event store: validated Parquet, one folder per table, partitioned by month.

Layout (this module is the only one that knows it; everyone else asks ``EventStore``)::

    <root>/manifest.json                       families, a log of each ingest, every partition file
    <root>/<table>/month=YYYY-MM/data.parquet  rows of that table whose time column falls in the month
    <parent>/.<root name>.lock                 held by the one process writing the store
    <parent>/.<root name>.staging-<id>/        a commit being written (gone when it is done)

**One writer at a time.** ``lock()`` takes an exclusive ``flock`` on the lock file, so the kernel frees
it when its process dies; the file names the holder (pid, since when) for anyone waiting. A writer
holds it from reading the store to the end of its commit, so two ingests cannot plan on the same
state and overwrite each other's months.

**A commit is atomic as a whole.** ``replace_months`` writes every new month file and the new manifest
(which lists every partition file with its size and SHA-256) into a staging folder, then marks the
staging folder *prepared* (``commit.json``), then moves the files in, dropped months out, and the
manifest last. A run killed after the mark is completed by the next writer (``recover``); one killed
before it left only a staging folder, which the next writer removes. ``check_manifest`` compares the
manifest with the files, so ``propensity validate`` sees a half-done commit or a file changed behind
the store's back.

Timestamps are stored as ``timestamp[us, UTC]`` (DuckDB 2 cannot read nanosecond Parquet timestamps).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import TABLES, TIMESTAMP, Table
from core.errors import PropensityError

log = logging.getLogger("propensity.events")

MANIFEST = "manifest.json"
PARTITION = "month"  # hive-style partition key: <table>/month=YYYY-MM/
DATA_FILE = "data.parquet"
COMMIT_MARK = "commit.json"  # in a staging folder: every file is written, the commit may be applied
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one before giving up


class StoreLockedError(PropensityError):
    """Another process holds the store lock for longer than this one was willing to wait."""


def to_canonical_timestamps(df: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Cast the table's timestamp columns to datetime64[us, UTC] (in place on a copy)."""
    df = df.copy()
    for col in table.columns:
        if col.kind == TIMESTAMP and col.name in df.columns:
            df[col.name] = pd.to_datetime(df[col.name], utc=True).astype("datetime64[us, UTC]")
    return df


def month_keys(times: pd.Series) -> pd.Series:
    """'YYYY-MM' (UTC) of each timestamp: the month partition a row belongs to.

    Vectorised through numpy month units: ``Series.dt.strftime`` formats row by row (about 20 s for
    3 million page views), this takes well under a second.
    """
    utc = pd.to_datetime(times, utc=True).dt.tz_localize(None).to_numpy()
    codes, uniques = pd.factorize(utc.astype("datetime64[M]"))
    labels = np.asarray([str(u)[:7] for u in np.asarray(uniques, dtype="datetime64[M]")], dtype=object)
    return pd.Series(labels[codes] if len(labels) else np.empty(0, dtype=object), index=times.index)


@dataclass(frozen=True)
class Partition:
    """One Parquet file of a table and the month it holds."""

    table: str
    month: str
    path: Path


@dataclass(frozen=True)
class Mismatch:
    """A disagreement between the manifest and the files (or a commit left half-done)."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def file_record(path: Path, rows: int) -> dict:
    """What the manifest keeps of a partition file: rows, size and content hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"rows": int(rows), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _fsync(path: Path) -> None:
    """Flush a written file (or a folder's entries) to disk before the commit relies on it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Locks this process holds: lock path -> [thread id, depth]. A thread that holds a store's lock may take
# it again (ingest holds it and calls replace_months, which takes it too); other threads wait.
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


@dataclass(frozen=True)
class EventStore:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- layout --------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def month_file(self, table: str, month: str) -> Path:
        return self.table_dir(table) / f"{PARTITION}={month}" / DATA_FILE

    def partitions(self, table: str) -> list[Partition]:
        """Every Parquet file of the table with its month, in month order."""
        found = []
        for path in sorted(self.table_dir(table).glob(f"{PARTITION}=*/*.parquet")):
            found.append(Partition(table, path.parent.name.split("=", 1)[1], path))
        return found

    def partition_files(self, table: str) -> list[Path]:
        return [p.path for p in self.partitions(table)]

    def columns(self, table: str) -> list[str]:
        """Column names of the table as stored (empty when the table has no file)."""
        import pyarrow.parquet as pq

        files = self.partition_files(table)
        return list(pq.read_schema(files[0]).names) if files else []

    def has(self, table: str) -> bool:
        """True when the table holds at least one month file."""
        return any(self.table_dir(table).glob(f"{PARTITION}=*/*.parquet"))

    def glob(self, table: str) -> str:
        """Glob of the table's Parquet files, for DuckDB's ``read_parquet``."""
        return str(self.table_dir(table) / f"{PARTITION}=*" / "*.parquet")

    def months(self, table: str) -> list[str]:
        folders = self.table_dir(table).glob(f"{PARTITION}=*")
        return sorted(p.name.split("=", 1)[1] for p in folders if p.is_dir())

    @property
    def lock_path(self) -> Path:
        return self.root.parent / f".{self.root.name}.lock"

    def _staging_dirs(self) -> list[Path]:
        return sorted(self.root.parent.glob(f".{self.root.name}.staging-*"))

    # ---- reading -------------------------------------------------------------------------------
    def read_months(self, table: str, months: list[str] | set[str]) -> pd.DataFrame:
        """Rows of the given month partitions (months without a file are skipped)."""
        files = [self.month_file(table, m) for m in sorted(months)]
        frames = [pd.read_parquet(f) for f in files if f.is_file()]
        if not frames:
            return self.read(table).iloc[0:0]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def column_by_month(self, table: str, column: str) -> pd.DataFrame:
        """One column of the whole table with the month partition of each row (columns: value, month).

        Reads only that column, so finding which months hold given ids stays cheap on a big store.
        """
        frames = []
        for part in self.partitions(table):
            values = pd.read_parquet(part.path, columns=[column])[column]
            frames.append(pd.DataFrame({"value": values, "month": part.month}))
        if not frames:
            return pd.DataFrame({"value": pd.Series(dtype=object), "month": pd.Series(dtype=object)})
        return pd.concat(frames, ignore_index=True)

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The whole table as a DataFrame (empty, with the canonical columns, when absent)."""
        spec = TABLES[table]
        files = self.partition_files(table)
        if not files:
            empty = pd.DataFrame({c: pd.Series(dtype="object") for c in (columns or spec.names)})
            return to_canonical_timestamps(empty, spec)
        frames = [pd.read_parquet(f, columns=columns) for f in files]
        return pd.concat(frames, ignore_index=True)

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.is_file():
            return {"families": {t: "absent" for t in TABLES}, "ingested": []}
        return json.loads(path.read_text())

    def families(self) -> dict[str, str]:
        """Table -> 'present' | 'derived' | 'absent'."""
        return self.manifest().get("families", {t: "absent" for t in TABLES})

    def quarantine_counts(self) -> dict[str, dict[str, int]]:
        """Table -> cleaning rule -> rows the ingest quarantined, over every quarantine file the manifest
        records (``manifest["quarantine"]``: one entry per file, written by the ingest's commit)."""
        totals: dict[str, dict[str, int]] = {}
        for entry in self.manifest().get("quarantine", {}).values():
            per_table = totals.setdefault(entry["table"], {})
            for rule, rows in entry.get("rules", {}).items():
                per_table[rule] = per_table.get(rule, 0) + int(rows)
        return totals

    # ---- the lock --------------------------------------------------------------------------------
    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the store's write lock; wait up to ``timeout`` seconds (default DEFAULT_LOCK_TIMEOUT).

        Raises StoreLockedError naming the holder's pid and start time when it does not come free.
        A lock whose holder died is free (the kernel drops a dead process's ``flock``): it is taken over
        and the takeover logged. Reentrant within one thread.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.lock_path.resolve())
        me = threading.get_ident()
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None and held[0] == me:
                held[1] += 1
                reentered = True
            else:
                reentered = False
        if reentered:
            try:
                yield
            finally:
                with _HELD_GUARD:
                    _HELD[key][1] -= 1
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, DEFAULT_LOCK_TIMEOUT if timeout is None else timeout)
            left = _holder(fd)
            if left is not None:
                # A clean release empties the file: a record left in it belongs to a process killed
                # while it held the lock. The kernel already freed the lock itself.
                log.info(
                    "event store %s: the lock of %s was left behind by a killed run; taking it over",
                    self.root,
                    left,
                )
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            with _HELD_GUARD:
                _HELD[key] = [me, 1]
            try:
                yield
            finally:
                with _HELD_GUARD:
                    del _HELD[key]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = _holder(fd) or "another process"
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreLockedError(
                        f"event store {self.root} is locked by {holder}; gave up after {timeout:g} s "
                        "(an ingest or validate is using it: wait for it to finish, or give a longer --lock-timeout)"
                    ) from None
                if not told:
                    log.info("event store %s is locked by %s; waiting up to %g s", self.root, holder, timeout)
                    told = True
                time.sleep(min(0.05, left))

    # ---- writing -------------------------------------------------------------------------------
    def replace_months(
        self,
        tables: dict[str, pd.DataFrame],
        manifest: dict | None = None,
        drop_months: dict[str, set[str]] | None = None,
    ) -> None:
        """Atomically replace, for each table, every month partition that ``tables[table]`` has rows in.

        Months not present in the new frames are left alone. The caller passes the *full* content of
        each touched month (existing rows merged with new ones). ``manifest`` is the new manifest (the
        current one when None); its record of partition files is kept up to date either way.
        ``drop_months`` names partitions to remove (a month whose last row moved to another month on an
        update). Takes the store lock (the caller may already hold it) and first completes or removes
        what a killed run left behind. See the module docstring for the commit steps.
        """
        drops = {t: set(m) for t, m in (drop_months or {}).items() if m}
        with self.lock():
            self._recover()
            records = self._recorded_partitions()
            staging = self.root.parent / f".{self.root.name}.staging-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            prepared = False
            try:
                moves: list[str] = []
                for name, df in tables.items():
                    spec = TABLES[name]
                    df = to_canonical_timestamps(df, spec)
                    for key, part in df.groupby(month_keys(df[spec.time_column]), sort=True):
                        if key in drops.get(name, set()):
                            raise ValueError(f"{name}: month {key} is both written and dropped")
                        rel = str(self.month_file(name, key).relative_to(self.root))
                        src = staging / rel
                        src.parent.mkdir(parents=True, exist_ok=True)
                        part.sort_values(spec.time_column, kind="stable").to_parquet(src, index=False)
                        _fsync(src)
                        records[rel] = file_record(src, len(part))
                        moves.append(rel)
                dropped: list[str] = []
                for name, months in drops.items():
                    for key in sorted(months):
                        folder = self.month_file(name, key).parent
                        rel = str(folder.relative_to(self.root))
                        dropped.append(rel)
                        records = {k: v for k, v in records.items() if not k.startswith(rel + "/")}
                new_manifest = dict(self.manifest() if manifest is None else manifest)
                new_manifest["partitions"] = dict(sorted(records.items()))
                (staging / MANIFEST).write_text(json.dumps(new_manifest, indent=2, default=str))
                _fsync(staging / MANIFEST)
                mark = {
                    "moves": moves,
                    "drops": dropped,
                    "pid": os.getpid(),
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                tmp = staging / f".{COMMIT_MARK}.tmp"
                tmp.write_text(json.dumps(mark, indent=2))
                _fsync(tmp)
                os.replace(tmp, staging / COMMIT_MARK)  # the commit point
                _fsync(staging)
                prepared = True
                self._apply(staging)
            finally:
                if not prepared:
                    shutil.rmtree(staging, ignore_errors=True)

    def _apply(self, staging: Path) -> None:
        """Carry out a prepared commit. Idempotent: a step already done is skipped, so a commit killed
        half-way is finished by calling this again."""
        mark = json.loads((staging / COMMIT_MARK).read_text())
        for rel in mark["moves"]:
            src, dst = staging / rel, self.root / rel
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)  # atomic per file on one filesystem
        for rel in mark["drops"]:
            folder = self.root / rel
            if folder.is_dir():
                # Move aside first (atomic), then delete what is no longer part of the store.
                aside = staging / "dropped" / rel
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(folder, aside)
        if (staging / MANIFEST).exists():
            os.replace(staging / MANIFEST, self.root / MANIFEST)  # last: the store now says what it holds
        shutil.rmtree(staging, ignore_errors=True)

    def pending_commits(self) -> list[Path]:
        """Staging folders of prepared commits that did not finish (their writer died or failed)."""
        return [s for s in self._staging_dirs() if (s / COMMIT_MARK).is_file()]

    def recover(self) -> None:
        """Finish what killed runs left: complete prepared commits, remove unprepared staging folders."""
        with self.lock():
            self._recover()

    def _recover(self) -> None:
        for staging in self._staging_dirs():  # the lock is held: no live writer owns any of them
            if (staging / COMMIT_MARK).is_file():
                log.info("event store %s: completing the commit a killed run left in %s", self.root, staging)
                self._apply(staging)
            else:
                log.info(
                    "event store %s: removing %s, left by a run killed before its commit", self.root, staging
                )
                shutil.rmtree(staging, ignore_errors=True)

    def _recorded_partitions(self) -> dict[str, dict]:
        """The manifest's record of partition files; built from the files for a store written before
        the record existed (a one-off: every later commit keeps it)."""
        recorded = self.manifest().get("partitions")
        if recorded is not None:
            return dict(recorded)
        import pyarrow.parquet as pq

        return {
            str(p.path.relative_to(self.root)): file_record(p.path, pq.ParquetFile(p.path).metadata.num_rows)
            for table in TABLES
            for p in self.partitions(table)
        }

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest (for stores written by other tools, e.g. the benchmarks)."""
        from core.io import write_json

        with self.lock():
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.root / MANIFEST, manifest)

    # ---- checking --------------------------------------------------------------------------------
    def check_manifest(self) -> list[Mismatch]:
        """Where the manifest and the partition files disagree, and commits left half-done.

        A manifest without a record of its files (a store written before the record existed, or by
        another tool) has nothing to compare; its next commit records them.
        """
        problems = [
            Mismatch(s, "an interrupted commit: its files are not all in place; the next ingest completes it")
            for s in self.pending_commits()
        ]
        recorded = self.manifest().get("partitions")
        if recorded is None:
            return problems
        on_disk = {str(p.path.relative_to(self.root)): p.path for t in TABLES for p in self.partitions(t)}
        for rel, entry in sorted(recorded.items()):
            path = self.root / rel
            if rel not in on_disk:
                problems.append(Mismatch(path, "listed in the manifest but missing"))
                continue
            actual = file_record(path, entry.get("rows", 0))
            if (actual["bytes"], actual["sha256"]) != (entry.get("bytes"), entry.get("sha256")):
                problems.append(
                    Mismatch(
                        path,
                        f"differs from the manifest ({actual['bytes']:,} bytes, manifest "
                        f"{entry.get('bytes', 0):,}; SHA-256 differs): changed outside an ingest",
                    )
                )
        for rel in sorted(set(on_disk) - set(recorded)):
            problems.append(Mismatch(on_disk[rel], "not in the manifest (written outside an ingest commit)"))
        return problems


def _holder(fd: int) -> str | None:
    """'pid N since T' from the lock file's record, or None when it is empty (nobody recorded)."""
    try:
        raw = os.pread(fd, 4096, 0)
        if not raw.strip():
            return None
        record = json.loads(raw)
        host = "" if record.get("host") in (None, socket.gethostname()) else f" on {record['host']}"
        return f"pid {record['pid']}{host} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
