"""The project's DuckDB offline store (features.duckdb_offline: rows pinned to their snapshot file, one
equi-join) gives exactly what Feast's own DuckDB join gives: every view, row by row, in the entity order,
with the same columns and dtypes, for rows on and between snapshot dates, at the TTL edge and one second
past it, before the first snapshot, for an unknown customer and a duplicated row; with full feature names
too; and a source that is not one snapshot per file goes to Feast's join."""

from __future__ import annotations

import pandas as pd
import pytest

from core.settings import project_paths
from features.build import build_features, built_dates
from features.catalog import VIEWS
from features.settings import FeaturesConfig, SnapshotConfig
from tests.features.conftest import EDGE_ROWS, END, point_in_time_rows

DAY = pd.Timedelta(days=1)


@pytest.fixture
def three_snapshots(project_home, random_store):
    from features.store import apply

    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=14))
    build_features(END.date(), config=config)
    apply(config)
    dates = [pd.Timestamp(d, tz="UTC") for d in built_dates(project_paths().feature_sources)]
    assert len(dates) == 3
    return config, dates


def _entity_rows(dates, ttl, n=150):
    return point_in_time_rows(dates, ttl, n, seed=5)


def _both(config, entity, full_feature_names=False):
    """(ours, Feast's join) of every view's features, as Feast's ``to_df`` gives them."""
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    from features.duckdb_offline import PinnedDuckDBRetrievalJob
    from features.store import feature_store

    store = feature_store(config)
    # No model's service reads every view: ask for every view's features by reference.
    views = [store.get_feature_view(v) for v in VIEWS]
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    ours = store.get_historical_features(entity_df=entity, features=refs, full_feature_names=full_feature_names)
    assert isinstance(ours, PinnedDuckDBRetrievalJob)
    theirs = DuckDBOfflineStore.get_historical_features(store.config, views, refs, entity, store.registry,
                                                        store.project, full_feature_names)
    # Feast's join does not keep the entity order; ours does.
    expected = theirs.to_df().sort_values("label", kind="stable").reset_index(drop=True)
    return ours.to_df(), expected


def test_pinned_join_gives_feasts_rows(three_snapshots):
    config, dates = three_snapshots
    entity = _entity_rows(dates, config.snapshots.ttl_days * DAY)
    got, expected = _both(config, entity)
    assert got["label"].tolist() == entity["label"].tolist()
    pd.testing.assert_frame_equal(got, expected[got.columns], check_exact=True)
    assert list(got.columns) == list(expected.columns)
    # The comparison covers what it claims: values from every snapshot, and nulls past the TTL.
    n = len(entity) - EDGE_ROWS
    features = [c for c in got.columns if c not in entity.columns]
    for day in dates:
        on = (entity["event_timestamp"] >= day) & (entity["event_timestamp"] < day + 7 * DAY)
        assert got.loc[on, features].notna().any(axis=1).sum() > 5, day
    assert got.loc[n, features].notna().any() and got.loc[n + 2, features].isna().all()
    assert got.loc[n + 5, features].isna().all()  # before the first snapshot


def test_full_feature_names_and_no_snapshot_for_any_row(three_snapshots):
    config, dates = three_snapshots
    entity = _entity_rows(dates, config.snapshots.ttl_days * DAY)
    got, expected = _both(config, entity, full_feature_names=True)
    pd.testing.assert_frame_equal(got, expected[got.columns], check_exact=True)
    assert any("__" in c for c in got.columns)
    before = entity.assign(event_timestamp=dates[0] - DAY)  # no row has any snapshot
    got, expected = _both(config, before)
    pd.testing.assert_frame_equal(got, expected[got.columns], check_exact=True)
    assert got[[c for c in got.columns if c not in entity.columns]].isna().all().all()


def test_a_source_that_is_not_one_snapshot_per_file_goes_to_feasts_join(three_snapshots):
    from features.pinning import snapshot_files
    from features.store import feature_store

    config, dates = three_snapshots
    view = feature_store(config).get_feature_view("customer_recency")
    assert len(snapshot_files(view)) == 3
    # Two snapshots in one file: no single time per file.
    files = sorted(project_paths().feature_sources.glob("*.parquet"))
    both = pd.concat([pd.read_parquet(f) for f in files[:2]], ignore_index=True)
    files[1].unlink()
    both.to_parquet(files[0], index=False)
    assert snapshot_files(view) is None
    entity = _entity_rows(dates, config.snapshots.ttl_days * DAY)
    from features.duckdb_offline import PinnedDuckDBRetrievalJob

    store = feature_store(config)
    job = store.get_historical_features(entity_df=entity, features=store.get_feature_service("churn_v1"))
    assert not isinstance(job, PinnedDuckDBRetrievalJob)
    assert len(job.to_df()) == len(entity)


def test_views_of_one_file_share_a_join_unless_their_pins_differ(three_snapshots):
    """Every view reads the same file per date, so with one TTL the entity rows are joined once; a view
    with a shorter TTL pins some rows elsewhere (to nothing) and gets its own join, still Feast's answer."""
    import copy
    from datetime import timedelta

    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    from features.duckdb_offline import PropensityDuckDBOfflineStore
    from features.store import feature_store

    config, dates = three_snapshots
    store = feature_store(config)
    views = [store.get_feature_view(v) for v in VIEWS]
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    entity = _entity_rows(dates, config.snapshots.ttl_days * DAY)

    def ours(views):
        return PropensityDuckDBOfflineStore.get_historical_features(
            store.config, views, refs, entity, store.registry, store.project)

    assert ours(views)._sql.count("LEFT JOIN") == 1
    short = copy.copy(views[0])
    short.ttl = timedelta(days=3)
    mixed = [short, *views[1:]]
    job = ours(mixed)
    assert job._sql.count("LEFT JOIN") == 2
    got = job.to_df()
    expected = (DuckDBOfflineStore.get_historical_features(store.config, mixed, refs, entity, store.registry,
                                                          store.project).to_df()
                .sort_values("label", kind="stable").reset_index(drop=True))
    pd.testing.assert_frame_equal(got, expected[got.columns], check_exact=True)
    # The short TTL did pin rows differently: some rows have the other views' values and not its own.
    own = got[[f.name for f in short.features]].isna().all(axis=1)
    others = got[[f.name for f in views[1].features]].notna().any(axis=1)
    assert (own & others).sum() > 0
