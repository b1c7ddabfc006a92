"""The Redis online store, in Feast's RedisOnlineStore layout: one hash per customer (key = serialized
entity key + project name) holding every view's fields (murmur3 of "<view>:<feature>" -> ValueProto
bytes, plus "_ts:<view>" -> a Timestamp proto). Writes are pipelined HSETs in batches, reads one
pipelined HMGET per customer, deletes one pipelined DEL per customer. ``redis`` and Feast's helpers
are imported on first use, so a SQLite process never pays for them."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np

from core.errors import ConfigError
from features.catalog import TIMESTAMP_FIELD, VIEWS
from features.online_store import Columns, OnlineStore, OnlineStoreUnavailable, StoreTarget
from features.online_store.encoding import (
    decode_values,
    entity_key_bytes,
    snapshot_keys,
    value_blobs,
    value_kind,
)

_WRITE_BATCH = 5_000  # customers per pipeline: bounded memory, few round trips
_SNAPSHOT_TTL_SECONDS = 5.0  # how long a read snapshot time is trusted before asking Redis again


def redis_connection_string(url: str) -> str:
    """``redis://host:port/db`` as Feast's ``host:port,db=N`` connection string."""
    parsed = urlparse(url if "://" in url else f"redis://{url}")
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ConfigError(
            f"online store redis URL {url!r} (configs/features.yaml online_store.redis_url or "
            "PROPENSITY_REDIS_URL) is not of the form redis://host:port/db"
        )
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url if "://" in url else f"redis://{url}", socket_timeout=2, socket_connect_timeout=2)


def _connection_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, ConnectionError)


class RedisStore(OnlineStore):
    kind = "redis"

    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target)
        if not target.url:
            raise ConfigError("online_store.type redis needs online_store.redis_url or PROPENSITY_REDIS_URL")
        self._client = None
        self._suffix = target.project.encode()
        # Not an entity key (those start with a serialized proto): cannot collide with a customer.
        self._snapshot_key = f"propensity:{target.project}:snapshot_time".encode()

    def feast_config(self) -> dict:
        return {"type": "redis", "connection_string": redis_connection_string(self.target.url)}

    def unreachable(self, exc: BaseException) -> bool:
        return isinstance(exc, _connection_errors())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _call(self, action):
        """Run ``action(client)``; a lost connection is OnlineStoreUnavailable and reconnects next time."""
        try:
            if self._client is None:
                self._client = redis_client(self.target.url)
            return action(self._client)
        except _connection_errors() as exc:
            self._client = None
            raise OnlineStoreUnavailable(f"redis at {self.target.url} unreachable: {exc}") from exc

    def write(self, tables: Mapping) -> int:
        """One HSET per customer with every view's fields, as RedisOnlineStore.online_write_batch writes
        them. Hashes are overwritten, not cleared first (as Feast does)."""
        from feast.infra.online_stores.helpers import _mmh3
        from google.protobuf.timestamp_pb2 import Timestamp

        keys, order = snapshot_keys(tables)
        fields: list[bytes] = []
        columns: list[list[bytes]] = []
        for view, table in tables.items():
            stamp = Timestamp()
            stamp.FromDatetime(table.column(TIMESTAMP_FIELD)[0].as_py())
            fields.append(f"_ts:{view}".encode())
            columns.append([stamp.SerializeToString()] * len(keys))
            for f in VIEWS[view].features:
                values = table.column(f.name).to_numpy(zero_copy_only=False).astype("float64")[order]
                fields.append(_mmh3(f"{view}:{f.name}"))
                columns.append(value_blobs(values, value_kind(f.kind)).tolist())

        def send(client) -> None:
            for start in range(0, len(keys), _WRITE_BATCH):
                with client.pipeline(transaction=False) as pipe:
                    for i in range(start, min(start + _WRITE_BATCH, len(keys))):
                        row = dict(zip(fields, (c[i] for c in columns), strict=True))
                        pipe.hset(keys[i] + self._suffix, mapping=row)
                    pipe.execute()

        self._call(send)
        snapshot = next(iter(tables.values())).column(TIMESTAMP_FIELD)
        if len(snapshot):
            when = snapshot[0].as_py().astimezone(dt.UTC).isoformat()
            self._call(lambda client: client.set(self._snapshot_key, when))
        return len(keys) * (len(fields) - len(tables))

    def snapshot_time(self) -> dt.datetime | None:
        """Written beside the hashes at each write; re-read at most every few seconds (a round trip)."""
        now = time.monotonic()
        cached = getattr(self, "_snapshot", None)
        if cached is not None and now - cached[0] < _SNAPSHOT_TTL_SECONDS:
            return cached[1]
        raw = self._call(lambda client: client.get(self._snapshot_key))
        when = dt.datetime.fromisoformat(raw.decode()) if raw else None
        self._snapshot = (now, when)
        return when

    def read(self, customer_ids: Sequence[str], views: Sequence[str]) -> tuple[Columns, np.ndarray]:
        from feast.infra.online_stores.helpers import _mmh3

        names = [f for v in views for f in VIEWS[v].names]
        fields = [_mmh3(f"{v}:{f}") for v in views for f in VIEWS[v].names]
        ts_fields = [f"_ts:{v}".encode() for v in views]

        def fetch(client) -> list:
            with client.pipeline(transaction=False) as pipe:
                for c in customer_ids:
                    pipe.hmget(entity_key_bytes(c) + self._suffix, fields + ts_fields)
                return pipe.execute()

        replies = self._call(fetch)
        n, k = len(customer_ids), len(fields)
        found = np.fromiter((any(r is not None for r in reply[k:]) for reply in replies), dtype=bool, count=n)
        values = decode_values([blob for reply in replies for blob in reply[:k]]).reshape(n, k)
        return {name: values[:, j].copy() for j, name in enumerate(names)}, found

    def delete(self, customer_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(customer_ids))

        def remove(client) -> list[int]:
            with client.pipeline(transaction=False) as pipe:
                for c in ids:
                    pipe.delete(entity_key_bytes(c) + self._suffix)
                return pipe.execute()

        return {c: int(n) for c, n in zip(ids, self._call(remove), strict=True) if n}
