"""Merging into the store: idempotent re-ingest, appends, updates, and re-exports that carry only some
columns (a re-export updates the columns it has and keeps the stored values of the others)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.events import EventStore
from pipelines.ingest import ingest, validate_store

from .conftest import write_table


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def customers_with_attributes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3"],
            "signup_at": pd.to_datetime(["2025-12-01T08:00Z", "2025-12-15T09:30Z", "2026-01-02T10:00Z"]),
            "region": ["north", "south", "east"],
            "channel": ["web", "store", "web"],
        }
    )


def orders_of(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(len(ids))],
            "customer_id": ids,
            "ordered_at": pd.date_range("2026-01-05", periods=len(ids), freq="D", tz="UTC"),
            "amount": 10.0,
        }
    )


def test_a_partial_customers_re_export_keeps_the_stored_attributes(tmp_path):
    store_dir = tmp_path / "events"
    orders = write_table(orders_of(["c1", "c2", "c3"]), tmp_path, "orders", "csv")
    full = write_table(customers_with_attributes(), tmp_path / "a", "customers", "csv")
    ingest(orders, customers=full, store=store_dir)
    before = snapshot(store_dir)

    partial = customers_with_attributes()[["customer_id", "signup_at"]]
    report = ingest(
        orders, customers=write_table(partial, tmp_path / "b", "customers", "csv"), store=store_dir
    )

    assert report.tables["customers"].updated == 0 and report.tables["customers"].already_present == 3
    assert not report.changed and snapshot(store_dir) == before
    stored = EventStore(store_dir).read("customers").set_index("customer_id")
    assert stored["region"].tolist() == ["north", "south", "east"]
    assert stored["channel"].tolist() == ["web", "store", "web"]


def test_a_re_export_updates_only_the_columns_it_has(tmp_path):
    store_dir = tmp_path / "events"
    orders = write_table(orders_of(["c1", "c2", "c3"]), tmp_path, "orders", "csv")
    ingest(
        orders,
        customers=write_table(customers_with_attributes(), tmp_path / "a", "customers", "csv"),
        store=store_dir,
    )

    moved = customers_with_attributes()[["customer_id", "signup_at", "region"]]
    moved.loc[0, "region"] = "west"  # c1 moved; the export has no channel column at all
    report = ingest(
        orders, customers=write_table(moved, tmp_path / "b", "customers", "parquet"), store=store_dir
    )

    assert report.tables["customers"].updated == 1 and report.tables["customers"].already_present == 2
    stored = EventStore(store_dir).read("customers").set_index("customer_id").sort_index()
    assert stored["region"].tolist() == ["west", "south", "east"]
    assert stored["channel"].tolist() == ["web", "store", "web"]
    validate_store(store_dir)


def test_new_customers_in_a_partial_export_get_nulls_for_the_missing_columns(tmp_path):
    store_dir = tmp_path / "events"
    orders = write_table(orders_of(["c1", "c2", "c3"]), tmp_path, "orders", "csv")
    ingest(
        orders,
        customers=write_table(customers_with_attributes(), tmp_path / "a", "customers", "csv"),
        store=store_dir,
    )
    newcomer = pd.DataFrame(
        {"customer_id": ["c1", "c4"], "signup_at": pd.to_datetime(["2025-12-01T08:00Z", "2026-01-20T00:00Z"])}
    )
    report = ingest(
        write_table(orders_of(["c4"]).assign(order_id=["o9"]), tmp_path / "b", "orders", "csv"),
        customers=write_table(newcomer, tmp_path / "b", "customers", "csv"),
        store=store_dir,
    )
    assert report.tables["customers"].added == 1 and report.tables["customers"].already_present == 1
    stored = EventStore(store_dir).read("customers").set_index("customer_id")
    assert stored.loc["c1", "region"] == "north"
    assert pd.isna(stored.loc["c4", "region"])


def test_a_complaints_re_export_without_resolved_at_keeps_the_resolution(tmp_path, event_log):
    store_dir = tmp_path / "events"
    orders = write_table(event_log["orders"], tmp_path, "orders", "csv")
    ingest(
        orders,
        complaints=write_table(event_log["complaints"], tmp_path / "a", "complaints", "csv"),
        store=store_dir,
    )
    without = event_log["complaints"].drop(columns=["resolved_at"])
    report = ingest(
        orders, complaints=write_table(without, tmp_path / "b", "complaints", "csv"), store=store_dir
    )
    assert report.tables["complaints"].updated == 0
    stored = EventStore(store_dir).read("complaints").set_index("complaint_id")
    assert stored.loc["k1", "resolved_at"] == pd.Timestamp("2026-01-28T10:00:00Z")


def test_an_orders_re_export_without_amounts_keeps_the_stored_amounts(tmp_path, event_log):
    store_dir = tmp_path / "events"
    ingest(write_table(event_log["orders"], tmp_path / "a", "orders", "csv"), store=store_dir)
    without = event_log["orders"].drop(columns=["amount"])
    report = ingest(write_table(without, tmp_path / "b", "orders", "csv"), store=store_dir)
    assert not report.changed
    stored = EventStore(store_dir).read("orders").sort_values("order_id")
    assert stored["amount"].tolist() == [25.5, 40.0, 12.25, 99.9]
