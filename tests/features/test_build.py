"""The feature build against a pandas reference, incremental writes, and absent event families."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest

from core.errors import DataError
from core.settings import project_paths
from features.build import build_features, built_dates, read_snapshot, snapshot_file
from features.catalog import VIEWS
from features.settings import FeaturesConfig, SnapshotConfig
from tests.features.conftest import END, random_events, write_store
from tests.features.reference import reference_features

SHORT = FeaturesConfig(snapshots=SnapshotConfig(history_days=21))


def read_all_views(day: dt.date) -> pd.DataFrame:
    built = read_snapshot(project_paths().feature_sources, day)
    assert list(built.columns[2:]) == [f for v in VIEWS.values() for f in v.names]  # catalogue order
    return built.set_index("customer_id").drop(columns="event_timestamp").sort_index()


def test_every_feature_equals_the_pandas_reference(random_store):
    summary = build_features(END.date(), config=SHORT)
    assert summary.snapshots[-1] == END.date() and len(summary.snapshots) >= 3
    # Every date: the middle ones read the per-bucket reductions in between.
    for day in summary.snapshots:
        built = read_all_views(day)
        expected = reference_features(random_store, pd.Timestamp(day, tz="UTC"))
        assert list(built.index) == list(expected.index)
        assert len(built) > 10
        for col in expected.columns:
            np.testing.assert_allclose(
                built[col].astype(float), expected[col].astype(float), rtol=1e-9, equal_nan=True, err_msg=col
            )
        # The data is not trivially zero: windows, sessions and complaints all have values.
        assert built["orders_30d"].sum() > 0 and built["abandoned_carts_30d"].sum() > 0
        assert built["open_complaints"].sum() > 0


def test_transactions_only_store_gives_null_browse_and_complaints(project_home):
    tables = random_events()
    write_store(project_home, {"orders": tables["orders"]})
    build_features(END.date(), config=SHORT)
    built = read_all_views(END.date())
    for name in (*VIEWS["customer_browse"].names, *VIEWS["customer_complaints"].names):
        assert built[name].isna().all(), name
    assert built[["last_visit_at", "last_complaint_at", "last_product_view_at"]].isna().all().all()
    expected = reference_features({"orders": tables["orders"]}, END)
    for col in ("orders_90d", "spend_365d", "active_days_90d", "last_order_at", "signup_at"):
        np.testing.assert_allclose(built[col], expected[col], equal_nan=True, err_msg=col)


def test_rebuilding_a_date_replaces_it_and_new_dates_append(project_home):
    tables = random_events()
    write_store(project_home, tables)
    first = build_features(END.date(), config=SHORT)
    sources = project_paths().feature_sources
    assert built_dates(sources) == first.snapshots
    before = read_all_views(END.date())

    # A late order inside the last day: rebuilding the same date picks it up and keeps one file per date.
    late = pd.DataFrame(
        {"order_id": ["late"], "customer_id": ["c000"], "ordered_at": [END - pd.Timedelta(hours=1)], "amount": [10.0]}
    )
    month = tables["orders"][tables["orders"].ordered_at.dt.strftime("%Y-%m") == "2026-02"]
    write_store(project_home, {"orders": pd.concat([month, late], ignore_index=True)})
    again = build_features(END.date(), config=SHORT)
    assert again.snapshots == [END.date()]
    assert built_dates(sources) == first.snapshots
    after = read_all_views(END.date())
    assert after.loc["c000", "orders_7d"] == before.loc["c000", "orders_7d"] + 1

    later = END.date() + dt.timedelta(days=10)
    appended = build_features(later, config=SHORT)
    assert appended.snapshots[-1] == later and END.date() not in appended.snapshots
    assert built_dates(sources) == sorted({*first.snapshots, *appended.snapshots})


def test_store_without_orders_is_a_clear_error(project_home):
    with pytest.raises(DataError, match="no orders"):
        build_features(END.date(), config=SHORT)


def test_a_snapshot_without_every_feature_and_the_old_layout_are_rebuilt(project_home):
    """A file lacking a catalogued feature (built before it existed) counts as not built; the per-view
    folders of the earlier layout are removed by the next build, which writes their dates again."""
    import pyarrow.parquet as pq

    write_store(project_home, random_events())
    first = build_features(END.date(), config=SHORT)
    sources = project_paths().feature_sources
    oldest = first.snapshots[0]
    table = pq.read_table(snapshot_file(sources, oldest))
    pq.write_table(table.drop_columns(["orders_gap_std_days"]), snapshot_file(sources, oldest))
    assert oldest not in built_dates(sources) and len(built_dates(sources)) == len(first.snapshots) - 1

    legacy = sources / "customer_recency"
    shutil.rmtree(sources)  # a home with only the old layout: every date is built again
    sources.mkdir()
    legacy.mkdir()
    pq.write_table(table.select(["customer_id", "event_timestamp", "last_order_at"]), legacy / f"date={oldest}.parquet")
    again = build_features(END.date(), config=SHORT)
    assert again.snapshots == first.snapshots and built_dates(sources) == first.snapshots
    assert not legacy.exists()
