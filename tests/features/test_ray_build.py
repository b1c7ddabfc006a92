"""The feature build on Ray (``build.engine: ray``, features.ray_build) writes the local build's files: the
customer shards partition the population, their BG/NBD samples merge into the local one, and every
snapshot file is equal value for value."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from core.events import EventStore
from core.settings import project_paths
from features.build import (
    _prepare,
    build_features,
    built_dates,
    connect,
    read_snapshot,
    rhythm_sample,
    snapshot_file,
    snapshot_tables,
)
from features.ray_build import merge_samples
from features.settings import BuildConfig, FeaturesConfig, RayBuildConfig, SnapshotConfig
from tests.features.conftest import END

UNTIL = END.date()
DATES = [UNTIL - dt.timedelta(days=14), UNTIL - dt.timedelta(days=7), UNTIL]


def _sample(day: dt.date, shard=None, fit_customers: int = 25) -> dict:
    paths = project_paths()
    con = connect("1GB", 1, paths.data / ".duckdb_tmp")
    try:
        store = EventStore(paths.events)
        present = {t: store.has(t) for t in ("customers", "orders", "page_views", "complaints")}
        _prepare(con, store, present, DATES, 7, shard=shard)
        snapshot_tables(con, day, present)
        return rhythm_sample(con, day, fit_customers, present)
    finally:
        con.close()


def test_shards_partition_the_customers_and_their_samples_merge_into_the_whole_one(random_store):
    # 25 of the buyers: fewer than there are, so the merge has to pick the same first ones by key.
    whole = _sample(DATES[1])
    parts = [_sample(DATES[1], (k, 3)) for k in range(3)]
    merged = merge_samples(parts, 25)
    # The buyers (BG/NBD and Gamma-Gamma) and the visitors (the visit rhythm's BG/NBD), each merged alone.
    for what, columns in (("orders", ("x", "t_x", "T", "m")), ("visits", ("x", "t_x", "T"))):
        keys = [set(p[what]["key"]) for p in parts]
        assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
        assert all(len(k) > 0 for k in keys)
        assert list(merged[what]["key"]) == list(whole[what]["key"]) and len(whole[what]["key"]) == 25
        for column in columns:
            np.testing.assert_array_equal(merged[what][column], whole[what][column])


@pytest.fixture
def local_ray(monkeypatch):
    """The build starts Ray itself (a local one: RAY_ADDRESS unset) and stops what it started."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    import ray

    assert not ray.is_initialized()  # the build stopped the Ray it started


@pytest.mark.slow
def test_ray_build_writes_the_local_builds_snapshots(random_store, local_ray):
    sources = project_paths().feature_sources
    history = SnapshotConfig(history_days=35)
    # One DuckDB thread, as in each shard: sums over a customer's rows then add in the same order.
    local = build_features(END.date(), config=FeaturesConfig(snapshots=history), threads=1)
    expected = {day: read_snapshot(sources, day) for day in built_dates(sources)}
    assert len(expected) == 6  # the weekly dates of 35 days, and --until
    for day in expected:
        snapshot_file(sources, day).unlink()

    ray_config = FeaturesConfig(snapshots=history, build=BuildConfig(
        engine="ray", ray=RayBuildConfig(shards=3, num_cpus=3)))
    on_ray = build_features(END.date(), config=ray_config)
    assert built_dates(sources) == list(expected)
    assert (on_ray.events, on_ray.rows, on_ray.customers) == (local.events, local.rows, local.customers)
    assert not [p.name for p in sources.iterdir() if p.suffix == ".tmp"]  # no part file left
    for day, frame in expected.items():
        got = read_snapshot(sources, day)
        assert list(got.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(got, frame, check_exact=True, obj=f"snapshot {day}")
        # The fit is the population's, not a shard's: the same parameters on every row.
        assert got["btyd_r"].nunique(dropna=False) == 1
