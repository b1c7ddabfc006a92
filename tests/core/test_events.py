"""EventStore: month partitions, atomic replace, dropped months, reading back, DuckDB compatibility; the
store lock (reentrant, timeout naming the holder), the manifest's record of every partition file and the
completion of a commit that stopped half-way."""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import pytest

import core.events as events
from core.contract import TABLES
from core.events import EventStore, StoreLockedError
from tests.pipelines.conftest import tiny_event_log


def files_of(store: EventStore) -> dict[str, bytes]:
    return {
        str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def store(tmp_path) -> EventStore:
    store = EventStore(tmp_path / "events")
    log = tiny_event_log()
    store.replace_months(
        {"orders": log["orders"], "customers": log["customers"]},
        {"families": {"orders": "present", "customers": "present"}},
    )
    return store


def january_order(order_id: str = "o7") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [order_id],
            "customer_id": ["c1"],
            "ordered_at": [pd.Timestamp("2026-01-09T00:00Z")],
            "amount": [1.0],
        }
    )


def test_rows_land_in_the_month_of_their_time_column(store):
    assert store.months("orders") == ["2026-01", "2026-02"]
    assert store.months("customers") == ["2025-12", "2026-01"]
    january = pd.read_parquet(store.month_file("orders", "2026-01"))
    assert sorted(january["order_id"]) == ["o1", "o3"]
    assert str(january["ordered_at"].dtype) == "datetime64[us, UTC]"
    assert store.has("orders") and not store.has("page_views")
    assert store.families() == {"orders": "present", "customers": "present"}


def test_partitions_name_month_and_file(store):
    parts = store.partitions("orders")
    assert [p.month for p in parts] == ["2026-01", "2026-02"]
    assert [p.path for p in parts] == store.partition_files("orders")
    assert parts[0].path == store.month_file("orders", "2026-01")
    assert store.partitions("page_views") == []


def test_an_empty_store_reads_as_canonical_empty_frames(tmp_path):
    empty = EventStore(tmp_path / "none")
    frame = empty.read("complaints")
    assert list(frame.columns) == TABLES["complaints"].names and frame.empty
    assert empty.families() == dict.fromkeys(TABLES, "absent")
    assert empty.read_months("orders", {"2026-01"}).empty
    assert empty.column_by_month("orders", "order_id").empty


def test_replace_months_touches_only_the_months_given(store):
    february = store.month_file("orders", "2026-02").read_bytes()
    store.replace_months({"orders": january_order()})
    assert store.read_months("orders", {"2026-01"})["order_id"].tolist() == ["o7"]  # whole month replaced
    assert store.month_file("orders", "2026-02").read_bytes() == february


def test_drop_months_removes_a_partition(store):
    store.replace_months({}, drop_months={"orders": {"2026-02"}})
    assert store.months("orders") == ["2026-01"]
    assert not list(store.root.parent.glob(".events.staging-*"))
    assert not any(k.startswith("orders/month=2026-02") for k in store.manifest()["partitions"])
    assert store.check_manifest() == []


def test_a_month_cannot_be_written_and_dropped_at_once(store):
    with pytest.raises(ValueError, match="2026-01"):
        store.replace_months({"orders": january_order()}, drop_months={"orders": {"2026-01"}})


def test_a_failed_write_leaves_the_store_as_it_was(store):
    before = files_of(store)
    unwritable = pd.DataFrame(
        {
            "order_id": ["o8", "o9"],
            "customer_id": ["c1", "c2"],
            "ordered_at": pd.to_datetime(["2026-01-03T00:00Z", "2026-03-03T00:00Z"]),
            "amount": [1.0, object()],
        }  # pyarrow cannot write an arbitrary object: fails mid-way
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, the store must be untouched
        store.replace_months({"orders": unwritable}, {"families": {}})
    assert files_of(store) == before
    assert not list(store.root.parent.glob(".events.staging-*"))


def test_column_by_month_maps_ids_to_partitions(store):
    index = store.column_by_month("orders", "order_id").sort_values("value", ignore_index=True)
    assert index["month"].tolist() == ["2026-01", "2026-02", "2026-01", "2026-02"]


def test_duckdb_reads_the_store_glob(store):
    import duckdb

    with duckdb.connect() as con:
        [(total, first)] = con.execute(
            f"select count(*), min(ordered_at) from read_parquet('{store.glob('orders')}')"
        ).fetchall()
    assert total == 4
    assert pd.Timestamp(first).tz_convert("UTC") == pd.Timestamp("2026-01-05T12:00:00Z")


# ---- the manifest records the partition files -------------------------------------------------------------------
def test_every_commit_records_the_partition_files(store):
    recorded = store.manifest()["partitions"]
    assert sorted(recorded) == sorted(
        str(p.relative_to(store.root)) for t in TABLES for p in store.partition_files(t)
    )
    store.replace_months({"orders": january_order()})  # no manifest passed: the record is still kept
    entry = store.manifest()["partitions"]["orders/month=2026-01/data.parquet"]
    assert entry["rows"] == 1 and entry["bytes"] == store.month_file("orders", "2026-01").stat().st_size
    assert store.families() == {"orders": "present", "customers": "present"}  # the rest of the manifest kept
    assert store.check_manifest() == []


def test_check_manifest_names_each_mismatch(store):
    store.month_file("orders", "2026-02").unlink()
    pd.read_parquet(store.month_file("customers", "2025-12")).to_parquet(
        store.month_file("customers", "2025-12"), index=False, compression="gzip"
    )
    problems = {str(p) for p in store.check_manifest()}
    assert f"{store.month_file('orders', '2026-02')}: listed in the manifest but missing" in problems
    assert any(
        p.startswith(f"{store.month_file('customers', '2025-12')}: differs from the manifest")
        for p in problems
    )


def test_a_store_written_before_the_record_is_recorded_on_its_next_commit(store):
    manifest = store.manifest()
    del manifest["partitions"]
    store.write_manifest(manifest)
    assert store.check_manifest() == []  # nothing recorded: nothing to compare (older stores)
    store.replace_months({"orders": january_order()})
    assert set(store.manifest()["partitions"]) >= {
        "orders/month=2026-02/data.parquet",
        "customers/month=2025-12/data.parquet",
    }
    assert store.check_manifest() == []


# ---- a commit that stopped half-way --------------------------------------------------------------------------------
def test_a_commit_that_stopped_half_way_is_completed_by_the_next_writer(store, monkeypatch):
    real = os.replace
    moved = []

    def fail_on_second_move(src, dst):
        if str(dst).endswith(".parquet") and str(dst).startswith(str(store.root)):
            moved.append(dst)
            if len(moved) == 2:
                raise OSError("disk pulled out")
        real(src, dst)

    monkeypatch.setattr(events.os, "replace", fail_on_second_move)
    march = january_order("o8").assign(ordered_at=pd.Timestamp("2026-03-09T00:00Z"))
    with pytest.raises(OSError):
        store.replace_months({"orders": pd.concat([january_order(), march])})
    monkeypatch.setattr(events.os, "replace", real)

    assert store.pending_commits(), "the interrupted commit is kept for completion"
    assert any("interrupted" in str(p) for p in store.check_manifest())
    store.recover()
    assert store.pending_commits() == []
    assert store.months("orders") == ["2026-01", "2026-02", "2026-03"]
    assert sorted(store.read("orders")["order_id"]) == ["o2", "o4", "o7", "o8"]
    assert store.check_manifest() == []
    assert not list(store.root.parent.glob(".events.staging-*"))


# ---- the lock ----------------------------------------------------------------------------------------------------
def test_the_lock_is_reentrant_in_one_thread(store):
    with store.lock(timeout=0.1), store.lock(timeout=0.1):
        store.replace_months({"orders": january_order()})  # replace_months takes the lock too
    assert store.read_months("orders", {"2026-01"})["order_id"].tolist() == ["o7"]


def test_another_thread_waits_then_times_out_naming_the_holder(store):
    errors: list[Exception] = []

    def second_writer():
        try:
            with store.lock(timeout=0.3):
                pass
        except StoreLockedError as exc:
            errors.append(exc)

    with store.lock(timeout=0.1):
        started = time.monotonic()
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
        waited = time.monotonic() - started
    assert waited >= 0.25
    [error] = errors
    assert f"event store {store.root} is locked by pid {os.getpid()} since " in str(error)
    with store.lock(timeout=0.1):  # released: free again
        pass


def test_the_lock_file_is_empty_when_nobody_holds_it(store):
    with store.lock(timeout=0.1):
        assert f'"pid": {os.getpid()}' in store.lock_path.read_text()
    assert store.lock_path.read_text() == ""
