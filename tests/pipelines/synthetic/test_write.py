"""The raw exports: canonical columns and types, CSV as an alternative, and atomic replacement."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.synthetic import generate
from pipelines.synthetic.write import RawExport


def test_tables_have_the_canonical_columns_and_types(sample):
    expected = {
        "customers": {"customer_id": "string", "signup_at": "timestamp[us, tz=UTC]"},
        "orders": {
            "order_id": "string",
            "customer_id": "string",
            "ordered_at": "timestamp[us, tz=UTC]",
            "amount": "double",
        },
        "page_views": {
            "customer_id": "string",
            "session_id": "string",
            "viewed_at": "timestamp[us, tz=UTC]",
            "page_type": "string",
            "product_id": "string",
        },
        "complaints": {
            "complaint_id": "string",
            "customer_id": "string",
            "opened_at": "timestamp[us, tz=UTC]",
            "channel": "string",
            "category": "string",
            "severity": "int64",
            "resolved_at": "timestamp[us, tz=UTC]",
        },
        "ground_truth": {
            "customer_id": "string",
            "as_of": "timestamp[us, tz=UTC]",
            "p_churn": "double",
            "p_convert": "double",
            "churn_driver": "string",
            "convert_driver": "string",
        },
    }
    for table, columns in expected.items():
        schema = pq.read_schema(sample.files[table])
        actual = {name: str(schema.field(name).type) for name in schema.names}
        for name, kind in columns.items():
            assert actual.get(name) == kind, f"{table}.{name}: {actual.get(name)} != {kind}"
        assert sample.rows[table] > 0, table


def test_csv_format_writes_the_same_rows(tmp_path):
    parquet = generate(300, 40, seed=2, out=tmp_path / "p", progress=False)
    csv = generate(300, 40, seed=2, out=tmp_path / "c", fmt="csv", progress=False)
    for table in ("customers", "orders", "page_views", "complaints"):
        assert csv.files[table].suffix == ".csv"
        from_csv = pd.read_csv(csv.files[table])
        assert len(from_csv) == parquet.rows[table] == csv.rows[table]
        assert list(from_csv.columns) == list(pd.read_parquet(parquet.files[table]).columns)
    assert csv.files["ground_truth"].suffix == ".parquet"


def test_a_failed_run_leaves_earlier_output_and_no_temporary_files(tmp_path, monkeypatch):
    earlier = generate(200, 20, seed=1, out=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RawExport, "write_customers", fail)  # after every other file has its rows
    with pytest.raises(RuntimeError, match="disk full"):
        generate(300, 30, seed=2, out=tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert set(before) == {p.name for p in earlier.files.values()}
