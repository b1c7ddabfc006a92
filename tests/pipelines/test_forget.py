"""`propensity forget`: the customer disappears from the event store, raw exports, feature sources and
scores (every as-of and latest); other customers are untouched; the report says what went. The online
store part runs in the end-to-end test (test_run.py), where a real Feast store exists."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import PropensityError
from core.events import EventStore
from core.settings import project_paths
from pipelines.forget import forget
from serving.batch import refresh_latest
from tests.pipelines.conftest import tiny_event_log


@pytest.fixture
def filled_project(project_home):
    paths = project_paths()
    log = tiny_event_log()
    EventStore(paths.events).replace_months(log, {"families": {t: "present" for t in log}, "ingested": []})
    paths.raw.mkdir(parents=True)
    log["orders"].to_csv(paths.raw / "orders.csv", index=False)
    log["customers"].to_parquet(paths.raw / "customers.parquet", index=False)
    paths.feature_sources.mkdir(parents=True)
    pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "orders_30d": [1, 2, 3],
                  "event_timestamp": pd.Timestamp("2026-02-15", tz="UTC")}).to_parquet(
        paths.feature_sources / "customer_frequency.parquet", index=False)
    for as_of in ("2026-02-08", "2026-02-15"):
        folder = paths.scores / as_of
        folder.mkdir(parents=True)
        scores = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "churn_probability": [0.1, 0.5, 0.9]})
        scores.to_parquet(folder / "scores.parquet", index=False)
        scores.to_csv(folder / "scores.csv", index=False)
        scores[["customer_id"]].assign(churn__orders_30d=[1.0, 2.0, 3.0]).to_parquet(folder / "features.parquet")
    refresh_latest(paths)
    (paths.mlruns / "artifacts").mkdir(parents=True)
    (paths.mlruns / "artifacts" / "note.txt").write_text("aggregate metrics only; cohort c3 looked odd\n")
    return paths


def test_forget_removes_the_customer_everywhere_and_reports_it(filled_project):
    paths = filled_project
    before = {t: EventStore(paths.events).read(t) for t in ("customers", "orders", "page_views", "complaints")}
    report = forget(["c1"])

    store = EventStore(paths.events)
    for table, old in before.items():
        new = store.read(table)
        assert "c1" not in set(new["customer_id"]), table
        # Everyone else is untouched, row for row.
        assert len(new) == (old["customer_id"] != "c1").sum(), table
    assert report.removed["event store: orders"] == 2
    assert report.removed["event store: page_views"] == 2
    assert report.removed["event store: customers"] == 1
    assert "c1" not in set(pd.read_csv(paths.raw / "orders.csv")["customer_id"])
    assert "c1" not in set(pd.read_parquet(paths.raw / "customers.parquet")["customer_id"])
    assert pd.read_parquet(paths.feature_sources / "customer_frequency.parquet")["customer_id"].tolist() == ["c2", "c3"]
    for as_of in ("2026-02-08", "2026-02-15"):
        for name in ("scores.parquet", "features.parquet"):
            assert pd.read_parquet(paths.scores / as_of / name)["customer_id"].tolist() == ["c2", "c3"]
        assert pd.read_csv(paths.scores / as_of / "scores.csv")["customer_id"].tolist() == ["c2", "c3"]
    assert pd.read_parquet(paths.scores / "latest.parquet")["customer_id"].tolist() == ["c2", "c3"]
    assert report.removed["scores: latest.parquet"] == 1
    assert report.not_found == [] and report.mlflow_hits == []
    # No temp file is left behind anywhere (core.io's temp names).
    assert not [p for p in paths.data.rglob(".*.tmp")]


def test_forget_drops_emptied_partitions_and_names_unknown_ids(filled_project):
    paths = filled_project
    report = forget(["c2", "nobody"])
    # c2 had the only complaint of January 2026: that partition is gone, February's stays.
    assert EventStore(paths.events).months("complaints") == ["2026-02"]
    assert report.not_found == ["nobody"]
    assert report.removed["event store: complaints"] == 1


def test_forget_reports_an_id_that_mlflow_mentions(filled_project):
    report = forget(["c3"])
    assert report.mlflow_hits == ["artifacts/note.txt"]
    # "c3" must match as a whole id, not inside another token.
    assert forget(["c"], check_tracking=True).mlflow_hits == []


def test_forget_needs_an_id(project_home):
    with pytest.raises(PropensityError, match="at least one customer id"):
        forget(["  "])


def test_the_store_still_validates_after_forget(filled_project):
    """forget goes through the event store's own commit: the manifest stays in step with the files."""
    from pipelines.ingest import validate_store

    forget(["c1", "c3"])
    tables = {t.table: t for t in validate_store()}
    assert tables["orders"].rows == (tiny_event_log()["orders"]["customer_id"] == "c2").sum()


def test_an_id_with_a_trailing_space_is_another_customer(filled_project):
    report = forget(["c1 "])
    assert "event store: orders" not in report.removed  # "c1" is untouched
    assert report.not_found == ["c1 "]
