"""The feature build on Ray (``build.engine: ray``): customer shards, one DuckDB each, written into the
same snapshot files as the local build.

Every figure of a snapshot is a function of one customer's events, except the BG/NBD and Gamma-Gamma fit
of the population (features.build.rhythm_sample). So the build splits by customer: shard k of n reads
only the customers whose id hashes to k (DuckDB's ``hash``: the same in every process of one DuckDB
version, which a Ray cluster's one environment gives), and reduces and aggregates them with the local
build's own SQL (features.build._prepare, snapshot_sql). Per snapshot date:

1. every shard computes the date's tables and returns its first ``fit_customers`` by the sample key; the
   driver merges them into exactly the sample the local build takes, and fits once;
2. every shard writes its rows, with those parameters, to a part file beside the snapshot;
3. the driver merges the parts in id order into the snapshot file (temp file and rename) and removes them.

So the file equals the local build's (tests/features/test_ray_build.py). A shard is a Ray actor, so its
temp tables (the per-customer reductions every date reads) live across the dates. The part files are
written where the snapshots go, which on a cluster must be storage every node sees (as Feast's offline
store needs anyway).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path

import numpy as np

from core.errors import PropensityError
from core.events import EventStore
from features.build import (
    BuildSummary,
    _events_read,
    _prepare,
    connect,
    drop_tables,
    fit_rhythm,
    rhythm_sample,
    set_rhythm,
    snapshot_file,
    snapshot_tables,
    write_parquet,
)
from features.catalog import JOIN_KEY
from features.settings import FeaturesConfig

log = logging.getLogger("propensity.features")


class _Shard:
    """One customer shard's DuckDB and temp tables (a Ray actor: ``ray.remote`` is applied at run time)."""

    def __init__(self, shard: tuple[int, int], events_dir: str, memory_limit: str, threads: int, tmp_dir: str):
        self.shard = shard
        self.store = EventStore(Path(events_dir))
        # Spill files of their own: DuckDB processes sharing one temp folder would clash.
        self.con = connect(memory_limit, threads, Path(tmp_dir) / f"shard-{shard[0]}")
        self.names: list[str] = []
        self.select = ""

    def prepare(self, present: dict[str, bool], dates: list[dt.date], cadence_days: int) -> dict:
        present = dict(present)
        _prepare(self.con, self.store, present, dates, cadence_days, shard=self.shard)
        return {"amount": present["amount"], "events": _events_read(self.con, present)}

    def sample(self, day: dt.date, present: dict[str, bool], fit_customers: int) -> dict:
        self.names, self.select = snapshot_tables(self.con, day, present)
        return rhythm_sample(self.con, day, fit_customers, present)

    def write(self, fits: tuple, part: str) -> int:
        try:
            set_rhythm(self.con, *fits)
            return write_parquet(self.con, self.select, Path(part))
        finally:
            drop_tables(self.con, self.names)

    def close(self) -> None:
        self.con.close()


def merge_samples(samples: list[dict], fit_customers: int) -> dict:
    """The first ``fit_customers`` by key over every shard's sample, in key order, per model input
    (orders, visits): what ``rhythm_sample`` returns on the whole population (each shard's sample is its
    own first ones)."""

    def merge(parts: list[dict]) -> dict:
        keys = np.concatenate([s["key"] for s in parts])
        order = np.argsort(keys, kind="stable")[:fit_customers]
        return {c: np.concatenate([s[c] for s in parts])[order] for c in parts[0]}

    return {what: None if samples[0][what] is None else merge([s[what] for s in samples]) for what in samples[0]}


def _get(refs: list, what: str):
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayError as exc:
        raise PropensityError(f"feature build on Ray failed while it {what}: {exc}") from exc


def build_on_ray(con, store: EventStore, present: dict[str, bool], dates: list[dt.date], sources: Path,
                 summary: BuildSummary, config: FeaturesConfig, memory_limit: str, tmp_dir: Path,
                 progress: bool) -> None:
    """features.build's snapshots of ``dates`` from customer shards on Ray; ``con`` (the driver's DuckDB)
    merges the shards' parts. Fills ``summary`` and ``present["amount"]`` as the local build does."""
    import ray
    from rich.progress import Progress

    from core.local_ray import start_ray

    settings = config.build.ray
    started = start_ray(settings.num_cpus)
    shards: list = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        n = settings.shards or max(1, cpus // settings.cpus_per_shard)
        if n * settings.cpus_per_shard > cpus:
            # Each actor holds its CPUs for the whole build: more than the cluster has would wait forever.
            raise PropensityError(
                f"features.yaml build.ray: {n} shards x cpus_per_shard {settings.cpus_per_shard} need "
                f"{n * settings.cpus_per_shard} CPUs, the Ray cluster has {cpus}")
        log.info("feature build on Ray: %d customer shards x %d CPUs (%d CPUs in the cluster)", n,
                 settings.cpus_per_shard, cpus)
        actor = ray.remote(num_cpus=settings.cpus_per_shard)(_Shard)
        shards = [actor.remote((k, n), str(store.root), memory_limit, settings.cpus_per_shard, str(tmp_dir))
                  for k in range(n)]
        infos = _get([s.prepare.remote(present, dates, config.snapshots.cadence_days) for s in shards],
                     "reduced the events")
        # Amounts anywhere make the spend features real everywhere, as in one process.
        present["amount"] = any(i["amount"] for i in infos)
        summary.events = sum(i["events"] for i in infos)
        sources.mkdir(parents=True, exist_ok=True)
        fit_customers = config.rhythm.fit_customers
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"feature snapshots ({n} Ray shards)", total=len(dates))
            for day in dates:
                samples = _get([s.sample.remote(day, present, fit_customers) for s in shards],
                               f"computed the tables of {day}")
                fits = fit_rhythm(merge_samples(samples, fit_customers), day)
                final = snapshot_file(sources, day)
                # .tmp names: the sources' glob (*.parquet) never reads a part.
                parts = [final.with_name(f".{final.stem}.part{k}.{uuid.uuid4().hex[:8]}.tmp") for k in range(n)]
                try:
                    _get([s.write.remote(fits, str(p)) for s, p in zip(shards, parts, strict=True)],
                         f"wrote the parts of {day}")
                    listed = ", ".join(f"'{p}'" for p in parts)
                    rows = write_parquet(con, f"SELECT * FROM read_parquet([{listed}]) ORDER BY {JOIN_KEY}", final)
                finally:
                    for p in parts:
                        p.unlink(missing_ok=True)
                summary.add(day, rows)
                bar.advance(task)
        _get([s.close.remote() for s in shards], "closed its DuckDB")
    finally:
        for s in shards:
            ray.kill(s)
        if started:
            ray.shutdown()
