"""Several writers, killed runs and a store that no longer matches its manifest: real processes.

One writer at a time holds the store lock (the other waits, or gives up after its timeout naming the
holder); a lock left by a dead process is taken over; a commit killed half-way is completed by the next
writer; staging folders of killed runs are removed; `validate` compares the manifest with the files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.errors import DataError
from core.events import EventStore, StoreLockedError
from core.settings import REPO_ROOT
from pipelines.ingest import ingest, validate_store

from .conftest import tiny_event_log, write_table


def run_python(script: str, *args: str, wait: bool = True, **kwargs):
    """``python -c script args`` in the checkout (a real, separate process)."""
    cmd = [sys.executable, "-c", script, *map(str, args)]
    if wait:
        return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    return subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def orders_file(folder: Path, prefix: str, n: int = 40) -> Path:
    """``n`` orders of ``n`` customers named ``prefix``..., spread over January and February 2026."""
    frame = pd.DataFrame(
        {
            "order_id": [f"{prefix}-o{i}" for i in range(n)],
            "customer_id": [f"{prefix}-c{i}" for i in range(n)],
            "ordered_at": pd.date_range("2026-01-03", "2026-02-25", periods=n, tz="UTC"),
            "amount": 5.0,
        }
    )
    return write_table(frame, folder, f"orders-{prefix}", "csv")


# Both children plan their merge, then sleep before committing: without a lock each commits its own
# January and February over the other's, and one run's rows are lost.
RACER = """
import sys, time
from pathlib import Path
import core.events as events
from pipelines.ingest import ingest

store, orders, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
commit = events.EventStore.replace_months

def slow_commit(self, *args, **kwargs):
    time.sleep(1.0)
    return commit(self, *args, **kwargs)

events.EventStore.replace_months = slow_commit
while not go.exists():
    time.sleep(0.005)
ingest(orders, store=store, lock_timeout=60)
"""


def test_two_concurrent_ingests_both_land(tmp_path):
    store_dir = tmp_path / "events"
    go = tmp_path / "go"
    files = [orders_file(tmp_path / "raw", p) for p in ("a", "b")]
    racers = [run_python(RACER, store_dir, f, go, wait=False) for f in files]
    time.sleep(0.5)  # let both import pandas and wait at the barrier
    go.touch()
    for racer in racers:
        _out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err

    store = EventStore(store_dir)
    orders = store.read("orders")
    assert len(orders) == 80 and orders["order_id"].is_unique  # no row lost
    assert set(store.read("customers")["customer_id"]) == set(orders["customer_id"])
    assert len(store.manifest()["ingested"]) == 2
    validate_store(store_dir)


HOLDER = """
import sys, time
from core.events import EventStore

with EventStore(sys.argv[1]).lock(timeout=5):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(store_dir: Path, seconds: float) -> subprocess.Popen:
    holder = run_python(HOLDER, store_dir, seconds, wait=False)
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    return holder


def test_a_second_writer_gives_up_after_its_timeout_naming_the_holder(tmp_path, event_log):
    store_dir = tmp_path / "events"
    path = write_table(event_log["orders"], tmp_path, "orders", "csv")
    holder = hold_lock(store_dir, 60)
    try:
        started = time.monotonic()
        with pytest.raises(StoreLockedError) as err:
            ingest(path, store=store_dir, lock_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 10
        assert f"event store {store_dir} is locked by pid {holder.pid} since " in str(err.value)
        assert not EventStore(store_dir).has("orders")
    finally:
        holder.kill()
        holder.wait()


def test_a_second_writer_waits_for_the_first(tmp_path, event_log):
    store_dir = tmp_path / "events"
    path = write_table(event_log["orders"], tmp_path, "orders", "csv")
    holder = hold_lock(store_dir, 1.5)
    try:
        started = time.monotonic()
        report = ingest(path, store=store_dir, lock_timeout=30)
        assert time.monotonic() - started > 1.0  # it waited for the holder to let go
        assert report.tables["orders"].added == 4
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, event_log, caplog):
    store_dir = tmp_path / "events"
    path = write_table(event_log["orders"], tmp_path, "orders", "csv")
    holder = hold_lock(store_dir, 60)
    holder.kill()  # SIGKILL: no chance to release anything
    holder.wait()
    with caplog.at_level("INFO", logger="propensity"):
        report = ingest(path, store=store_dir, lock_timeout=0.5)
    assert report.tables["orders"].added == 4
    assert any(
        f"pid {holder.pid}" in r.getMessage() and "taking it over" in r.getMessage() for r in caplog.records
    )


# The child dies (SIGKILL) right after the first month file of its commit is swapped into the store.
KILLED = """
import os, signal, sys
import core.events as events
from pipelines.ingest import ingest

store = sys.argv[1]
real_replace = os.replace

def replace_then_die(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if str(dst).startswith(store) and str(dst).endswith(".parquet"):
        os.kill(os.getpid(), signal.SIGKILL)

events.os.replace = replace_then_die
ingest(sys.argv[2], store=store)
"""


def test_a_commit_killed_half_way_is_completed_by_the_next_writer(tmp_path):
    store_dir = tmp_path / "events"
    ingest(orders_file(tmp_path / "raw", "a"), store=store_dir)
    killed = run_python(KILLED, store_dir, orders_file(tmp_path / "raw", "b"))
    assert killed.returncode == -9, killed.stderr

    with pytest.raises(DataError, match="interrupted"):
        validate_store(store_dir)  # half-committed: validate says so rather than passing

    ingest(orders_file(tmp_path / "raw", "c"), store=store_dir)

    orders = EventStore(store_dir).read("orders")
    assert len(orders) == 120 and orders["order_id"].is_unique  # a, the completed b, and c
    assert not list(tmp_path.glob(".events.staging-*"))
    validate_store(store_dir)


def test_staging_folders_of_killed_runs_are_removed(tmp_path, event_log):
    store_dir = tmp_path / "events"
    path = write_table(event_log["orders"], tmp_path, "orders", "csv")
    ingest(path, store=store_dir)
    leftover = tmp_path / ".events.staging-0000dead" / "orders" / "month=2026-01"
    leftover.mkdir(parents=True)
    (leftover / "data.parquet").write_bytes(b"half written")

    ingest(
        write_table(event_log["orders"].assign(order_id=list("wxyz")), tmp_path / "b", "orders", "csv"),
        store=store_dir,
    )

    assert not list(tmp_path.glob(".events.staging-*"))
    assert len(EventStore(store_dir).read("orders")) == 8


# ---- validate compares the manifest with the partition files --------------------------------------------------------
@pytest.fixture
def store_dir(tmp_path) -> Path:
    log = tiny_event_log()
    paths = {t: write_table(df, tmp_path / "raw", t, "parquet") for t, df in log.items()}
    store_dir = tmp_path / "events"
    ingest(paths.pop("orders"), **paths, store=store_dir)
    return store_dir


def test_validate_finds_a_partition_file_missing_from_the_disk(store_dir):
    month_file = EventStore(store_dir).month_file("orders", "2026-02")
    month_file.unlink()
    with pytest.raises(DataError) as err:
        validate_store(store_dir)
    assert f"{month_file}: listed in the manifest but missing" in str(err.value)


def test_validate_finds_a_file_the_manifest_does_not_list(store_dir):
    store = EventStore(store_dir)
    extra = store.month_file("orders", "2026-03")
    extra.parent.mkdir(parents=True)
    rows = (
        store.read("orders").iloc[[0]].assign(order_id="o9", ordered_at=pd.Timestamp("2026-03-02", tz="UTC"))
    )
    rows.to_parquet(extra, index=False)
    with pytest.raises(DataError) as err:
        validate_store(store_dir)
    assert f"{extra}: not in the manifest" in str(err.value)


def test_validate_finds_a_file_that_changed_since_its_commit(store_dir):
    month_file = EventStore(store_dir).month_file("orders", "2026-01")
    rows = pd.read_parquet(month_file)
    rows.assign(amount=rows["amount"] + 1).to_parquet(month_file, index=False)  # still valid rows
    with pytest.raises(DataError) as err:
        validate_store(store_dir)
    assert f"{month_file}: differs from the manifest" in str(err.value)


def test_the_manifest_records_every_partition_file_with_size_and_hash(store_dir):
    manifest = json.loads((store_dir / "manifest.json").read_text())
    store = EventStore(store_dir)
    recorded = manifest["partitions"]
    files = {str(p.relative_to(store_dir)) for t in ("orders", "customers") for p in store.partition_files(t)}
    assert files <= set(recorded)
    for rel, entry in recorded.items():
        assert entry["bytes"] == (store_dir / rel).stat().st_size
        assert len(entry["sha256"]) == 64 and entry["rows"] > 0
