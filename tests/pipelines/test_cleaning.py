"""Cleaning rules (configs/cleaning.yaml): each rule on crafted rows, the missing-value policy, the
quarantine beside the store (counts in the manifest, idempotent re-ingest, a killed run's leftovers,
`validate`, `forget`), and the CLI's table of rows removed per rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from core.errors import ConfigError, DataError
from core.events import EventStore
from core.settings import REPO_ROOT
from pipelines.ingest import (
    CleaningConfig,
    ColumnMap,
    clean_table,
    ingest,
    load_cleaning_config,
    validate_store,
)
from pipelines.ingest.quarantine import quarantine_root

from .conftest import tiny_event_log, write_table

T0 = pd.Timestamp("2026-01-05T10:00:00Z")


def snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def quarantined(store: Path, table: str) -> pd.DataFrame:
    files = sorted((quarantine_root(store) / table).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def rules(**sections) -> CleaningConfig:
    """The shipped rules with some sections changed."""
    return load_cleaning_config().with_overrides(sections)


# ---- the config ---------------------------------------------------------------------------------------------
def test_shipped_yaml_equals_the_code_defaults_and_wrong_keys_name_themselves(tmp_path):
    shipped = load_cleaning_config(REPO_ROOT / "configs" / "cleaning.yaml").model_dump()
    code = CleaningConfig().model_dump()
    # The one difference: the ingest names no table in code, the YAML says which table has content dups.
    assert shipped["content_duplicates"].pop("tables") == {"complaints": ["channel", "category", "severity"]}
    assert code["content_duplicates"].pop("tables") == {}
    assert shipped == code

    bad = tmp_path / "cleaning.yaml"
    bad.write_text("bots:\n  max_views_per_day: 5\n")
    with pytest.raises(ConfigError, match=r"bots\.max_views_per_day") as err:
        load_cleaning_config(bad)
    assert str(bad) in str(err.value)
    bad.write_text("missing_values:\n  columns: {orders.shoe_size: quarantine}\n")
    with pytest.raises(ConfigError, match="'orders.shoe_size' is not"):
        load_cleaning_config(bad)
    with pytest.raises(ValueError, match=r"cancelations"):
        ColumnMap.model_validate({"cleaning": {"cancelations": {"id_prefix": "C"}}})


# ---- the rules, one by one --------------------------------------------------------------------------------------
def _views(rows: list[tuple[str, str, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "session_id": [r[1] for r in rows],
            "viewed_at": pd.to_datetime([r[2] for r in rows], utc=True).astype("datetime64[us, UTC]"),
            "page_type": "home",
            "product_id": None,
        }
    )


def test_bots_and_short_views():
    bot = [("b1", "sb", T0 + pd.Timedelta(seconds=10 * i)) for i in range(150)]  # 150 views in one day
    person = [
        ("c1", "s1", T0),
        ("c1", "s1", T0 + pd.Timedelta(seconds=2)),  # 2 s after the first: the first is a short view
        ("c1", "s1", T0 + pd.Timedelta(seconds=60)),  # the session's last view: no dwell, kept
        ("c2", "s2", T0 + pd.Timedelta(seconds=1)),  # another session at nearly the same time: not next
        ("c1", "s9", T0 + pd.Timedelta(days=1)),
    ]
    views = _views(person + bot + [("b1", "sb2", T0 + pd.Timedelta(days=2))])
    out = clean_table("page_views", views, rules())
    assert out.counts() == {"bots": 150, "short_views": 1}
    short = next(f for f in out.removed if f["rule"].iloc[0] == "short_views")
    assert short.index.tolist() == [0] and short["detail"].iloc[0] == "2 s on the page"
    assert out.frame["customer_id"].tolist() == ["c1", "c1", "c2", "c1", "b1"]  # the bot's quiet day stays

    every_view = clean_table("page_views", views, rules(bots={"scope": "customer"}))
    assert every_view.counts()["bots"] == 151
    assert clean_table("page_views", views, rules(bots={"max_page_views_per_day": 200})).counts() == {
        "short_views": 1
    }
    assert clean_table("page_views", views, CleaningConfig.disabled()).counts() == {}


def test_a_dwell_column_replaces_the_derived_dwell_and_is_not_stored(tmp_path):
    log = tiny_event_log()
    views = log["page_views"].assign(seconds=[30, 1, 40, 2.5, 50])
    paths = {
        "orders": write_table(log["orders"], tmp_path, "orders", "csv"),
        "page_views": write_table(views, tmp_path, "page_views", "csv"),
    }
    report = ingest(paths["orders"], page_views=paths["page_views"], store=tmp_path / "events",
                    cleaning=rules(short_views={"dwell_column": "seconds"}))
    assert report.removed() == {"page_views": {"short_views": 2}}
    stored = EventStore(tmp_path / "events").read("page_views")
    assert len(stored) == 3 and "seconds" not in stored.columns


def _orders(amounts, customers=None, ids=None, start=T0, step=pd.Timedelta(hours=1)) -> pd.DataFrame:
    n = len(amounts)
    return pd.DataFrame(
        {
            "order_id": ids or [f"O{i}" for i in range(n)],
            "customer_id": customers or [f"c{i % 7}" for i in range(n)],
            "ordered_at": pd.DatetimeIndex([start + i * step for i in range(n)]).astype("datetime64[us, UTC]"),
            "amount": np.asarray(amounts, dtype=float),
        }
    )


def test_test_orders_and_amount_outliers():
    genuine = list(np.round(np.random.default_rng(3).lognormal(np.log(50), 0.6, 80), 2))
    frame = _orders([*genuine, 0.0, 999999.0, 48_000.0])
    out = clean_table("orders", frame, rules())
    assert out.counts() == {"test_orders": 2, "amount_outliers": 1}
    outlier = next(f for f in out.removed if f["rule"].iloc[0] == "amount_outliers")
    assert outlier["amount"].tolist() == [48_000.0] and "median" in outlier["detail"].iloc[0]
    assert len(out.frame) == 80
    # Too few orders to say what is far: no bound.
    assert clean_table("orders", frame.iloc[-10:], rules()).counts() == {"test_orders": 2}
    # One bound per group: log-amounts spread +-0.8 around the median (MAD 0.4), so the bound at k = 10
    # is e^4 = 55 x the median: 5,000 is absurd in a shop of 50s, ordinary in one of 500s.
    spread = np.exp(np.linspace(-0.8, 0.8, 81))
    shops = _orders([*(50 * spread), *(500 * spread), 5_000.0]).assign(shop=["s"] * 81 + ["b"] * 81 + ["s"])
    by_shop = rules(amount_outliers={"group_by": "shop"})
    assert clean_table("orders", shops, by_shop).counts() == {"amount_outliers": 1}
    assert clean_table("orders", shops.assign(shop=["s"] * 81 + ["b"] * 82), by_shop).counts() == {}
    with pytest.raises(ConfigError, match="group_by"):
        clean_table("orders", frame, rules(amount_outliers={"group_by": "shop"}))


def test_test_accounts_leave_every_table():
    log = tiny_event_log()
    config = rules(test_accounts={"customer_ids": ["c2"], "patterns": ["c[3-9]"]})
    for table in ("customers", "orders", "page_views", "complaints"):
        out = clean_table(table, log[table], config)
        assert set(out.frame["customer_id"]) <= {"c1"}, table
        assert out.counts() == {"test_accounts": int(log[table]["customer_id"].isin(["c2", "c3"]).sum())}


def test_cancellations_are_netted_against_their_original():
    frame = _orders(
        [100.0, 80.0, 40.0, 25.0, -100.0, -30.0, -40.0, -10.0, -25.0],
        customers=["a", "a", "b", "c", "a", "a", "b", "d", "e"],
        ids=["O1", "O2", "O3", "O4", "C-O1", "O2-R", "X9", "X10", "C-O4"],
    )
    out = clean_table("orders", frame, rules())
    gone = pd.concat(out.removed).set_index("order_id")["detail"]
    assert gone.to_dict() == {
        "O1": "cancelled by C-O1",
        "O3": "cancelled by X9",
        "C-O1": "netted into O1 (cancelled in full)",
        "O2-R": "netted into O2 (80.00 -> 50.00)",
        "X9": "netted into O3 (cancelled in full)",  # matched by amount, same customer
        "X10": "no original order found in this file",
        "C-O4": "no original order found in this file",  # O4 is another customer's
    }
    kept = out.frame.set_index("order_id")["amount"]
    assert kept.to_dict() == {"O2": 50.0, "O4": 25.0}
    assert out.counts() == {"cancellations": 7}

    # A partial return matched by the order it fits in, and a cancellation after the window.
    late = _orders([60.0, -20.0, -5.0], customers=["a", "a", "a"], ids=["P1", "Y1", "Y2"], step=pd.Timedelta(days=10))
    covering = clean_table("orders", late, rules(cancellations={"match": ["covering"], "within_days": 15}))
    assert covering.frame.set_index("order_id")["amount"].to_dict() == {"P1": 40.0}
    assert pd.concat(covering.removed).set_index("order_id")["detail"]["Y2"] == "no original order found in this file"
    # Recognised by prefix and by a negative line quantity, not only by a negative amount.
    marked = _orders([70.0, 70.0, 0.0], customers=["a"] * 3, ids=["Q1", "CQ1", "Z"])
    config = rules(cancellations={"id_prefix": "C", "quantity_column": "Quantity"})
    negative = pd.Series([False, False, True], index=marked.index)
    out = clean_table("orders", marked.assign(amount=[70.0, 70.0, 3.0]), config, {"negative_quantity": negative})
    assert out.frame.empty and out.counts() == {"cancellations": 3}


def test_content_duplicates_keep_the_first():
    log = tiny_event_log()
    complaints = log["complaints"]
    again = complaints.iloc[[0, 0]].assign(
        complaint_id=["k1b", "k1c"],
        opened_at=[complaints["opened_at"][0] + pd.Timedelta(minutes=9),
                   complaints["opened_at"][0] + pd.Timedelta(minutes=80)],
    )
    frame = pd.concat([complaints, again], ignore_index=True)
    out = clean_table("complaints", frame, rules())
    assert out.counts() == {"content_duplicates": 1}
    assert pd.concat(out.removed)["detail"].tolist() == ["repeats k1 of 9 min before"]
    assert sorted(out.frame["complaint_id"]) == ["k1", "k1c", "k2"]


# ---- the missing-value policy and duplicate rows, through the ingest ---------------------------------------------
def _orders_csv(tmp_path: Path, n: int, empty: int, name: str = "orders.csv") -> Path:
    rows = [f"O{i},{'' if i < empty else f'c{i % 5}'},2026-01-{1 + i % 28:02d},{10 + i}.5" for i in range(n)]
    path = tmp_path / name
    path.write_text("order_id,customer_id,ordered_at,amount\n" + "\n".join(rows) + "\n")
    return path


def test_rows_missing_a_key_are_quarantined_up_to_the_share_else_the_ingest_fails(tmp_path):
    store = tmp_path / "events"
    report = ingest(_orders_csv(tmp_path, 40, 1), store=store)  # 2.5 %: under the 5 % default
    assert report.removed() == {"orders": {"missing_customer": 1}}
    held = quarantined(store, "orders")
    assert held[["rule", "detail", "source_row", "order_id"]].values.tolist() == [
        ["missing_customer", "customer_id is empty", 1, "O0"]
    ]
    assert held["source"].iloc[0] == str((tmp_path / "orders.csv").resolve())

    with pytest.raises(DataError) as err:  # 7.5 %: a broken export
        ingest(_orders_csv(tmp_path, 40, 3, "more.csv"), store=store)
    message = str(err.value)
    assert "more.csv: column 'customer_id': missing value in 3 of 40 rows (7.5%)" in message
    assert "in 3 row(s)" in message and "row 1: <empty>" in message

    cmap = ColumnMap.model_validate({"cleaning": {"missing_values": {"columns": {"orders.customer_id": "quarantine"}}}})
    report = ingest(_orders_csv(tmp_path, 40, 3, "more.csv"), store=store, column_map=cmap)
    assert report.removed() == {"orders": {"missing_customer": 3}}


def test_empty_text_fields_are_filled_and_exact_repeats_quarantined(tmp_path):
    log = tiny_event_log()
    complaints = log["complaints"].assign(channel=[None, "phone"])
    orders = pd.concat([log["orders"], log["orders"].iloc[[1]]], ignore_index=True)  # o2 exported twice
    paths = {
        "orders": write_table(orders, tmp_path, "orders", "csv"),
        "complaints": write_table(complaints, tmp_path, "complaints", "csv"),
    }
    report = ingest(paths["orders"], complaints=paths["complaints"], store=tmp_path / "events")
    assert report.removed() == {"orders": {"duplicate_rows": 1}}
    assert any("filled with 'unknown'" in n for n in report.notes)
    stored = EventStore(tmp_path / "events").read("complaints").set_index("complaint_id")
    assert stored.loc["k1", "channel"] == "unknown"
    assert quarantined(tmp_path / "events", "orders")["source_row"].tolist() == [5]
    # Without ids equal rows stay two events (two equal purchases on one day).
    plain = tmp_path / "plain.csv"
    plain.write_text("customer_id,ordered_at,amount\nc1,2026-01-05,5.0\nc1,2026-01-05,5.0\n")
    assert ingest(plain, store=tmp_path / "other").tables["orders"].added == 2


# ---- the quarantine ---------------------------------------------------------------------------------------------
def _dirty_log(tmp_path: Path) -> dict[str, Path]:
    """The tiny log plus a bot day, a short view, a test order, a cancellation and a duplicate complaint."""
    log = tiny_event_log()
    bot = _views([("c2", "sb", T0 + pd.Timedelta(seconds=7 * i)) for i in range(120)])
    short = _views([("c3", "s3", pd.Timestamp("2026-02-10T06:49:58Z"))])  # 2 s before c3's next view
    log["page_views"] = pd.concat([log["page_views"], bot, short], ignore_index=True)
    extra = _orders([999999.0, -40.0], customers=["c3", "c1"], ids=["o-test", "Co2"],
                    start=pd.Timestamp("2026-02-11T00:00Z"))
    log["orders"] = pd.concat([log["orders"], extra], ignore_index=True)
    twice = log["complaints"].iloc[[1]].assign(complaint_id="k9", opened_at=pd.Timestamp("2026-02-12T15:05:00Z"))
    log["complaints"] = pd.concat([log["complaints"], twice], ignore_index=True)
    return {name: write_table(df, tmp_path / "raw", name, "parquet") for name, df in log.items()}


EXPECTED = {
    "orders": {"cancellations": 2, "test_orders": 1},
    "page_views": {"bots": 120, "short_views": 1},
    "complaints": {"content_duplicates": 1},
}


def test_quarantine_counts_are_kept_and_a_second_ingest_adds_nothing(tmp_path):
    paths = _dirty_log(tmp_path)
    store_dir = tmp_path / "events"
    report = ingest(paths["orders"], **{t: p for t, p in paths.items() if t != "orders"}, store=store_dir)
    assert report.removed() == EXPECTED
    assert report.tables["orders"].added == 3  # o1 and o3, o4; o2 was cancelled in full
    store = EventStore(store_dir)
    assert store.quarantine_counts() == EXPECTED
    manifest = store.manifest()
    assert manifest["ingested"][-1]["quarantined"] == EXPECTED
    assert {e["table"] for e in manifest["quarantine"].values()} == set(EXPECTED)
    assert {s.table: s.quarantined for s in validate_store(store_dir) if s.quarantined} == EXPECTED
    held = quarantined(store_dir, "orders").set_index("order_id")
    assert held.loc["o2", "detail"] == "cancelled by Co2" and held.loc["Co2", "source_row"] == 6

    before = snapshot(store_dir, quarantine_root(store_dir))
    again = ingest(paths["orders"], **{t: p for t, p in paths.items() if t != "orders"}, store=store_dir)
    assert again.removed() == EXPECTED and not again.changed
    assert not any(r.quarantine_new for r in again.tables.values())
    assert snapshot(store_dir, quarantine_root(store_dir)) == before


def test_a_killed_runs_quarantine_file_is_reported_and_removed_by_the_next_ingest(tmp_path):
    paths = _dirty_log(tmp_path)
    store_dir = tmp_path / "events"
    ingest(paths["orders"], store=store_dir)
    left = quarantine_root(store_dir) / "orders" / "0123456789abcdef0000.parquet"
    pd.DataFrame({"rule": ["bots"]}).to_parquet(left)  # as if written just before a killed commit
    with pytest.raises(DataError, match="quarantine file not in the manifest"):
        validate_store(store_dir)
    ingest(paths["orders"], store=store_dir)
    assert not left.exists()
    validate_store(store_dir)
    recorded = next(iter(EventStore(store_dir).manifest()["quarantine"]))
    (quarantine_root(store_dir) / recorded).unlink()
    with pytest.raises(DataError, match="listed in the manifest's quarantine but missing"):
        validate_store(store_dir)


def test_a_file_whose_every_row_is_removed_adds_nothing_but_its_quarantine(tmp_path):
    path = write_table(tiny_event_log()["orders"], tmp_path, "orders", "csv")
    config = rules(test_accounts={"patterns": ["c.*"]})
    report = ingest(path, store=tmp_path / "events", cleaning=config)
    assert report.tables["orders"].added == 0 and report.removed() == {"orders": {"test_accounts": 4}}
    assert len(quarantined(tmp_path / "events", "orders")) == 4


def test_forget_purges_the_quarantine(project_home):
    from core.settings import project_paths
    from pipelines.forget import forget

    paths = _dirty_log(project_home / "in")
    ingest(paths["orders"], page_views=paths["page_views"])
    assert "c2" in set(quarantined(project_paths().events, "page_views")["customer_id"])
    report = forget(["c2"], check_tracking=False)
    assert any(k.startswith("quarantine: page_views/") for k in report.removed)
    assert "c2" not in set(quarantined(project_paths().events, "page_views")["customer_id"])
    validate_store()  # scrubbing a quarantine file keeps the store valid


def test_cli_prints_rows_removed_per_rule_and_validate_shows_them(tmp_path, monkeypatch):
    from pipelines.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    paths = _dirty_log(tmp_path)
    args = ["ingest", "--store", str(tmp_path / "events")]
    for table, path in paths.items():
        args += [f"--{table.replace('_', '-')}", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "removed by the cleaning rules" in result.output
    for rule in ("bots", "short_views", "test_orders", "cancellations", "content_duplicates"):
        assert rule in result.output
    result = CliRunner().invoke(app, ["validate", "--store", str(tmp_path / "events")])
    assert result.exit_code == 0, result.output
    assert "quarantine (rows per cleaning rule)" in result.output and "120" in result.output
    off = CliRunner().invoke(
        app, ["ingest", "--orders", str(paths["orders"]), "--no-cleaning", "--store", str(tmp_path / "e2")]
    )
    assert isinstance(off.exception, DataError) and "must be >= 0" in str(off.exception)


# ---- order lines (the shape of the online retail log) -----------------------------------------------------------
RETAIL_MAP = REPO_ROOT / "configs" / "examples" / "online_retail.yaml"
RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\r\n"


def _retail_csv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "retail.csv"
    path.write_bytes((RETAIL_HEADER + "\r\n".join(lines) + "\r\n").encode("iso-8859-1"))
    return path


def test_order_lines_are_added_up_into_orders_with_the_retail_map(tmp_path):
    path = _retail_csv(tmp_path, [
        "536365,85123A,WHITE HANGING HEART ,6,12/1/2010 8:26,2.55,17850,United Kingdom",
        "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:27,3.39,17850,United Kingdom",
        "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:27,3.39,17850,United Kingdom",  # exported twice
        "536366,22633,HAND WARMER £ UNION JACK,6,12/1/2010 8:28,1.85,,United Kingdom",  # no customer
        "536367,84879,ASSORTED BIRD ORNAMENT,32,12/2/2010 9:00,1.69,13047,United Kingdom",
        "C536368,84879,ASSORTED BIRD ORNAMENT,-8,12/3/2010 10:00,1.69,13047,United Kingdom",
        "C536369,22960,JAM MAKING SET,-1,12/3/2010 11:00,0,13047,United Kingdom",  # price 0: quantity tells
    ])
    store = tmp_path / "events"
    report = ingest(path, column_map=RETAIL_MAP, store=store)
    assert report.tables["orders"].rows_read == 7
    assert report.removed() == {"orders": {"cancellations": 2, "duplicate_rows": 1, "missing_customer": 1}}
    orders = EventStore(store).read("orders").set_index("order_id")
    assert list(orders.columns) == ["customer_id", "ordered_at", "amount", "Country"]
    assert orders.loc["536365", "amount"] == 35.64  # 6 x 2.55 + 6 x 3.39, the repeated line not counted
    assert orders.loc["536365", "ordered_at"] == pd.Timestamp("2010-12-01T08:26Z")  # London is UTC in winter
    assert orders.loc["536367", "amount"] == round(32 * 1.69 - 8 * 1.69, 6)  # netted with C536368
    held = quarantined(store, "orders").set_index("source_row")
    assert held.loc[4, "Description"] == "HAND WARMER £ UNION JACK"  # ISO-8859-1 read as such
    assert held.loc[3, "rule"] == "duplicate_rows" and held.loc[6, "rule"] == "cancellations"
    assert held.loc[6, "detail"] == "netted into 536367 (54.08 -> 40.56)"
    assert held.loc[7, "detail"] == "amount 0: nothing to net"

    again = ingest(path, column_map=RETAIL_MAP, store=store)
    assert not again.changed and not again.tables["orders"].quarantine_new


def test_order_lines_problems_name_file_and_column(tmp_path):
    latin = _retail_csv(tmp_path, ["536366,22633,HAND WARMER £,6,12/1/2010 8:28,1.85,17850,United Kingdom"])
    cmap = yaml.safe_load(RETAIL_MAP.read_text())
    cmap.pop("encoding")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(cmap))
    with pytest.raises(DataError, match=r"retail\.csv: not UTF-8 text .*encoding: iso-8859-1"):
        ingest(latin, column_map=plain, store=tmp_path / "events")

    two = _retail_csv(tmp_path, [
        "536365,85123A,A,6,12/1/2010 8:26,2.55,17850,United Kingdom",
        "536365,71053,B,6,12/1/2010 8:26,3.39,17851,United Kingdom",
    ])
    with pytest.raises(DataError, match=r"column 'customer_id': the lines of one order name more than one customer in 1 row\(s\): row 1: '536365'"):
        ingest(two, column_map=RETAIL_MAP, store=tmp_path / "events")

    cmap["orders"]["columns"]["amount"] = {"multiply": ["Qty", "UnitPrice"]}
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(cmap))
    with pytest.raises(DataError, match=r"column 'Qty': not in the file, but the column map multiplies it for orders\.amount"):
        ingest(two, column_map=wrong, store=tmp_path / "events")
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        ColumnMap.model_validate({"encoding": "utf-16"})


def test_the_example_maps_validate():
    from pipelines.ingest import load_column_map

    retail = load_column_map(RETAIL_MAP)
    assert retail.orders.lines is not None and retail.encoding == "iso-8859-1"
    assert retail.cleaning["cancellations"]["id_prefix"] == "C"
    example = load_column_map(REPO_ROOT / "configs" / "column_map.example.yaml")
    assert json.dumps(example.model_dump(), default=str)
