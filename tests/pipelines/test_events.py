"""EventStore: month partitions, atomic replace, dropped months, reading back, DuckDB compatibility."""

from __future__ import annotations

import pandas as pd
import pytest

from core.contract import TABLES
from core.events import EventStore

from .conftest import tiny_event_log


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


def test_rows_land_in_the_month_of_their_time_column(store):
    assert store.months("orders") == ["2026-01", "2026-02"]
    assert store.months("customers") == ["2025-12", "2026-01"]
    january = pd.read_parquet(store.month_file("orders", "2026-01"))
    assert sorted(january["order_id"]) == ["o1", "o3"]
    assert str(january["ordered_at"].dtype) == "datetime64[us, UTC]"
    assert store.has("orders") and not store.has("page_views")
    assert store.families() == {"orders": "present", "customers": "present"}


def test_an_empty_store_reads_as_canonical_empty_frames(tmp_path):
    empty = EventStore(tmp_path / "none")
    frame = empty.read("complaints")
    assert list(frame.columns) == TABLES["complaints"].names and frame.empty
    assert empty.families() == dict.fromkeys(TABLES, "absent")
    assert empty.read_months("orders", {"2026-01"}).empty
    assert empty.column_by_month("orders", "order_id").empty


def test_replace_months_touches_only_the_months_given(store):
    february = store.month_file("orders", "2026-02").read_bytes()
    new_january = pd.DataFrame(
        {
            "order_id": ["o7"],
            "customer_id": ["c1"],
            "ordered_at": [pd.Timestamp("2026-01-09T00:00Z")],
            "amount": [1.0],
        }
    )
    store.replace_months({"orders": new_january})
    assert store.read_months("orders", {"2026-01"})["order_id"].tolist() == ["o7"]  # whole month replaced
    assert store.month_file("orders", "2026-02").read_bytes() == february


def test_drop_months_removes_a_partition(store):
    store.replace_months({}, drop_months={"orders": {"2026-02"}})
    assert store.months("orders") == ["2026-01"]
    assert not list(store.root.parent.glob(".events.staging-*"))


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
