"""Which snapshot file answers a point-in-time row: shared by the project's two Feast offline stores.

``features build`` writes one Parquet file per view and snapshot date, each holding every customer known
by that date once. So the row a point-in-time join picks for (customer, time t) is the customer's row
in the newest file at or before t, if that file is within the view's TTL (Feast's rule: feature time <=
t <= feature time + ttl). ``pins`` gives that file per row; the stores then join on it.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from feast.infra.offline_stores.offline_store import RetrievalJob

# path -> ((mtime_ns, size), (time or None, rows)): a file's footer is read once while it is unchanged.
_file_facts: dict[str, tuple[tuple[int, int], tuple[pd.Timestamp | None, int]]] = {}
_lock = threading.Lock()


def _file_time(path: Path, timestamp_field: str) -> tuple[pd.Timestamp | None, int]:
    """The one event time ``path`` holds (from the Parquet statistics; None if it holds several or the
    statistics do not say) and its row count."""
    import pyarrow.parquet as pq

    st = path.stat()
    key = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _file_facts.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.to_arrow_schema().get_field_index(timestamp_field)
    stamp = None
    if col >= 0 and meta.num_row_groups:
        values = set()
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(col).statistics
            if stats is None or not stats.has_min_max:
                values = set()
                break
            values |= {stats.min, stats.max}
        if len(values) == 1:
            stamp = pd.Timestamp(values.pop())
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    facts = (stamp, meta.num_rows)
    with _lock:
        _file_facts[str(path)] = (key, facts)
    return facts


def snapshot_files(view) -> dict[str, pd.Timestamp] | None:
    """Each non-empty Parquet file of ``view``'s glob and the one event time it holds, or None when the
    source is not a glob of single-time files (then a store reads it whole, through Feast's join)."""
    from feast import FileSource

    source = view.batch_source
    if not isinstance(source, FileSource) or "*" not in Path(source.path).name or source.field_mapping:
        return None
    pattern = Path(source.path)
    out = {}
    for path in sorted(pattern.parent.glob(pattern.name)):
        stamp, rows = _file_time(path, source.timestamp_field)
        if rows == 0:
            continue  # an empty snapshot holds nobody
        if stamp is None:
            return None
        out[str(path)] = stamp
    return out


def with_path(view, path: str):
    """A copy of ``view`` reading ``path`` (a file or folder) instead of its glob."""
    from feast import FileSource

    source = view.batch_source
    out = copy.copy(view)
    out.batch_source = FileSource(
        name=source.name, path=path, timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column, field_mapping=source.field_mapping,
    )
    return out


def pins(times: pd.Series, files: dict[str, pd.Timestamp], ttl) -> np.ndarray:
    """Per row: the index into ``sorted(files)`` by time of the newest file at or before the row's time and
    within ``ttl`` (Feast's rule: feature time <= row time <= feature time + ttl), or -1."""
    stamps = pd.DatetimeIndex(sorted(files.values())).tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    t = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    at = np.searchsorted(stamps, t, side="right") - 1
    out = at.copy()
    if ttl and ttl.total_seconds() > 0:
        ok = at >= 0
        limit = np.timedelta64(int(ttl.total_seconds() * 1e9), "ns")
        stale = np.zeros(len(t), dtype=bool)
        stale[ok] = t[ok] - stamps[at[ok]] > limit
        out[stale] = -1
    return out


class PinnedJob(RetrievalJob):
    """What both stores' jobs share: a frame built by the store itself, so no on-demand views, no
    metadata and no ``persist`` (write the frame of ``to_df()`` instead)."""

    def __init__(self, full_feature_names: bool) -> None:
        self._full = full_feature_names

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list:
        return []

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None):
        raise NotImplementedError("persist: write the frame of to_df() instead")

    @property
    def metadata(self):
        return None
