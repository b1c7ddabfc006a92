"""The online store behind one interface: ``materialize`` writes it, serving reads it, ``forget`` deletes
from it, and none of them knows which store it is.

- ``StoreTarget`` / ``resolve_target()``: which store and where, from configs/features.yaml
  (``online_store.type``, ``online_store.redis_url``) and ``PROPENSITY_REDIS_URL`` (which wins).
- ``OnlineStore``: the base class every store implements (``write``, ``read``, ``delete``,
  ``feast_config``); ``open_store(target)`` gives the one instance per target of the registered class.
- ``OnlineStoreUnavailable``: the store cannot be reached (serving answers 503 and retries).

Stores keep Feast's keys and value bytes (``encoding``), so Feast's ``get_online_features`` reads what
they write. A new store is its module with an ``OnlineStore`` subclass plus one line in ``STORES``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from core.errors import ConfigError, PropensityError
from core.settings import ProjectPaths, project_paths
from features.settings import CONFIG_FILE, FeaturesConfig, load_features_config

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

# kind (configs/features.yaml online_store.type) -> "module:class", imported on first use so that a
# SQLite process never imports redis. Register a new store with one line here.
STORES: dict[str, str | type[OnlineStore]] = {
    "sqlite": "features.online_store.sqlite:SqliteStore",
    "redis": "features.online_store.redis:RedisStore",
}


class OnlineStoreUnavailable(PropensityError):
    """The online store cannot be reached (Redis down, SQLite file missing): retry later."""


@dataclass(frozen=True)
class StoreTarget:
    """Which online store and where, resolved from config and environment (hashable: a cache key)."""

    kind: str
    project: str
    root: Path
    path: Path  # data/online_store.db: the file of a file-based store
    url: str | None = None  # the server of a networked store (Redis)


def resolve_target(config: FeaturesConfig | None = None, paths: ProjectPaths | None = None) -> StoreTarget:
    config = config or load_features_config()
    paths = paths or project_paths()
    url = config.redis_url()
    kind = "redis" if url else config.online_store.type  # PROPENSITY_REDIS_URL overrides the type
    if kind not in STORES:
        raise ConfigError(
            f"{paths.configs / CONFIG_FILE}: online_store.type {kind!r} is not a known online store "
            f"(known: {', '.join(sorted(STORES))})"
        )
    return StoreTarget(kind, config.project, paths.root, paths.online_store, url)


Columns = dict[str, "np.ndarray"]


class OnlineStore(ABC):
    """One online store. Instances come from ``open_store`` (one per target, shared by threads), so
    ``read`` must be thread-safe. Values are float64 columns, NaN when missing."""

    kind: ClassVar[str]

    def __init__(self, target: StoreTarget) -> None:
        self.target = target

    @abstractmethod
    def feast_config(self) -> dict:
        """The ``online_store`` section of Feast's RepoConfig for the same data, so that Feast's
        ``apply``, ``get_online_features`` and ``write_to_online_store`` use this store too."""

    @abstractmethod
    def write(self, tables: Mapping[str, pa.Table]) -> int:
        """Replace the store's content with one snapshot: {view: Arrow table with customer_id,
        event_timestamp and the view's features}, every view holding the same customers in the same
        order. Returns the number of feature values written."""

    @abstractmethod
    def read(self, customer_ids: Sequence[str], views: Sequence[str]) -> tuple[Columns, np.ndarray]:
        """The features of ``views`` (catalogue order) for ``customer_ids`` (in order, repeats allowed):
        {feature: float64 array} and a boolean array, False for customers the store does not hold.
        Raises ``OnlineStoreUnavailable`` when the store cannot be reached."""

    @abstractmethod
    def delete(self, customer_ids: Iterable[str]) -> dict[str, int]:
        """Remove the customers; returns, for each customer the store held, the records removed (one per
        view table for SQLite, one hash for Redis). Ids it did not hold are left out."""

    def snapshot_time(self) -> dt.datetime | None:
        """The time (UTC) of the snapshot the store holds: what "now" is for its features (a 1997 log's
        online store describes 1997, not today). None when the store cannot say; callers then use the
        wall clock."""
        return None

    def unreachable(self, exc: BaseException) -> bool:
        """Whether an error Feast raised while using this store means the store is down."""
        return isinstance(exc, ConnectionError)

    def close(self) -> None:  # noqa: B027 - optional: a store without connections has nothing to close
        """Let go of connections (``close_stores``); the next call reconnects."""


_open: dict[StoreTarget, OnlineStore] = {}
_open_lock = threading.Lock()


def store_class(kind: str) -> type[OnlineStore]:
    entry = STORES.get(kind)
    if entry is None:
        raise ConfigError(f"online_store.type {kind!r} is not a known online store (known: {', '.join(sorted(STORES))})")
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry


def open_store(target: StoreTarget | None = None) -> OnlineStore:
    """The store of ``target`` (default: the configured one), created once per target: readers keep
    their connections between calls."""
    target = target or resolve_target()
    with _open_lock:
        store = _open.get(target)
        if store is None:
            store = _open[target] = store_class(target.kind)(target)
        return store


def close_stores() -> None:
    """Close and drop every open store (tests; a process that changes project)."""
    with _open_lock:
        stores = list(_open.values())
        _open.clear()
    for store in stores:
        store.close()
