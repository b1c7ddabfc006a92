"""Feast store access: a configured ``FeatureStore``, ``apply`` and a bulk ``materialize``.

The RepoConfig is built in code (paths from ``core.settings.project_paths()``): the online store chosen
by configs/features.yaml or ``PROPENSITY_REDIS_URL`` (``features.online_store``: SQLite at
data/online_store.db by default, Redis when configured), which also says how Feast reaches it; the
offline store of ``features.offline_store`` (DuckDB by default; Feast's Ray store through
``features.ray_offline``); registry at data/feast_registry.db.

``materialize`` reads the latest snapshot of every view and hands it to the online store's ``write``,
which keeps Feast's keys and value bytes (``get_online_features`` reads them back; a test checks this).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

from core.errors import PropensityError
from core.settings import ProjectPaths, project_paths
from features.catalog import VIEWS
from features.online_store import (  # also imported from here
    OnlineStoreUnavailable,
    open_store,
    resolve_target,
)
from features.settings import FeaturesConfig, load_features_config

log = logging.getLogger("propensity.features")


def offline_store_config(config: FeaturesConfig, paths: ProjectPaths) -> dict:
    """Feast's ``offline_store`` block for ``offline_store.type`` in configs/features.yaml."""
    offline = config.offline_store
    if offline.type == "duckdb":
        from features.duckdb_offline import STORE_TYPE as DUCKDB_STORE

        return {"type": DUCKDB_STORE}
    from features.ray_offline import STORE_TYPE

    # storage_path: Feast's Ray store refuses to run without one; only its persist() would write there.
    return {"type": STORE_TYPE, "storage_path": str(paths.data / "ray_staging"),
            "num_cpus": offline.ray.num_cpus, "min_chunk_rows": offline.ray.min_chunk_rows}


def repo_config(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None):
    from feast.repo_config import RepoConfig

    config = config or load_features_config()
    paths = paths or project_paths()
    target = resolve_target(config, paths)
    return RepoConfig(
        project=target.project,
        provider="local",
        registry={"path": str(paths.feast_registry), "cache_ttl_seconds": 0},
        online_store=open_store(target).feast_config(),
        offline_store=offline_store_config(config, paths),
        entity_key_serialization_version=3,
        repo_path=paths.root,
    )


_stores: dict[tuple, object] = {}
_stores_lock = threading.Lock()


def feature_store(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None):
    """The ``feast.FeatureStore`` of the current project, created once per project and online store."""
    from feast import FeatureStore

    config = config or load_features_config()
    paths = paths or project_paths()
    key = (resolve_target(config, paths), paths.feast_registry, config.offline_store.model_dump_json())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            paths.data.mkdir(parents=True, exist_ok=True)
            store = FeatureStore(config=repo_config(config, paths))
            _stores[key] = store
        return store


def forget_stores() -> None:
    """Drop cached FeatureStore objects: Feast's SQLite store keeps a connection to the file a
    materialize has since replaced. (Our own stores notice that themselves.)"""
    with _stores_lock:
        _stores.clear()


def definitions(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None):
    from features.definitions import make_definitions

    config = config or load_features_config()
    paths = paths or project_paths()
    return make_definitions(paths.feature_sources.resolve(), ttl_days=config.snapshots.ttl_days)


def apply(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None) -> list[str]:
    """Register entity, views and services in the Feast registry (creates the online tables)."""
    defs = definitions(config, paths)
    store = feature_store(config, paths)
    online = open_store(resolve_target(config, paths))
    try:
        store.apply(defs.all())
    except Exception as exc:
        if online.unreachable(exc):
            raise OnlineStoreUnavailable(f"online store unreachable during apply: {exc}") from exc
        raise
    names = [o.name for o in defs.all()]
    log.info("feast apply: %s", ", ".join(names))
    return names


def latest_snapshot(paths: ProjectPaths):
    """The newest snapshot, one Arrow table per view (the key, the time and its columns), and its date."""
    import pyarrow.parquet as pq

    from features.build import built_dates, snapshot_file
    from features.catalog import JOIN_KEY, TIMESTAMP_FIELD

    dates = built_dates(paths.feature_sources)
    if not dates:
        raise PropensityError(
            f"{paths.feature_sources}: no feature snapshots; run `propensity features build` first"
        )
    table = pq.read_table(snapshot_file(paths.feature_sources, dates[-1]))
    return {view: table.select([JOIN_KEY, TIMESTAMP_FIELD, *spec.names]) for view, spec in VIEWS.items()}, dates[-1]


@dataclass
class MaterializeSummary:
    snapshot: dt.date
    customers: int
    values: int
    seconds: float
    online_store: str


def materialize(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None) -> MaterializeSummary:
    """Load the latest snapshot of every view into the online store (replacing what it held)."""
    started = time.perf_counter()
    config = config or load_features_config()
    paths = paths or project_paths()
    if not paths.feast_registry.exists():
        apply(config, paths)
    target = resolve_target(config, paths)
    tables, snapshot = latest_snapshot(paths)
    values = open_store(target).write(tables)
    forget_stores()
    summary = MaterializeSummary(
        snapshot, tables["customer_recency"].num_rows, values, time.perf_counter() - started, target.kind
    )
    log.info(
        "materialized snapshot %s: %d customers, %d values into %s in %.1f s",
        summary.snapshot, summary.customers, summary.values, summary.online_store, summary.seconds,
    )
    return summary
