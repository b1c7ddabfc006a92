"""The real UCI Online Retail log (../shared/data, read in place, never copied) through
configs/examples/online_retail.yaml, checked against the facts of ../shared/data/README.md; the
ISO-8859-1 CSV.gz must give exactly what the typed Parquet copy gave."""

from __future__ import annotations

import pandas as pd
import pytest

from core.events import EventStore
from core.settings import REPO_ROOT
from pipelines.ingest import ingest, validate_store
from pipelines.ingest.quarantine import quarantine_root

DATA = REPO_ROOT.parent / "shared" / "data"
PARQUET, CSV = DATA / "online_retail.parquet", DATA / "OnlineRetail.csv.gz"
RETAIL_MAP = REPO_ROOT / "configs" / "examples" / "online_retail.yaml"
LINE_COLUMNS = ["order_id", "StockCode", "Description", "Quantity", "ordered_at", "UnitPrice", "customer_id", "Country"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (PARQUET.is_file() and CSV.is_file()), reason="../shared/data has no online retail log"),
]


def test_the_online_retail_log_ingests_as_its_readme_says(tmp_path):
    store_dir = tmp_path / "events"
    report = ingest(PARQUET, column_map=RETAIL_MAP, store=store_dir)
    orders = EventStore(store_dir).read("orders")
    held = pd.concat(pd.read_parquet(p) for p in (quarantine_root(store_dir) / "orders").glob("*.parquet"))
    removed = report.removed()["orders"]

    assert report.tables["orders"].rows_read == 541_909
    assert removed["missing_customer"] == 135_080
    lines = held[held["rule"].isin(["missing_customer", "duplicate_rows"])]
    # 5,268 exact duplicate lines: those with a customer are duplicate_rows, the rest went as missing_customer.
    missing = lines[lines["rule"] == "missing_customer"][LINE_COLUMNS]
    assert removed["duplicate_rows"] + int(missing.duplicated().sum()) == 5_268
    every_invoice = set(orders["order_id"]) | set(held["order_id"])
    assert len(every_invoice) == 25_900
    assert len({i for i in every_invoice if i.startswith("C")}) == 3_836
    assert not orders["order_id"].str.startswith("C").any()
    assert len(set(orders["customer_id"]) | set(held["customer_id"].dropna())) == 4_372
    cancellations = held[held["rule"] == "cancellations"]
    assert cancellations["order_id"].str.startswith("C").sum() == 3_654  # the C-invoices with a customer
    assert (orders["amount"] > 0).all()
    assert report.families["customers"] == "derived"
    assert orders["ordered_at"].min() == pd.Timestamp("2010-12-01T08:26Z")
    assert list(orders.columns) == ["order_id", "customer_id", "ordered_at", "amount", "Country"]
    validate_store(store_dir)

    # The CSV as distributed (ISO-8859-1, CRLF, m/d/Y times) is the same log: nothing new anywhere.
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = ingest(CSV, column_map=RETAIL_MAP, store=store_dir)
    assert not again.changed and again.removed() == report.removed()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
