"""Feature-store benchmark: build, historical retrieval (DuckDB vs Feast's file store, and optionally
Feast's Ray store with 1, 2, ... CPUs), materialize, online reads (our reader vs Feast's
get_online_features). Prints its figures.

    .venv/bin/python -m bench.bench_features --customers 1000000      # full size (minutes, ~GBs)
    .venv/bin/python -m bench.bench_features --customers 20000 --entity-rows 20000   # quick look
    .venv/bin/python -m bench.bench_features --customers 1000000 --ray-cpus 1,2 --retrieval-only  # DuckDB vs Ray
    .venv/bin/python -m bench.bench_features --customers 1000000 --ray-build 1,2 --retrieval-only  # build on Ray

Events are generated here with DuckDB SQL straight into the event-store layout (month partitions), so the
bench does not depend on the generator's speed. Work happens under --home (default .bench/features).
Targets (issue 3): build >= 5M events/s; retrieval >= 200k rows/s; materialize 1M customers <= 60 s;
online p99 <= 2 ms (1 customer) and <= 10 ms (100 customers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

END = dt.date(2026, 10, 31)


def generate_events(events_dir: Path, customers: int, seed: int = 1) -> dict[str, int]:
    """A year of orders, page views (in sessions) and complaints for ``customers`` customers."""
    import duckdb

    from core.events import PARTITION, EventStore

    if events_dir.exists():
        shutil.rmtree(events_dir)
    events_dir.mkdir(parents=True)
    start = END - dt.timedelta(days=365)
    span = 365 * 86400
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({1 / (seed + 1)})")
    cid = f"'c' || lpad(CAST(floor({customers} * pow(random(), 1.6)) AS BIGINT)::VARCHAR, 8, '0')"
    at = f"TIMESTAMPTZ '{start} 00:00:00+00' + to_seconds(CAST(floor(random() * {span}) AS BIGINT))"
    specs = {
        "customers": (
            f"SELECT 'c' || lpad(i::VARCHAR, 8, '0') AS customer_id, TIMESTAMPTZ '{start} 00:00:00+00' - "
            f"to_seconds(CAST(floor(random() * {span}) AS BIGINT)) AS signup_at FROM range({customers}) t(i)",
            "signup_at",
        ),
        "orders": (
            f"SELECT 'o' || i AS order_id, {cid} AS customer_id, {at} AS ordered_at, "
            f"round(5 + random() * 150, 2) AS amount FROM range({customers * 6}) t(i)",
            "ordered_at",
        ),
        "page_views": (
            f"WITH s AS (SELECT 's' || i AS session_id, {cid} AS customer_id, {at} AS start_at, "
            f"CAST(1 + floor(random() * 7) AS INT) AS depth FROM range({customers * 9}) t(i)) "
            "SELECT customer_id, session_id, start_at + to_seconds(90 * k) AS viewed_at, "
            "['home','category','product','product','cart','checkout','help','other'][CAST(1 + floor(random() * 8) AS INT)] "
            "AS page_type, NULL::VARCHAR AS product_id FROM s, range(depth) r(k)",
            "viewed_at",
        ),
        "complaints": (
            "SELECT *, CASE WHEN random() < 0.8 THEN opened_at + to_seconds(CAST(random() * 20 * 86400 AS BIGINT)) "
            f"END AS resolved_at FROM (SELECT 'k' || i AS complaint_id, {cid} AS customer_id, {at} AS opened_at, "
            "'email' AS channel, 'delivery' AS category, CAST(1 + floor(random() * 3) AS BIGINT) AS severity "
            f"FROM range({customers // 5}) t(i))",
            "opened_at",
        ),
    }
    counts = {}
    for table, (sql, time_col) in specs.items():
        con.execute(
            f"COPY (SELECT *, strftime({time_col}, '%Y-%m') AS {PARTITION} FROM ({sql}) WHERE {time_col} < "
            f"TIMESTAMPTZ '{END} 00:00:00+00') TO '{events_dir / table}' "
            f"(FORMAT parquet, PARTITION_BY ({PARTITION}), COMPRESSION zstd)"
        )
        counts[table] = con.execute(
            f"SELECT count(*) FROM read_parquet('{EventStore(events_dir).glob(table)}')"
        ).fetchone()[0]
    con.close()
    EventStore(events_dir).write_manifest(
        {"families": {t: "present" for t in specs}, "ingested": [], "source": "bench_features"}
    )
    return counts


def _child(stage: str, home: Path, args: argparse.Namespace, *extra: str) -> dict:
    """Run one stage in a fresh process: its own peak RSS, no warm caches from the previous stage."""
    env = dict(os.environ, PROPENSITY_HOME=str(home))
    env.pop("RAY_ADDRESS", None)  # the Ray stage times a local Ray of --ray-cpus CPUs
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_features", "--stage", stage, "--home", str(home),
         "--entity-rows", str(args.entity_rows), "--customers", str(args.customers), *extra],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    """This process's own peak RSS. ru_maxrss would carry the parent's peak over fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_build(args) -> dict:
    from features.build import build_features
    from features.settings import FeaturesConfig, SnapshotConfig

    # The daily job: one snapshot of every customer from a year of events.
    cfg = FeaturesConfig(snapshots=SnapshotConfig(history_days=0))
    s = build_features(END, config=cfg, threads=args.threads)
    return {"events": s.events, "seconds": s.seconds, "customers": s.customers, "peak_rss_mb": _peak_mb()}


def stage_append(args) -> dict:
    from features.build import build_features
    from features.settings import FeaturesConfig, SnapshotConfig

    # An older snapshot too, so that retrieval has a point-in-time choice to make.
    s = build_features(END - dt.timedelta(days=7), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=0)))
    return {"seconds": s.seconds, "peak_rss_mb": _peak_mb()}


def _entity_df(n: int, customers: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    ids = np.char.add("c", np.char.zfill(rng.integers(0, customers, n).astype(str), 8))
    offsets = rng.integers(0, 7 * 86400, n)  # all after the END - 7 d snapshot
    ts = pd.Timestamp(END, tz="UTC") - pd.to_timedelta(offsets, unit="s") + pd.Timedelta(days=1)
    return pd.DataFrame({"customer_id": ids, "event_timestamp": ts})


def stage_retrieval(args) -> dict:
    from features.catalog import service_raw_features
    from features.retrieval import historical_features
    from features.settings import OfflineStoreConfig, RayOfflineConfig, load_features_config
    from features.store import apply

    config = load_features_config()
    if args.ray_cpus:  # Feast's Ray store on a local Ray of that many CPUs (started inside the first call)
        offline = OfflineStoreConfig(type="ray", ray=RayOfflineConfig(num_cpus=int(args.ray_cpus)))
        config = config.model_copy(update={"offline_store": offline})
    apply(config)
    entity = _entity_df(args.entity_rows, args.customers)
    # Cold: the first call of a process (registry read, Feast store created, Ray started), as a training
    # run sees it.
    t0 = time.perf_counter()
    out = historical_features(entity, "churn_v1", config)
    seconds = time.perf_counter() - t0
    assert len(out) == len(entity)
    t0 = time.perf_counter()
    again = historical_features(entity, "churn_v1", config)
    warm = time.perf_counter() - t0
    assert len(again) == len(entity)
    # What the engines must agree on: a sum over every stored feature of every row (NaN as 0).
    checksum = float(out[service_raw_features("churn_v1")].fillna(0).to_numpy().sum())
    return {"rows": len(out), "seconds": seconds, "rows_per_s": len(out) / seconds,
            "warm_seconds": warm, "warm_rows_per_s": len(out) / warm, "checksum": checksum,
            "null_rows": int(out["orders_365d"].isna().sum()), "peak_rss_mb": _peak_mb()}


def stage_retrieval_file(args) -> dict:
    """The peer: Feast's own `file` offline store on the same sources and entity rows."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from core.settings import project_paths
    from features.store import definitions

    paths = project_paths()
    cfg = RepoConfig(project="propensity_filepeer", provider="local",
                     registry={"path": str(paths.data / "feast_registry_file.db"), "cache_ttl_seconds": 0},
                     online_store={"type": "sqlite", "path": str(paths.data / "peer_online.db")},
                     offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=paths.root)
    store = FeatureStore(config=cfg)
    defs = definitions()
    store.apply(defs.all())
    entity = _entity_df(args.entity_rows, args.customers)
    t0 = time.perf_counter()
    out = store.get_historical_features(entity_df=entity, features=store.get_feature_service("churn_v1")).to_df()
    seconds = time.perf_counter() - t0
    return {"rows": len(out), "rows_in": len(entity), "seconds": seconds, "rows_per_s": len(out) / seconds,
            "peak_rss_mb": _peak_mb()}


def stage_materialize(args) -> dict:
    from features.store import materialize

    s = materialize()
    return {"customers": s.customers, "values": s.values, "seconds": s.seconds, "peak_rss_mb": _peak_mb()}


def _percentiles(samples: list[float]) -> dict:
    import numpy as np

    a = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def stage_online(args) -> dict:
    import numpy as np

    from features.retrieval import online_feature_columns, online_features
    from features.store import feature_store

    rng = np.random.default_rng(5)
    pick = lambda k: [f"c{i:08d}" for i in rng.integers(0, args.customers, k)]  # noqa: E731
    online_features(pick(5), "churn_v1")  # warm: imports, connection, config
    result = {}
    for k in (1, 100):
        times = []
        for _ in range(2000):
            ids = pick(k)
            t0 = time.perf_counter()
            df = online_features(ids, "churn_v1")
            times.append(time.perf_counter() - t0)
        assert df["found"].all()
        result[f"ours_{k}"] = _percentiles(times)
        times = []
        for _ in range(2000):
            ids = pick(k)
            t0 = time.perf_counter()
            columns = online_feature_columns(ids, "churn_v1")
            times.append(time.perf_counter() - t0)
        assert columns["found"].all()
        result[f"arrays_{k}"] = _percentiles(times)
    store = feature_store()
    service = store.get_feature_service("churn_v1")
    for k in (1, 100):
        times = []
        for _ in range(2000 if k == 1 else 300):
            rows = [{"customer_id": c} for c in pick(k)]
            t0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=rows).to_df()
            times.append(time.perf_counter() - t0)
        result[f"feast_{k}"] = _percentiles(times)
    return result


def stage_backfill(args) -> dict:
    """A first build: a year of weekly snapshots (53 dates) from the same events, in a home of its own."""
    from features.build import build_features
    from features.settings import FeaturesConfig

    s = build_features(END, config=FeaturesConfig())
    return {"snapshots": len(s.snapshots), "events": s.events, "seconds": s.seconds, "rows": s.rows,
            "peak_rss_mb": _peak_mb()}


def stage_build_ray(args) -> dict:
    """The build of stage_build on Ray: --ray-build-shards customer shards of 1 CPU each on a local Ray of as
    many CPUs (started first and timed apart), its file compared with the one-thread local build's in
    --compare-home (one thread, as in each shard: a customer's sums then add in the same order)."""
    import numpy as np
    import pandas as pd

    from core.local_ray import start_ray
    from features.build import build_features, snapshot_file
    from features.settings import BuildConfig, FeaturesConfig, RayBuildConfig, SnapshotConfig

    shards = int(args.ray_build_shards)
    t0 = time.perf_counter()
    start_ray(shards)
    ray_start = time.perf_counter() - t0
    cfg = FeaturesConfig(snapshots=SnapshotConfig(history_days=0),
                         build=BuildConfig(engine="ray", ray=RayBuildConfig(shards=shards)))
    s = build_features(END, config=cfg)
    mine = pd.read_parquet(snapshot_file(args.home / "data" / "features", END))
    local = pd.read_parquet(snapshot_file(args.compare_home / "data" / "features", END))
    if len(mine) != len(local) or list(mine.columns) != list(local.columns):
        raise SystemExit(f"Ray build: {len(mine)} rows, columns {list(mine.columns)}; local: {len(local)}, "
                         f"{list(local.columns)}")
    # Bit for bit but for float sums: DuckDB's hash aggregate adds a customer's rows in an order that
    # depends on how the rows are partitioned, so a sum may differ in its last bits.
    differ, last_bits, worst = [], [], 0.0
    for column in local.columns:
        a, b = mine[column], local[column]
        if a.equals(b):
            continue
        if a.dtype.kind == "f" and b.dtype.kind == "f" and (a.isna() == b.isna()).all():
            both = a.notna()
            rel = (np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), np.finfo(float).tiny)).max()
            if rel <= 1e-12:
                last_bits.append(column)
                worst = max(worst, float(rel))
                continue
        differ.append(column)
    return {"events": s.events, "seconds": s.seconds, "ray_start_seconds": ray_start, "customers": s.customers,
            "differ": differ, "last_bits": last_bits, "max_rel_diff": worst, "peak_rss_mb": _peak_mb()}


STAGES = {"build": stage_build, "build_ray": stage_build_ray, "backfill": stage_backfill, "append": stage_append, "retrieval": stage_retrieval,
          "retrieval_file": stage_retrieval_file, "materialize": stage_materialize, "online": stage_online}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--entity-rows", type=int, default=500_000)
    parser.add_argument("--home", type=Path, default=Path(".bench/features"))
    parser.add_argument("--skip-file-peer", action="store_true", help="Skip Feast's slow file offline store.")
    parser.add_argument("--backfill", action="store_true",
                        help="Also time a first build: a year of weekly snapshots (53 dates), in --home/backfill.")
    parser.add_argument("--ray-cpus", default="",
                        help="Also time retrieval through Feast's Ray offline store on a local Ray with each of "
                        "these CPU counts, e.g. 1,2 (in a stage: the one count).")
    parser.add_argument("--ray-build", default="",
                        help="Also time the build on Ray (build.engine: ray) with each of these shard counts, one "
                        "CPU each on a local Ray, e.g. 1,2; compared with the local build's file.")
    parser.add_argument("--ray-build-shards", default="", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--compare-home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--retrieval-only", action="store_true",
                        help="Stop after retrieval (skip the file peer, materialize and online reads).")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from core.settings import quiet_environment

    if args.stage:
        quiet_environment()
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(STAGES[args.stage](args)))
        return

    home = args.home.resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    t0 = time.perf_counter()
    counts = generate_events(home / "data" / "events", args.customers)
    gen_s = time.perf_counter() - t0
    total = sum(v for k, v in counts.items() if k != "customers")
    print(f"generated {counts} ({total:,} events) in {gen_s:.1f} s", flush=True)
    b = _child("build", home, args)
    print(f"build (1 snapshot, {b['customers']:,} customers, {b['events']:,} events): {b['seconds']:.1f} s, "
          f"{b['events'] / b['seconds'] / 1e6:.2f} M events/s, peak RSS {b['peak_rss_mb']:.0f} MB "
          "(target >= 5 M events/s)", flush=True)
    ray_builds = {}
    ray_shards = [int(c) for c in args.ray_build.split(",") if c.strip()]
    if ray_shards:
        one_home = home / "local-1-thread"
        (one_home / "data").mkdir(parents=True)
        (one_home / "data" / "events").symlink_to(home / "data" / "events")
        one = _child("build", one_home, args, "--threads", "1")
        print(f"build, local engine with 1 DuckDB thread (the Ray shards' reference): {one['seconds']:.1f} s = "
              f"{one['events'] / one['seconds'] / 1e6:.2f} M events/s", flush=True)
    for shards in ray_shards:
        ray_home = home / f"ray-build-{shards}"
        (ray_home / "data").mkdir(parents=True)
        (ray_home / "data" / "events").symlink_to(home / "data" / "events")
        y = _child("build_ray", ray_home, args, "--ray-build-shards", str(shards), "--compare-home", str(one_home))
        ray_builds[shards] = y["seconds"]
        same = "the same values as" if not y["differ"] else f"DIFFERENT columns ({', '.join(y['differ'])}) from"
        extra = "" if not y["last_bits"] else (f" (float sums {', '.join(y['last_bits'])} within "
                                                 f"{y['max_rel_diff']:.1e} relative: their order of addition)")
        print(f"build on Ray, {shards} shard(s) x 1 CPU: {y['seconds']:.1f} s = {y['events'] / y['seconds'] / 1e6:.2f} M "
              f"events/s (Ray start {y['ray_start_seconds']:.1f} s, not included); local 2-thread / Ray time "
              f"{b['seconds'] / y['seconds']:.2f}; {same} the 1-thread local build{extra}; driver peak RSS "
              f"{y['peak_rss_mb']:.0f} MB", flush=True)
        shutil.rmtree(ray_home)
    if 1 in ray_builds and 2 in ray_builds:
        print(f"build on Ray, scaling from 1 to 2 shards: {ray_builds[1] / ray_builds[2]:.2f}x", flush=True)
    a = _child("append", home, args)
    print(f"append one more snapshot date: {a['seconds']:.1f} s", flush=True)
    if args.backfill:
        backfill_home = home / "backfill"
        (backfill_home / "data").mkdir(parents=True)
        (backfill_home / "data" / "events").symlink_to(home / "data" / "events")
        f = _child("backfill", backfill_home, args)
        print(f"backfill (first build, {f['snapshots']} weekly snapshots, {f['rows']:,} rows per view): "
              f"{f['seconds']:.1f} s = {f['seconds'] / f['snapshots']:.2f} s per snapshot, "
              f"peak RSS {f['peak_rss_mb']:.0f} MB", flush=True)
    r = _child("retrieval", home, args)
    print(f"historical retrieval DuckDB: {r['rows']:,} rows in {r['seconds']:.1f} s = {r['rows_per_s']:,.0f} rows/s "
          f"cold (first call of the process), {r['warm_seconds']:.1f} s = {r['warm_rows_per_s']:,.0f} rows/s warm "
          f"(target >= 200k), {r['null_rows']} rows without features, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    for cpus in [c for c in args.ray_cpus.split(",") if c.strip()]:
        y = _child("retrieval", home, args, "--ray-cpus", cpus.strip())
        same = "same values as DuckDB" if y["checksum"] == r["checksum"] and y["null_rows"] == r["null_rows"] \
            else f"DIFFERENT values from DuckDB (checksum {y['checksum']!r} vs {r['checksum']!r})"
        print(f"historical retrieval Feast Ray store, local Ray with {cpus.strip()} CPU(s): {y['rows']:,} rows in "
              f"{y['seconds']:.1f} s = {y['rows_per_s']:,.0f} rows/s cold (Ray start included), "
              f"{y['warm_seconds']:.1f} s = {y['warm_rows_per_s']:,.0f} rows/s warm; {same}; "
              f"DuckDB/Ray warm ratio {r['warm_rows_per_s'] / y['warm_rows_per_s']:.1f}x, "
              f"driver peak RSS {y['peak_rss_mb']:.0f} MB", flush=True)
    if args.retrieval_only:
        return
    if not args.skip_file_peer:
        try:
            f = _child("retrieval_file", home, args)
        except SystemExit as exc:  # the peer failing must not hide our own figures
            print(f"historical retrieval Feast file store (peer) failed: {str(exc)[-300:]}", flush=True)
        else:
            print(f"historical retrieval Feast file store (peer): {f['rows']:,} of {f['rows_in']:,} rows in "
                  f"{f['seconds']:.1f} s = {f['rows_per_s']:,.0f} rows/s; DuckDB/file speed ratio "
                  f"{r['rows_per_s'] / f['rows_per_s']:.1f}x", flush=True)
    m = _child("materialize", home, args)
    print(f"materialize into SQLite: {m['customers']:,} customers, {m['values']:,} values in {m['seconds']:.1f} s "
          f"(target <= 60 s for 1M), peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
    o = _child("online", home, args)
    for k in (1, 100):
        ours, arrays, feast = o[f"ours_{k}"], o[f"arrays_{k}"], o[f"feast_{k}"]
        print(f"online read {k:>3} customer(s): online_features (DataFrame) p50 {ours['p50_ms']:.2f} ms "
              f"p99 {ours['p99_ms']:.2f} ms; online_feature_columns (arrays) p50 {arrays['p50_ms']:.2f} ms "
              f"p99 {arrays['p99_ms']:.2f} ms; "
              f"Feast get_online_features p50 {feast['p50_ms']:.2f} ms p99 {feast['p99_ms']:.2f} ms "
              f"(p99 ratio {feast['p99_ms'] / ours['p99_ms']:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
