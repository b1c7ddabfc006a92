"""`generate --anomalies`: the genuine rows stay those of a plain run, every kind of anomaly is there and
labelled, and the ingest's cleaning quarantines >= 99 % of each kind and <= 0.1 % of the genuine rows."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from core.events import EventStore
from pipelines.ingest import ingest
from pipelines.ingest.quarantine import quarantine_root
from pipelines.synthetic import generate
from pipelines.synthetic.anomalies import ANOMALIES_FILE, KINDS, score

SIZE = {"customers": 2000, "days": 150, "seed": 21, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain run and one with anomalies, same arguments, and the latter ingested with the shipped rules."""
    root = tmp_path_factory.mktemp("anomalies")
    plain = generate(out=root / "plain", **SIZE)
    dirty = generate(out=root / "dirty", anomalies=True, **SIZE)
    raw = dirty.out
    store = root / "events"
    report = ingest(
        raw / "orders.parquet",
        customers=raw / "customers.parquet",
        page_views=raw / "page_views.parquet",
        complaints=raw / "complaints.parquet",
        store=store,
    )
    return plain, dirty, store, report


def test_the_genuine_rows_are_those_of_a_plain_run(runs):
    plain, dirty, _, _ = runs
    labels = pd.read_parquet(dirty.files["anomalies"])
    injected = labels[labels["kind"].isin(["bot", "short_view", "test_order", "amount_outlier",
                                           "cancellation", "duplicate_complaint"])]
    digest = hashlib.sha256
    assert digest(plain.files["ground_truth"].read_bytes()).digest() == digest(
        dirty.files["ground_truth"].read_bytes()
    ).digest()
    for table, key in (("orders", ["order_id"]), ("complaints", ["complaint_id"]),
                       ("page_views", ["customer_id", "session_id", "viewed_at"])):
        mine = injected[injected["table"] == table]
        rows = pd.read_parquet(dirty.files[table])
        if table == "page_views":
            drop = rows.set_index(key).index.isin(mine.set_index(["customer_id", "session_id", "at"]).index)
        else:
            drop = rows[key[0]].isin(mine["row_id"]).to_numpy()
        genuine = rows[~drop].sort_values(key, ignore_index=True)
        expected = pd.read_parquet(plain.files[table]).sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(genuine, expected)
    customers = pd.read_parquet(dirty.files["customers"])
    assert len(customers) == SIZE["customers"] + 5  # the bots' accounts
    pd.testing.assert_frame_equal(customers.iloc[: SIZE["customers"]], pd.read_parquet(plain.files["customers"]))
    assert ANOMALIES_FILE not in {p.name for p in plain.out.iterdir()}


def test_cleaning_catches_the_anomalies_and_spares_the_genuine_rows(runs):
    _, dirty, store, report = runs
    card = score(dirty.out, quarantine_root(store))
    print("\n" + card.to_string(index=False))  # the measured table (pytest -s shows it)
    expected_rules = {rule for _, rule in KINDS.values() if rule}
    assert set(card["rule"]) == expected_rules  # no rule removed anything it was not meant to
    assert (card["injected"] > 0).all(), card
    assert (card["caught_share"] >= 0.99).all(), card
    assert (card["genuine_removed_share"] <= 0.001).all(), card
    removed = report.removed()
    assert removed["page_views"]["bots"] == int(card.set_index("rule").loc["bots", "caught"])


def test_partial_returns_leave_their_order_with_the_rest(runs):
    _, dirty, store, _ = runs
    labels = pd.read_parquet(dirty.files["anomalies"])
    returned = labels[labels["kind"] == "returned_order"]
    cancelled = labels[labels["kind"] == "cancelled_order"]
    assert len(returned) and len(cancelled)
    orders = EventStore(store).read("orders").set_index("order_id")
    assert (orders.loc[returned["row_id"], "amount"].to_numpy() - returned["expected_amount"].to_numpy()).max() < 0.006
    assert not cancelled["row_id"].isin(orders.index).any()


def test_cli_flag_writes_the_labels(project_home):
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--customers", "300", "--days", "40", "--seed", "2", "--anomalies", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    labels = pd.read_parquet(project_home / "data" / "raw" / ANOMALIES_FILE)
    assert {"bot", "short_view", "cancellation"} <= set(labels["kind"])
