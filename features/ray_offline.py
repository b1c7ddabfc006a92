"""Feast's Ray offline store (``offline_store.type: ray`` in configs/features.yaml), made to give the
DuckDB store's answers on this project's snapshots.

Feast names an offline store by class path; ``features.store.repo_config`` names this one. Its point-in-time
join is Feast's own (``RayOfflineStore.get_historical_features``, a broadcast ``merge_asof`` per Ray
block); this module decides what that join reads. Feast 0.67's Ray store, read as shipped
(feast/infra/offline_stores/contrib/ray_offline_store/ray.py), differs from the DuckDB store on our repo:

1. **Globs.** Our FileSource names ``*.parquet``, one file per date (what DuckDB reads); Ray's
   ``read_parquet`` does not expand globs (FileNotFoundError).
2. **No TTL.** The join has no ``tolerance``: a row 40 days after the last snapshot gets that snapshot's
   values, where DuckDB (``ttl_days``) gives nulls.
3. **More than one snapshot makes it quadratic.** It sorts the feature rows by (customer, time), which
   ``merge_asof`` rejects ("right keys must be sorted") as soon as a source holds two snapshot dates;
   Feast then falls back to ``_manual_point_in_time_join``, a Python loop over the entity rows that scans
   the whole feature table for each.
4. **Above 100 MB it joins only within the hour.** A source over ``broadcast_join_threshold_mb`` goes
   to ``windowed_temporal_join``, which matches entity and feature rows only inside the same 1 h
   window: a snapshot at midnight never meets a row at noon.
5. **One task.** The entity frame becomes one Ray block, so the join runs as a single task whatever
   the CPU count; and duplicate (customer, time) rows in a block are dropped.

What this module does about each: every unique (customer, time) row is pinned, per view, to the newest
snapshot file at or before its time and within the view's TTL (snapshot times from the files' Parquet
statistics); rows pinned alike go to Feast's join with each source narrowed to that single file (1, 2,
3: one snapshot date per source, so ``merge_asof`` works and no glob is left), split into one chunk per
Ray CPU (5), with the broadcast threshold lifted (4). The answers come back joined onto every entity
row in order. Feast's reads go through Ray Data's first Parquet reader (``parquet_reader_v1``): the
second, the default since Ray 2.5x, starts and stops actors for every file it reads. Pinning to the newest snapshot is what DuckDB's join picks because every snapshot holds
every customer known by its date (features/build.py); a source whose files are not one snapshot each
is handed to Feast whole, as it is.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayOfflineStore, RayOfflineStoreConfig
from pydantic import Field

from core.local_ray import start_ray
from features.pinning import PinnedJob, snapshot_files
from features.pinning import pins as _pins
from features.pinning import with_path as _with_path

log = logging.getLogger("propensity.features")

STORE_TYPE = "features.ray_offline.PropensityRayOfflineStore"
EVENT_TIMESTAMP = "event_timestamp"  # Feast's name for the entity frame's time column
_TS = "__propensity_ts_ns__"
NO_LIMIT_MB = 1 << 40  # broadcast threshold "never": Feast's windowed join is wrong for snapshots (4)


class PropensityRayOfflineStoreConfig(RayOfflineStoreConfig):
    type: Literal["features.ray_offline.PropensityRayOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (RAY_ADDRESS unset)")
    min_chunk_rows: int = Field(50_000, ge=1, description="entity rows per Ray task at least")


def _feature_names(feature_refs: list[str], full_feature_names: bool) -> list[str]:
    return [ref.replace(":", "__") if full_feature_names else ref.split(":", 1)[1] for ref in feature_refs]


class PinnedRetrievalJob(PinnedJob):
    """Feast's Ray jobs, one per (pin group, chunk), run together and joined back onto the entity rows."""

    def __init__(self, entity_df: pd.DataFrame, keys: list[str], jobs: list, feature_names: list[str],
                 full_feature_names: bool) -> None:
        super().__init__(full_feature_names)
        self._entity_df, self._keys, self._jobs = entity_df, keys, jobs
        self._names = feature_names

    def to_df(self, validation_reference=None, timeout=None) -> pd.DataFrame:
        return self._to_df_internal(timeout)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        # Joined on a copy of the time in ns: Ray hands times back at another resolution than they went in,
        # and the caller's own column stays as it was.
        on = [*self._keys, _TS]
        entity = self._entity_df.copy()
        entity[_TS] = pd.to_datetime(entity[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
        if not self._jobs:
            return entity.drop(columns=_TS).assign(**{name: np.nan for name in self._names})
        with parquet_reader_v1():
            datasets = [job.to_ray_dataset() for job in self._jobs]
            # One union: Ray runs the chunks' tasks side by side (each chunk is one block).
            found = datasets[0].union(*datasets[1:]).to_pandas() if len(datasets) > 1 else datasets[0].to_pandas()
        found[_TS] = pd.to_datetime(found[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
        for name in self._names:
            if name not in found.columns:  # a view no row of a chunk had a snapshot for
                found[name] = np.nan
        found = found[[*on, *self._names]]
        if found.duplicated(on).any():
            raise ValueError("ray offline store: a (key, time) row came back twice")
        out = entity.merge(found, on=on, how="left", validate="many_to_one").drop(columns=_TS)
        if len(out) != len(entity):
            raise ValueError(f"ray offline store: {len(out)} rows for {len(entity)} entity rows")
        return out

    def _to_arrow_internal(self, timeout: int | None = None):
        import pyarrow as pa

        return pa.Table.from_pandas(self._to_df_internal(timeout), preserve_index=False)


V2_READER = "RAY_DATA_USE_DATASOURCE_V2"  # Ray Data's own switch; when set, it is the user's choice


@contextmanager
def parquet_reader_v1() -> Iterator[None]:
    """Ray Data reads Parquet with its first reader while inside, unless ``RAY_DATA_USE_DATASOURCE_V2``
    says otherwise. The second reader (the default in Ray 2.60) starts a pool of ``FooterReader`` actors
    for every ``read_parquet`` and kills them when done: a process start per read. Measured on a 100-row
    file, local Ray of 2 CPUs, five reads each: 5.0-24.5 s per read with it, 0.02 s (after a first 4.5 s)
    without. Feast's store reads each view's file once per job, so that start was most of its time."""
    import ray.data

    context = ray.data.DataContext.get_current()
    before = context.use_datasource_v2
    if V2_READER not in os.environ:
        context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.use_datasource_v2 = before


class PropensityRayOfflineStore(RayOfflineStore):
    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, **kwargs: Any):
        with parquet_reader_v1():  # Feast reads every source inside this call (and sizes it)
            return PropensityRayOfflineStore._pinned_jobs(config, feature_views, feature_refs, entity_df,
                                                          registry, project, full_feature_names, **kwargs)

    @staticmethod
    def _pinned_jobs(config, feature_views, feature_refs, entity_df, registry, project,
                     full_feature_names: bool = False, **kwargs: Any):
        import ray

        store_config = config.offline_store
        if not isinstance(entity_df, pd.DataFrame):
            raise ValueError("ray offline store: entity_df must be a pandas DataFrame")
        start_ray(store_config.num_cpus)
        # Feast's windowed join must never run (module docstring, 4).
        config = config.model_copy(update={"offline_store": store_config.model_copy(
            update={"broadcast_join_threshold_mb": NO_LIMIT_MB})})
        keys = sorted({key for v in feature_views for key in v.join_keys})
        rows = entity_df[[*keys, EVENT_TIMESTAMP]].copy()
        rows[EVENT_TIMESTAMP] = pd.to_datetime(rows[EVENT_TIMESTAMP], utc=True)
        rows = rows.drop_duplicates().reset_index(drop=True)  # Feast drops duplicates itself (5)

        pins, files = {}, {}
        for view in feature_views:
            found = snapshot_files(view)
            if found is None:  # not one snapshot per file: Feast reads the source whole
                path = view.batch_source.path
                folder = str(Path(path).parent) if "*" in Path(path).name else path
                files[view.name] = [folder]
                pins[view.name] = np.zeros(len(rows), dtype=np.int64)
            else:
                ordered = sorted(found, key=found.get)
                files[view.name] = ordered
                pins[view.name] = _pins(rows[EVENT_TIMESTAMP], found, view.ttl)
        pin_frame = pd.DataFrame(pins)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        jobs = []
        for combo, group in pin_frame.groupby(list(pins), sort=True):
            combo = combo if isinstance(combo, tuple) else (combo,)
            views = [_with_path(v, files[v.name][i]) for v, i in zip(feature_views, combo, strict=True) if i >= 0]
            if not views:
                continue
            refs = [r for r in feature_refs if r.split(":", 1)[0] in {v.projection.name_to_use() for v in views}]
            part = rows.iloc[group.index.to_numpy()]
            chunks = max(1, min(cpus, math.ceil(len(part) / store_config.min_chunk_rows)))
            for chunk in np.array_split(np.arange(len(part)), chunks):
                jobs.append(RayOfflineStore.get_historical_features(
                    config, views, refs, part.iloc[chunk].reset_index(drop=True), registry, project,
                    full_feature_names, **kwargs))
        log.info("ray offline store: %d unique rows, %d Feast jobs", len(rows), len(jobs))
        return PinnedRetrievalJob(entity_df, keys, jobs, _feature_names(feature_refs, full_feature_names),
                                  full_feature_names)
