"""Ingest hardening, file by file: control bytes, duplicate headers, oversized fields, ragged rows, binary
files, dates outside the sane range, an orders log without amounts, and what a missing mapped column says.

Every rejection must name the file, the row and the column, and leave no store behind."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import DataError
from core.events import EventStore
from pipelines.ingest import ColumnMap, TableMap, ingest, validate_store

from .conftest import write_table

HEADER = "order_id,customer_id,ordered_at,amount\n"


def rejected(tmp_path, content: bytes | str, name: str = "orders.csv", **kwargs) -> str:
    """Ingest ``content`` as an orders file; return the error text (the store must not exist after)."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    store = tmp_path / "events"
    with pytest.raises(DataError) as err:
        ingest(path, store=store, **kwargs)
    assert not store.exists(), "a rejected run wrote something"
    return str(err.value)


def line_about(message: str, column: str) -> str:
    line = next((ln for ln in message.splitlines() if f"column '{column}'" in ln), None)
    assert line is not None, message
    return line


# ---- 2: NUL and control bytes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "column", "row"),
    [
        ("O1,c1,2026-01-05,1\x000.5\n", "amount", 1),  # pandas read 1.0: the NUL cut the value
        ("O2,c1,2026-01-05,1.0\nO9\x0001,c2,2026-01-06,2.0\n", "order_id", 2),  # read as 'O9'
        ("O3,c\x07x,2026-01-05,1.0\n", "customer_id", 1),  # a bell character inside an id
        ("O4,c1,2026-01-05\x1b,1.0\n", "ordered_at", 1),
    ],
    ids=["nul-in-amount", "nul-in-id", "bell-in-id", "escape-in-date"],
)
def test_control_bytes_are_rejected_naming_row_and_column(tmp_path, rows, column, row):
    message = rejected(tmp_path, HEADER + rows)
    line = line_about(message, column)
    assert "orders.csv" in line and "control character" in line and f"row {row}:" in line


def test_control_characters_in_parquet_strings_are_rejected(tmp_path, event_log):
    orders = event_log["orders"].assign(order_id=["o1", "o2\x00x", "o3", "o4"])
    path = write_table(orders, tmp_path, "orders", "parquet")
    with pytest.raises(DataError) as err:
        ingest(path, store=tmp_path / "events")
    line = line_about(str(err.value), "order_id")
    assert "control character" in line and "row 2:" in line


def test_tabs_and_quoted_newlines_are_ordinary_text(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(
        HEADER.replace("amount", "amount,note") + 'O1,c1,2026-01-05,1.0,"two\nlines\tand a tab"\n'
    )
    ingest(path, store=tmp_path / "events")
    assert EventStore(tmp_path / "events").read("orders")["note"].tolist() == ["two\nlines\tand a tab"]


# ---- 8: duplicate header names -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        "order_id,customer_id,customer_id,ordered_at,amount\n",
        "order_id,customer_id, customer_id ,ordered_at,amount\n",
    ],
    ids=["exact", "after-trimming"],
)
def test_duplicate_header_names_are_rejected(tmp_path, header):
    message = rejected(tmp_path, header + "O1,c1,c2,2026-01-05,1.0\n")
    line = line_about(message, "customer_id")
    assert "orders.csv" in line and "duplicate column name" in line
    assert "customer_id.1" not in message


# ---- 8: a field over the size limit ------------------------------------------------------------------------------
def test_a_field_over_the_default_limit_of_1_mb_is_rejected(tmp_path):
    big = "x" * 1_100_000
    message = rejected(
        tmp_path,
        HEADER.replace("amount", "amount,note") + f"O1,c1,2026-01-05,1.0,ok\nO2,c1,2026-01-05,1.0,{big}\n",
    )
    line = line_about(message, "note")
    assert "row 2:" in line and "1,000,000" in line and "max_field_bytes" in line
    assert big not in message  # the offending value itself is not echoed


def test_the_field_limit_is_configurable(tmp_path):
    content = HEADER + "O1,c1,2026-01-05,1.0\nO2,customer-with-a-long-id,2026-01-05,1.0\n"
    message = rejected(tmp_path, content, column_map=ColumnMap(max_field_bytes=10))
    line = line_about(message, "customer_id")
    assert "row 2:" in line and "over the limit of 10 bytes" in line


# ---- 8: ragged rows ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "row", "fields"),
    [
        ("O1,c1,2026-01-05,1.0\nO2,c1,2026-01-06,2.0,extra\nO3,c2,2026-01-07,3.0\n", 2, 5),
        ("O1,c1,2026-01-05,1.0\nO2,c1,2026-01-06\n", 2, 3),  # pandas padded it with an empty amount
        ("O1,c1,2026-01-05,1.0,x\nO2,c1,2026-01-06,2.0,y\n", 1, 5),  # pandas shifted every column by one
    ],
    ids=["too-many", "too-few", "every-row-too-long"],
)
def test_ragged_rows_are_named(tmp_path, rows, row, fields):
    message = rejected(tmp_path, HEADER + rows)
    assert f"orders.csv: row {row} has {fields} fields, the header has 4" in message, message
    assert "not a number" not in message and "missing value" not in message and "line " not in message


def test_ragged_row_numbers_count_records_not_lines(tmp_path):
    rows = 'O1,c1,2026-01-05,1.0\nO2,"c\n1",2026-01-06,2.0\nO3,c2,2026-01-07\n'
    message = rejected(tmp_path, HEADER + rows)
    assert "row 3 has 3 fields" in message, message


# ---- 8: binary files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b"\x00" * 4096,  # a zero-filled file: read today as 'a header but no rows'
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        b"PK\x03\x04" + bytes(range(256)) * 8,  # an .xlsx saved as .csv
    ],
    ids=["zeros", "png", "zip"],
)
def test_a_binary_file_is_not_a_csv(tmp_path, content):
    message = rejected(tmp_path, content)
    assert "orders.csv: not a text/CSV file" in message
    assert "header but no rows" not in message


def test_a_latin1_csv_is_told_to_be_utf8(tmp_path):
    message = rejected(tmp_path, (HEADER + "O1,Müller,2026-01-05,1.0\n").encode("latin-1"))
    assert "orders.csv: not UTF-8 text" in message


# ---- 8: dates outside the sane range ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stamp", "rule"),
    [
        ("1969-12-31T23:59:59Z", "is before 1970-01-01"),
        ("1900-01-01", "is before 1970-01-01"),
        ("1500-01-01", "is before 1970-01-01"),  # before pandas' range: not 'unparsable'
        ("2099-01-01", "is in the future"),
        ("2300-01-01", "is in the future"),  # after 2262, pandas' range: not 'unparsable'
        ("9999-12-31T23:59:59", "is in the future"),
    ],
)
def test_dates_outside_the_sane_range_name_the_rule(tmp_path, stamp, rule):
    message = rejected(tmp_path, HEADER + "O1,c1,2026-01-05,1.0\n" + f"O2,c1,{stamp},2.0\n")
    line = line_about(message, "ordered_at")
    assert rule in line and "row 2:" in line and "unparsable" not in line


def test_dates_outside_the_range_in_a_custom_format_and_in_epoch_seconds(tmp_path):
    cmap = ColumnMap(orders=TableMap(date_format="%d.%m.%Y"))
    message = rejected(tmp_path, HEADER + "O1,c1,05.01.2026,1.0\nO2,c1,01.01.2300,1.0\n", column_map=cmap)
    assert "is in the future" in line_about(message, "ordered_at")
    epoch = ColumnMap(orders=TableMap(date_format="epoch_s"))
    message = rejected(tmp_path, HEADER + "O1,c1,1767614400,1.0\nO2,c1,99999999999,1.0\n", column_map=epoch)
    assert "is in the future" in line_about(message, "ordered_at")


def test_parquet_timestamps_outside_the_range(tmp_path, event_log):
    orders = event_log["orders"].copy()
    orders["ordered_at"] = orders["ordered_at"].astype("datetime64[ms, UTC]")
    orders.loc[1, "ordered_at"] = pd.Timestamp("1950-06-01", tz="UTC")
    orders.loc[2, "ordered_at"] = pd.Timestamp("2400-01-01", tz="UTC").as_unit("ms")
    path = write_table(orders, tmp_path, "orders", "parquet")
    with pytest.raises(DataError) as err:
        ingest(path, store=tmp_path / "events")
    message = str(err.value)
    assert "is before 1970-01-01 in 1 row(s): row 2" in message
    assert "is in the future" in message and "row 3" in message


def test_the_earliest_date_is_configurable(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "O1,c1,1965-03-01,1.0\n")
    ingest(path, store=tmp_path / "events", column_map=ColumnMap(earliest="1960-01-01"))
    assert len(EventStore(tmp_path / "events").read("orders")) == 1
    (tmp_path / "b").mkdir()
    message = rejected(
        tmp_path / "b", HEADER + "O1,c1,1955-03-01,1.0\n", column_map=ColumnMap(earliest="1960-01-01")
    )
    assert "is before 1960-01-01" in message


# ---- own data: amount is optional ------------------------------------------------------------------------------------
def test_a_log_of_customer_and_date_only_is_accepted(tmp_path):
    path = tmp_path / "visits.csv"
    path.write_text("customer_id,ordered_at\nc1,2026-01-05\nc1,2026-01-05\nc2,2026-02-01\n")
    store_dir = tmp_path / "events"
    report = ingest(path, store=store_dir)
    assert report.tables["orders"].added == 3
    orders = EventStore(store_dir).read("orders")
    assert "amount" in orders.columns and orders["amount"].isna().all()
    assert str(orders["amount"].dtype) == "float64"
    validate_store(store_dir)  # null amounts are valid in the store
    assert not ingest(path, store=store_dir).changed  # derived ids stay stable without amounts


def test_an_empty_amount_in_a_file_that_has_amounts_is_still_missing(tmp_path):
    message = rejected(tmp_path, HEADER + "O1,c1,2026-01-05,1.0\nO2,c1,2026-01-06,\n")
    assert "missing value" in line_about(message, "amount")


# ---- a missing mapped column: say what the file has and which map was applied -------------------------------------------
def test_a_missing_mapped_column_lists_the_file_columns_and_the_map(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("Kunde;Datum;Summe\nK1;2026-01-05;1.0\n")
    cmap = ColumnMap(delimiter=";", orders=TableMap(columns={"customer_id": "Kunde", "ordered_at": "Zeit"}))
    with pytest.raises(DataError) as err:
        ingest(path, column_map=cmap, store=tmp_path / "events")
    line = line_about(str(err.value), "Zeit")
    assert "sales.csv" in line and "not in the file" in line
    assert "columns in the file: Kunde, Datum, Summe" in line
    assert "column map applied: customer_id <- Kunde, ordered_at <- Zeit" in line


def test_a_missing_required_column_lists_the_file_columns_and_the_map(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("Kunde,Wann\nK1,2026-01-05\n")
    cmap = ColumnMap(orders=TableMap(columns={"customer_id": "Kunde"}))
    with pytest.raises(DataError) as err:
        ingest(path, column_map=cmap, store=tmp_path / "events")
    line = line_about(str(err.value), "ordered_at")
    assert "required column is missing" in line
    assert "columns in the file: Kunde, Wann" in line and "column map applied: customer_id <- Kunde" in line


def test_without_a_column_map_the_message_says_so(tmp_path):
    message = rejected(tmp_path, "customer,ordered_at\nc1,2026-01-05\n")
    line = line_about(message, "customer_id")
    assert "columns in the file: customer, ordered_at" in line and "no column map" in line


def test_a_mapped_column_that_collides_with_a_file_column_is_rejected(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("customer_id,Kunde,ordered_at\nc1,K1,2026-01-05\n")
    with pytest.raises(DataError, match="'Kunde'.*customer_id.*also has a column 'customer_id'"):
        ingest(
            path,
            column_map=ColumnMap(orders=TableMap(columns={"customer_id": "Kunde"})),
            store=tmp_path / "e",
        )


# ---- the structure scan agrees with the csv module, across chunk boundaries ----------------------------------------
def test_the_byte_scan_matches_the_csv_module_whatever_the_chunk_size(tmp_path, monkeypatch):
    import csv
    import random

    from pipelines.ingest import files

    rng = random.Random(5)
    pieces = ["a", "bb", "", '"q,uo\nted"', '"say ""hi"""', "x y", '"multi\r\nline"']
    for case in range(60):
        width = rng.randint(1, 4)
        lines = [",".join(f"h{i}" for i in range(width))]
        for _ in range(rng.randint(0, 8)):
            n = width if rng.random() < 0.8 else rng.randint(1, width + 2)
            lines.append(",".join(rng.choice(pieces) for _ in range(n)))
            if rng.random() < 0.1:
                lines.append("")  # a blank line
        text = ("\r\n" if case % 3 == 0 else "\n").join(lines) + ("\n" if case % 2 else "")
        path = tmp_path / f"c{case}.csv"
        path.write_bytes(text.encode())
        with open(path, newline="") as fh:
            records = [r for r in csv.reader(fh) if r]
        truth_ragged = any(len(r) != len(records[0]) for r in records[1:])
        for chunk in (1, 3, 7, 1 << 24):
            monkeypatch.setattr(files, "CHUNK_BYTES", chunk)
            scan = files._scan(path, b",")
            assert scan.ragged == truth_ragged, (case, chunk, text)
            assert scan.longest_record >= max(len(",".join(r)) for r in records) - 2, (case, chunk)
