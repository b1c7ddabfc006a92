"""Feast's Ray offline store (``offline_store.type: ray``) gives the DuckDB store's answers: every feature
view (through the service that reads them all), row by row, on a tiny project with several snapshots, for rows on and between snapshot dates,
at the TTL edge and one second past it, before the first snapshot, for an unknown customer and for a
duplicated row (features.ray_offline says what Feast's Ray store does differently as shipped)."""

from __future__ import annotations

import pandas as pd
import pytest

from core.settings import project_paths
from features.build import build_features, built_dates
from features.catalog import SERVICES, VIEWS, service_raw_features, service_views
from features.settings import FeaturesConfig, OfflineStoreConfig, RayOfflineConfig, SnapshotConfig
from tests.features.conftest import END, point_in_time_rows

DAY = pd.Timedelta(days=1)
SECOND = pd.Timedelta(seconds=1)


def test_rows_are_pinned_to_the_newest_snapshot_within_the_ttl():
    from features.pinning import pins as _pins

    snaps = {"a": pd.Timestamp("2026-01-01", tz="UTC"), "b": pd.Timestamp("2026-01-08", tz="UTC")}
    ttl = pd.Timedelta(days=30)
    times = pd.Series(pd.to_datetime([
        "2025-12-31 23:59:59", "2026-01-01", "2026-01-07 12:00", "2026-01-08", "2026-02-07", "2026-02-07 00:00:01",
    ], utc=True, format="ISO8601"))
    # before any snapshot, on the first, between, on the second, at its TTL edge (kept), one second past
    assert _pins(times, snaps, ttl).tolist() == [-1, 0, 0, 1, 1, -1]


def test_the_setting_picks_feasts_ray_store(project_home):
    from features.duckdb_offline import STORE_TYPE as DUCKDB_STORE
    from features.ray_offline import STORE_TYPE, PropensityRayOfflineStoreConfig
    from features.store import repo_config

    assert repo_config(FeaturesConfig()).offline_store.type == DUCKDB_STORE
    ray = FeaturesConfig(offline_store=OfflineStoreConfig(type="ray", ray=RayOfflineConfig(num_cpus=2)))
    offline = repo_config(ray).offline_store
    assert isinstance(offline, PropensityRayOfflineStoreConfig)
    assert offline.type == STORE_TYPE and offline.num_cpus == 2


def test_feasts_reads_use_ray_datas_first_parquet_reader_unless_the_user_chose(monkeypatch):
    import ray.data

    from features.ray_offline import V2_READER, parquet_reader_v1

    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "use_datasource_v2", True)
    monkeypatch.delenv(V2_READER, raising=False)
    with parquet_reader_v1():
        assert context.use_datasource_v2 is False
    assert context.use_datasource_v2 is True  # restored: the caller's Ray Data is left as it was
    monkeypatch.setenv(V2_READER, "1")  # the user's own choice stands
    with parquet_reader_v1():
        assert context.use_datasource_v2 is True


@pytest.fixture
def local_ray(monkeypatch):
    """The store starts Ray itself (a local one: RAY_ADDRESS unset); stopped after the test."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    import ray

    ray.shutdown()


@pytest.mark.slow
def test_ray_store_gives_the_duckdb_stores_rows_for_every_view(project_home, random_store, local_ray):
    from features.retrieval import historical_features
    from features.store import apply

    # Two weekly snapshots: rows on, between and past them. Each (snapshot, chunk, view) is one Ray Data
    # pipeline of seconds, so a third snapshot would only add minutes.
    duck = FeaturesConfig(snapshots=SnapshotConfig(history_days=7))
    build_features(END.date(), config=duck)
    apply(duck)
    dates = [pd.Timestamp(d, tz="UTC") for d in built_dates(project_paths().feature_sources)]
    assert len(dates) == 2
    ttl = duck.snapshots.ttl_days * DAY
    n = 120
    entity = point_in_time_rows(dates, ttl, n, seed=4)
    ray = duck.model_copy(update={"offline_store": OfflineStoreConfig(
        type="ray", ray=RayOfflineConfig(num_cpus=2, min_chunk_rows=20))})  # several chunks per snapshot
    # The fewest services that read every view between them (each Feast call on Ray costs seconds of Ray
    # Data start-up; the other services read subsets of the same views through the same code).
    services, left = [], set(VIEWS)
    while left:
        best = max(SERVICES, key=lambda s: len(left & set(service_views(s))))
        services.append(best)
        left -= set(service_views(best))
    assert len(services) <= 2
    for service in services:
        expected = historical_features(entity, service, duck)
        got = historical_features(entity, service, ray)
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=service)
        raw = service_raw_features(service)
        # The comparison covers what it claims: values from several snapshots, and nulls past the TTL.
        assert expected[raw].notna().any(axis=1).sum() > n // 2, service
        assert expected.loc[n, raw].notna().any() and expected.loc[n + 2, raw].isna().all(), service
