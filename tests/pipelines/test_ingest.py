"""`propensity ingest` / `validate`: every bad-input case of the contract with a crafted file (CSV and
Parquet), atomicity, idempotent re-ingest, appends and updates, a transactions-only log via a column map."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from core.errors import ConfigError, DataError
from core.events import EventStore
from pipelines.ingest import ColumnMap, TableMap, ingest, load_column_map, validate_store

from .conftest import tiny_event_log, write_table


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: equal snapshots mean a byte-identical store."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def ingest_all(paths: dict[str, Path], store: Path, **kwargs):
    return ingest(
        paths["orders"],
        customers=paths.get("customers"),
        page_views=paths.get("page_views"),
        complaints=paths.get("complaints"),
        store=store,
        **kwargs,
    )


# ---- the happy path ----------------------------------------------------------------------------------------
def test_ingest_writes_canonical_store(tmp_path, exports):
    store_dir = tmp_path / "events"
    report = ingest_all(exports, store_dir)

    assert report.rows_added() == {"customers": 3, "orders": 4, "page_views": 5, "complaints": 2, "contacts": 0}
    assert report.families == {**dict.fromkeys(["customers", "orders", "page_views", "complaints"], "present"),
                               "contacts": "absent"}
    assert report.absent == ["contacts"]  # no CRM export given
    store = EventStore(store_dir)
    assert store.months("orders") == ["2026-01", "2026-02"]
    orders = store.read("orders").sort_values("order_id", ignore_index=True)
    assert str(orders["ordered_at"].dtype) == "datetime64[us, UTC]"
    assert orders["ordered_at"][0] == pd.Timestamp("2026-01-05T12:00:00Z")
    assert orders["amount"].tolist() == [25.5, 40.0, 12.25, 99.9]
    complaints = store.read("complaints").sort_values("complaint_id", ignore_index=True)
    assert complaints["severity"].dtype == "int64"
    assert complaints["resolved_at"].isna().tolist() == [False, True]
    customers = store.read("customers")
    assert set(customers.columns) == {"customer_id", "signup_at", "country"}  # optional attribute kept
    assert [s.rows for s in validate_store(store_dir)] == [3, 4, 5, 2, 0]  # contacts: none given


def test_parquet_integer_ids_become_strings(tmp_path, event_log):
    orders = event_log["orders"].assign(order_id=[101, 102, 103, 104])
    path = write_table(orders, tmp_path / "raw", "orders", "parquet")
    ingest(path, store=tmp_path / "events")
    stored = EventStore(tmp_path / "events").read("orders")
    assert sorted(stored["order_id"]) == ["101", "102", "103", "104"]


# ---- bad input: one crafted file per case, CSV and Parquet ------------------------------------------------------
def _amount_as_text(log):
    log["orders"]["amount"] = ["25.5", "abc", "12.25", "99.9"]


def _unparsable_time(log):
    log["orders"]["ordered_at"] = ["2026-01-05T12:00:00Z", "2026-02-03T12:00:00Z", "yesterday", "2026-02-10"]


def _future_time(log):
    log["orders"].loc[3, "ordered_at"] = pd.Timestamp("2099-01-01T00:00:00Z")


def _negative_amount(log):
    log["orders"].loc[1, "amount"] = -5.0


def _duplicate_id(log):
    log["orders"].loc[2, "order_id"] = "o1"


def _unknown_customer(log):
    log["orders"].loc[3, "customer_id"] = "c99"


def _missing_column(log):
    log["orders"] = log["orders"].drop(columns=["ordered_at"])


def _extra_column(log):
    log["page_views"]["referrer"] = "search"


def _bad_page_type(log):
    log["page_views"].loc[4, "page_type"] = "landing"


def _severity_out_of_range(log):
    log["complaints"].loc[1, "severity"] = 4


def _severity_not_whole(log):
    log["complaints"]["severity"] = [2.0, 2.5]


def _resolved_before_opened(log):
    log["complaints"].loc[0, "resolved_at"] = pd.Timestamp("2026-01-01T00:00:00Z")


def _missing_customer_id(log):
    log["page_views"].loc[2, "customer_id"] = None


def _duplicate_customer(log):
    log["customers"].loc[2, "customer_id"] = "c1"


BAD_CASES = [
    # (case, file, column, expected text, row (1-based), value shown, count)
    (_amount_as_text, "orders", "amount", "not a number", 2, "'abc'", 1),
    (_unparsable_time, "orders", "ordered_at", "unparsable timestamp", 3, "'yesterday'", 1),
    (_future_time, "orders", "ordered_at", "in the future", 4, "2099-01-01", 1),
    (_negative_amount, "orders", "amount", "must be >= 0", 2, "-5.0", 1),
    (_duplicate_id, "orders", "order_id", "duplicate value", 1, "'o1'", 2),
    (_unknown_customer, "orders", "customer_id", "unknown customer", 4, "'c99'", 1),
    (_missing_column, "orders", "ordered_at", "required column is missing", None, None, None),
    (_extra_column, "page_views", "referrer", "unexpected column", None, None, None),
    (_bad_page_type, "page_views", "page_type", "must be one of home", 5, "'landing'", 1),
    (_severity_out_of_range, "complaints", "severity", "must be one of 1, 2, 3", 2, "4", 1),
    (_severity_not_whole, "complaints", "severity", "not a whole number", 2, "2.5", 1),
    (
        _resolved_before_opened,
        "complaints",
        "resolved_at",
        "resolved_at is before opened_at",
        1,
        "2026-01-01",
        1,
    ),
    (_missing_customer_id, "page_views", "customer_id", "missing value", 3, "<empty>", 1),
    (_duplicate_customer, "customers", "customer_id", "duplicate value", 1, "'c1'", 2),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0].__name__.strip("_") for c in BAD_CASES])
def test_bad_input_is_rejected_naming_file_column_rows(tmp_path, fmt, exports, case):
    breaker, table, column, text, row, value, count = case
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)  # a store with data: a rejected run must leave it byte-identical
    before = snapshot(store_dir)

    log = tiny_event_log()
    breaker(log)
    bad = {name: write_table(df, tmp_path / "bad", name, fmt) for name, df in log.items()}
    # The contract's own checks: with the cleaning rules on, a negative amount is a return and an empty
    # key field is quarantined (tests/pipelines/test_cleaning.py).
    with pytest.raises(DataError) as err:
        ingest_all(bad, store_dir, cleaning=False)

    line = next((ln for ln in str(err.value).splitlines() if f"'{column}'" in ln), None)
    assert line is not None, str(err.value)
    assert f"{table}.{fmt}" in line
    assert text in line
    if row is not None:
        # CSV values are shown as the text in the file ('2.5'), Parquet ones as typed (2.5).
        assert f"row {row}: {value.strip(chr(39))}" in line.replace("'", "")
        assert f"in {count} row(s)" in line
    assert snapshot(store_dir) == before
    assert not list(tmp_path.glob(".events.staging-*"))


@pytest.mark.parametrize(
    "content", ["", "order_id,customer_id,ordered_at,amount\n"], ids=["zero-bytes", "header-only"]
)
def test_empty_csv_is_rejected(tmp_path, content):
    path = tmp_path / "orders.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=r"orders\.csv: (file is empty|has a header but no rows)"):
        ingest(path, store=tmp_path / "events")
    assert not (tmp_path / "events").exists()


def test_empty_parquet_is_rejected(tmp_path, event_log):
    path = write_table(event_log["orders"].iloc[0:0], tmp_path, "orders", "parquet")
    with pytest.raises(DataError, match=r"orders\.parquet: has a header but no rows"):
        ingest(path, store=tmp_path / "events")


def test_every_problem_of_a_run_is_reported_at_once(tmp_path):
    log = tiny_event_log()
    _negative_amount(log)
    _bad_page_type(log)
    paths = {name: write_table(df, tmp_path / "bad", name, "csv") for name, df in log.items()}
    with pytest.raises(DataError) as err:
        ingest_all(paths, tmp_path / "events", cleaning=False)  # rules on: the negative amount is a return
    message = str(err.value)
    assert "2 problem(s)" in message and "'amount'" in message and "'page_type'" in message
    assert not (tmp_path / "events").exists()


def test_events_of_customers_unknown_to_the_store_are_rejected(tmp_path, exports):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    before = snapshot(store_dir)
    later = pd.DataFrame(
        {
            "order_id": ["o9"],
            "customer_id": ["c42"],
            "ordered_at": [pd.Timestamp("2026-03-01T10:00Z")],
            "amount": [5.0],
        }
    )
    path = write_table(later, tmp_path / "later", "orders", "csv")
    with pytest.raises(
        DataError, match=r"orders\.csv: column 'customer_id': unknown customer .*row 1: 'c42'"
    ):
        ingest(path, store=store_dir)
    assert snapshot(store_dir) == before


# ---- idempotence, appends, updates ---------------------------------------------------------------------------
def test_ingesting_the_same_files_twice_changes_nothing(tmp_path, exports):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    before = snapshot(store_dir)

    again = ingest_all(exports, store_dir)

    assert not again.changed
    assert again.rows_added() == dict.fromkeys(["customers", "orders", "page_views", "complaints", "contacts"], 0)
    assert {t: r.already_present for t, r in again.tables.items()} == {
        "customers": 3,
        "orders": 4,
        "page_views": 5,
        "complaints": 2,
        "contacts": 0,
    }
    assert snapshot(store_dir) == before


def test_repeated_page_view_rows_in_a_file_count_once(tmp_path, event_log):
    views = pd.concat([event_log["page_views"], event_log["page_views"].iloc[[0]]], ignore_index=True)
    orders = write_table(event_log["orders"], tmp_path, "orders", "csv")
    report = ingest(
        orders, page_views=write_table(views, tmp_path, "page_views", "csv"), store=tmp_path / "ev"
    )
    assert report.tables["page_views"].rows_read == 6
    assert report.tables["page_views"].duplicate_rows_dropped == 1
    assert report.tables["page_views"].added == 5


def test_a_file_with_later_dates_appends(tmp_path, exports, fmt):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    january = (store_dir / "orders" / "month=2026-01" / "data.parquet").read_bytes()
    later = pd.DataFrame(
        {
            "order_id": ["o5", "o6"],
            "customer_id": ["c1", "c2"],
            "ordered_at": pd.to_datetime(["2026-03-02T10:00:00Z", "2026-03-20T16:30:00Z"]),
            "amount": [10.0, 20.0],
        }
    )
    report = ingest(write_table(later, tmp_path / "later", "orders", fmt), store=store_dir)

    assert report.tables["orders"].added == 2
    assert report.tables["orders"].months_written == ["2026-03"]
    store = EventStore(store_dir)
    assert store.months("orders") == ["2026-01", "2026-02", "2026-03"]
    assert len(store.read("orders")) == 6
    assert (store_dir / "orders" / "month=2026-01" / "data.parquet").read_bytes() == january
    assert store.families()["customers"] == "present"  # an orders-only run keeps the customers file's status


def test_a_changed_row_replaces_its_stored_version(tmp_path, exports, event_log):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    complaints = event_log["complaints"].copy()
    complaints.loc[1, "resolved_at"] = pd.Timestamp("2026-02-14T09:00:00Z")  # k2 got resolved since
    path = write_table(complaints, tmp_path / "later", "complaints", "csv")

    report = ingest(exports["orders"], complaints=path, store=store_dir)

    assert report.tables["complaints"].updated == 1
    assert report.tables["complaints"].already_present == 1
    stored = EventStore(store_dir).read("complaints").set_index("complaint_id")
    assert stored.loc["k2", "resolved_at"] == pd.Timestamp("2026-02-14T09:00:00Z")
    assert len(stored) == 2


def test_an_update_that_moves_a_row_to_another_month_leaves_no_copy(tmp_path, event_log):
    store_dir = tmp_path / "events"
    orders = event_log["orders"]
    ingest(write_table(orders, tmp_path / "a", "orders", "csv"), store=store_dir)
    moved = orders.copy()
    moved.loc[moved["ordered_at"].dt.month == 2, "ordered_at"] = pd.Timestamp("2026-03-01T00:00:00Z")

    report = ingest(write_table(moved, tmp_path / "b", "orders", "csv"), store=store_dir)

    assert report.tables["orders"].updated == 2
    store = EventStore(store_dir)
    assert store.months("orders") == ["2026-01", "2026-03"]  # February emptied and removed
    assert sorted(store.read("orders")["order_id"]) == ["o1", "o2", "o3", "o4"]
    validate_store(store_dir)


# ---- a plain transaction log through a column map ---------------------------------------------------------------
TRANSACTIONS = """Kunde;Datum;Betrag;Filiale
K-1;05.01.2026;25,50;Berlin
K-1;03.02.2026;40,00;Berlin
K-2;20.01.2026;12,25;Hamburg
K-2;20.01.2026;12,25;Hamburg
K-3;10.02.2026;99,90;Berlin
"""

COLUMN_MAP = """
delimiter: ";"
decimal: ","
timezone: Europe/Berlin
orders:
  columns: {customer_id: Kunde, ordered_at: Datum, amount: Betrag}
  date_format: "%d.%m.%Y"
  drop: [Filiale]
"""


@pytest.fixture
def transactions(tmp_path) -> tuple[Path, Path]:
    log = tmp_path / "transactions.csv"
    log.write_text(TRANSACTIONS)
    cmap = tmp_path / "column_map.yaml"
    cmap.write_text(COLUMN_MAP)
    return log, cmap


def test_transactions_only_log_runs_with_other_families_absent(tmp_path, transactions):
    log, cmap = transactions
    store_dir = tmp_path / "events"

    report = ingest(log, column_map=cmap, store=store_dir)

    assert report.families == {
        "customers": "derived",
        "orders": "present",
        "page_views": "absent",
        "complaints": "absent",
        "contacts": "absent",
    }
    assert report.absent == ["page_views", "complaints", "contacts"]
    assert report.tables["page_views"].source is None and report.tables["page_views"].added == 0
    store = EventStore(store_dir)
    assert not store.has("page_views") and not store.has("complaints")  # absent, never faked
    orders = store.read("orders").sort_values(["customer_id", "ordered_at"], ignore_index=True)
    assert len(orders) == 5  # two equal purchases on one day stay two orders
    assert orders["order_id"].nunique() == 5
    assert orders["amount"].tolist() == [25.5, 40.0, 12.25, 12.25, 99.9]
    # Midnight in Berlin (UTC+1 in winter) is 23:00 UTC the day before.
    assert orders["ordered_at"][0] == pd.Timestamp("2026-01-04T23:00:00Z")
    assert "Filiale" not in orders.columns
    customers = store.read("customers").set_index("customer_id")
    assert customers.loc["K-1", "signup_at"] == pd.Timestamp("2026-01-04T23:00:00Z")  # first order
    summaries = {s.table: s for s in validate_store(store_dir)}
    assert summaries["orders"].rows == 5 and summaries["orders"].customers == 3
    assert summaries["page_views"].status == "absent"

    before = snapshot(store_dir)
    again = ingest(log, column_map=cmap, store=store_dir)
    assert not again.changed  # derived order ids are stable
    assert snapshot(store_dir) == before


def test_derived_customers_grow_with_new_events(tmp_path, transactions):
    log, cmap = transactions
    store_dir = tmp_path / "events"
    ingest(log, column_map=cmap, store=store_dir)
    more = tmp_path / "more.csv"
    more.write_text("Kunde;Datum;Betrag;Filiale\nK-4;01.03.2026;5,00;Köln\nK-3;01.01.2026;7,00;Köln\n")

    report = ingest(more, column_map=cmap, store=store_dir)

    assert report.tables["customers"].added == 1  # K-4
    assert report.tables["customers"].updated == 1  # K-3 ordered earlier than first seen
    customers = EventStore(store_dir).read("customers").set_index("customer_id")
    assert customers.loc["K-3", "signup_at"] == pd.Timestamp("2025-12-31T23:00:00Z")
    assert len(customers) == 4


def test_timestamps_in_epoch_seconds(tmp_path, event_log):
    orders = event_log["orders"].assign(ordered_at=event_log["orders"]["ordered_at"].astype("int64") // 10**9)
    path = write_table(orders, tmp_path, "orders", "csv")
    cmap = ColumnMap(orders=TableMap(date_format="epoch_s"))
    ingest(path, column_map=cmap, store=tmp_path / "events")
    stored = EventStore(tmp_path / "events").read("orders").sort_values("order_id")
    assert stored["ordered_at"].tolist() == event_log["orders"]["ordered_at"].tolist()


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["2026-01-05 12:00", "2026-07-05 12:00"], ["2026-01-05T11:00Z", "2026-07-05T10:00Z"]),  # CET, CEST
        (["2026-01-05T12:00+00:00", "2026-01-05T12:00+05:00"], ["2026-01-05T12:00Z", "2026-01-05T07:00Z"]),
        (["2026-01-05T12:00+02:00", "2026-01-05T12:00+02:00"], ["2026-01-05T10:00Z", "2026-01-05T10:00Z"]),
    ],
    ids=["naive-in-zone", "mixed-offsets", "one-offset"],
)
def test_timestamps_are_read_in_the_map_time_zone_and_stored_in_utc(tmp_path, stamps, expected):
    path = tmp_path / "orders.csv"
    path.write_text("customer_id,ordered_at,amount\n" + "".join(f"c1,{t},1.0\n" for t in stamps))
    ingest(path, column_map=ColumnMap(timezone="Europe/Berlin"), store=tmp_path / "events")
    stored = EventStore(tmp_path / "events").read("orders").sort_values("ordered_at")
    assert stored["ordered_at"].tolist() == sorted(pd.Timestamp(e) for e in expected)


def test_numbers_in_a_timestamp_column_need_an_epoch_format(tmp_path, event_log):
    orders = event_log["orders"].assign(ordered_at=[1767614400, 1770120000, 1768934700, 1770706800])
    path = write_table(orders, tmp_path, "orders", "parquet")
    with pytest.raises(DataError, match="'ordered_at': a number, not a timestamp"):
        ingest(path, store=tmp_path / "events")


# ---- the column map -----------------------------------------------------------------------------------------------
def test_example_column_map_validates():
    from core.settings import REPO_ROOT

    cmap = load_column_map(REPO_ROOT / "configs" / "column_map.example.yaml")
    assert cmap.orders.columns["customer_id"] == "CustomerID"


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("orders:\n  colums: {customer_id: K}\n", "orders.colums"),
        ("page_views:\n  columns: {referrer: ref}\n", "'referrer' is not a column of page_views"),
        ("orders:\n  date_formats: {amount: '%Y'}\n", "'amount' is not a timestamp column"),
        ("timezone: Mars/Olympus\n", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_wrong_column_map_names_the_field(tmp_path, yaml_text, named):
    path = tmp_path / "map.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_column_map(path)
    assert named in str(err.value) and str(path) in str(err.value)


def test_a_mapped_column_missing_from_the_file_is_named(tmp_path, event_log):
    path = write_table(event_log["orders"], tmp_path, "orders", "csv")
    cmap = ColumnMap(orders=TableMap(columns={"amount": "Total"}))
    with pytest.raises(DataError, match=r"orders\.csv: column 'Total': not in the file, but the column map"):
        ingest(path, column_map=cmap, store=tmp_path / "events")


# ---- validating a store --------------------------------------------------------------------------------------------
def test_validate_names_the_partition_file_of_a_bad_row(tmp_path, exports):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    month_file = store_dir / "orders" / "month=2026-02" / "data.parquet"
    broken = pd.read_parquet(month_file)
    broken.loc[0, "amount"] = -1.0
    broken.to_parquet(month_file, index=False)

    with pytest.raises(DataError) as err:
        validate_store(store_dir)
    assert f"{month_file}: column 'amount': must be >= 0 in 1 row(s): row 1: -1.0" in str(err.value)


def test_validate_finds_a_row_in_the_wrong_month(tmp_path, exports):
    store_dir = tmp_path / "events"
    ingest_all(exports, store_dir)
    month_file = store_dir / "orders" / "month=2026-02" / "data.parquet"
    rows = pd.read_parquet(month_file)
    rows.loc[0, "ordered_at"] = pd.Timestamp("2026-01-15T00:00:00Z")
    rows.to_parquet(month_file, index=False)
    with pytest.raises(DataError, match="'ordered_at': row in the wrong month partition"):
        validate_store(store_dir)


def test_validate_without_a_store_says_so(tmp_path):
    with pytest.raises(DataError, match="no event store here"):
        validate_store(tmp_path / "nowhere")


# ---- the CLI -------------------------------------------------------------------------------------------------------
@pytest.fixture
def cli() -> typer.Typer:
    from pipelines.cli import ingest as cli_ingest

    app = typer.Typer()
    cli_ingest.register(app)
    return app


def test_cli_ingest_then_validate(project_home, cli, transactions):
    log, cmap = transactions
    runner = CliRunner()

    result = runner.invoke(cli, ["ingest", "--orders", str(log), "--column-map", str(cmap)])
    assert result.exit_code == 0, result.output
    assert "orders" in result.output and "derived" in result.output
    assert EventStore(project_home / "data" / "events").has("orders")  # default store under the project

    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert "absent" in result.output and "valid" in result.output


def test_cli_ingest_bad_input_raises_data_error(tmp_path, cli, event_log):
    log = tiny_event_log()
    _negative_amount(log)
    path = write_table(log["orders"], tmp_path, "orders", "csv")
    result = CliRunner().invoke(
        cli, ["ingest", "--orders", str(path), "--store", str(tmp_path / "ev"), "--no-cleaning"]
    )
    assert isinstance(result.exception, DataError)  # pipelines.cli.main turns it into exit code 2
    assert "'amount'" in str(result.exception)


# ---- row identity helpers --------------------------------------------------------------------------------------
def test_repeated_rows_are_dropped_exactly():
    from pipelines.ingest import drop_repeated_rows

    df = pd.DataFrame({"a": ["x", "x", "x", "y"], "b": [1.0, 1.0, None, None]})
    kept = drop_repeated_rows(df)
    assert kept["a"].tolist() == ["x", "x", "y"]
    assert kept["b"].isna().tolist() == [False, True, True]  # ("x", null) differs from ("x", 1.0)


def test_already_stored_compares_every_column_including_nulls_and_attributes():
    from pipelines.ingest import already_stored

    stored = pd.DataFrame({"id": ["a", "b", "c"], "v": [1.0, None, 3.0]})
    new = pd.DataFrame(
        {"id": ["a", "b", "c", "d"], "v": [1.0, None, 3.5, 1.0], "tier": [None, None, None, None]}
    )
    assert already_stored(stored, new, "id").tolist() == [True, True, False, False]
    with_attribute = new.assign(tier=["gold", None, None, None])
    assert already_stored(stored, with_attribute, "id").tolist() == [False, True, False, False]


def test_optional_columns_absent_from_a_file_are_stored_as_nulls(tmp_path, event_log):
    views = event_log["page_views"].drop(columns=["product_id"])
    orders = write_table(event_log["orders"], tmp_path, "orders", "csv")
    ingest(orders, page_views=write_table(views, tmp_path, "page_views", "csv"), store=tmp_path / "ev")
    stored = EventStore(tmp_path / "ev").read("page_views")
    assert "product_id" in stored.columns and stored["product_id"].isna().all()
    # The same views again, now with product ids: rows differ, so they are new page views, not updates.
    with_ids = write_table(event_log["page_views"], tmp_path / "b", "page_views", "parquet")
    report = ingest(orders, page_views=with_ids, store=tmp_path / "ev")
    assert report.tables["page_views"].already_present == 3  # the three rows whose product_id is null anyway
    assert report.tables["page_views"].added == 2


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("orders.csv", None, "file not found"),
        ("orders.xlsx", "x", "unknown file type"),
        ("orders.parquet", "not parquet", "cannot read the file"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, said):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=f"{name}: {said}"):
        ingest(path, store=tmp_path / "events")
