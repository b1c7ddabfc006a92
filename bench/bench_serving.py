"""Serving benchmark: our BentoML /predict against `mlflow models serve` on the same churn model.

    .venv/bin/python -m bench.bench_serving [--customers 2000] [--trees 100] [--seconds 10] [--workers 2]

What is measured (loopback only, bounded load from a local client on the same machine):
- ours: POST /predict for one customer: online features from the Feast SQLite store, both models
  (churn and conversion), top-5 SHAP reasons with sentences. The same request every time is avoided:
  customer ids cycle over the population.
- peer: POST /invocations of `mlflow models serve -m models:/churn@champion --env-manager local` with the
  same customer's churn features in the body: prediction only, no feature look-up, no reasons.
- floor: GET /healthz on ours and GET /ping on the peer at 1 client: an empty route, i.e. what the HTTP
  stack and this load client cost before any work (ours answers /healthz in its outermost middleware).
At 1 client (sequential requests, keep-alive): p50 / p99 latency and requests/s. At 32 clients (one
keep-alive connection each, asyncio): requests/s, p50 / p99 and errors. Prints the 32-client ratio.
The load client runs on the same cores as both servers; its own cost is inside every figure (the floor
shows how much).

Targets (issue 5): 1 client p50 <= 3 ms and p99 <= 6 ms; 32 clients >= 2x the peer's requests/s, 0 errors.

The project is built in a temp folder unless --home points at one with champions and a materialized
online store: synthetic events -> feature build -> online store -> two LightGBM models of --trees trees
registered as champions. The tuned models of `make demo` have 67 and 78 trees, hence the default 100;
the size used (read back from the served champions) is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("propensity.bench")
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_project(home: Path, customers: int, trees: int) -> None:
    """Events -> features -> online store -> two champions, with the project's own functions."""
    import lightgbm as lgb
    import numpy as np

    from features.build import build_features
    from features.retrieval import model_feature_names, online_features
    from features.store import materialize
    from tests.features.conftest import END, random_events, write_store
    from training.champion import Calibration, register_booster

    tables = random_events(n_customers=customers, days=200, seed=11)
    write_store(home, tables)
    build_features(END.date())
    materialize()
    ids = sorted(tables["customers"]["customer_id"])
    rng = np.random.default_rng(3)
    for name, service in (("churn", "churn_v1"), ("conversion", "conversion_v1")):
        frame = online_features(ids, service)
        names = model_feature_names(service)
        score = frame[names].fillna(0).to_numpy() @ rng.normal(size=len(names))
        label = (score + rng.normal(scale=score.std() + 1e-9, size=len(ids)) > np.median(score)).astype(int)
        params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1,
                  "learning_rate": 0.05, "num_threads": 2}
        booster = lgb.train(params, lgb.Dataset(frame[names], label=label), num_boost_round=trees)
        register_booster(booster, name, bands={"high": 0.6, "medium": 0.3}, feature_service=service, calibration=Calibration(), alias="champion")
    (home / "bench_ids.json").write_text(json.dumps(ids))


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{log_path.read_text()[-2000:]}")


# ---------------------------------------------------------------------------------------------- load
async def _client(port: int, bodies: list[bytes], path: str, headers: str, stop_at: float, lat: list, errors: list, offset: int):
    """One keep-alive connection sending requests back to back; ``bodies`` empty means GET (the floor)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            if bodies:
                body = bodies[i % len(bodies)]
                i += 1
                request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body
            else:
                request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            lat.append(time.perf_counter() - started)
            if b" 200 " not in status_line or b'"found": false' in payload or b'"found":false' in payload:
                errors.append(status_line.decode(errors="replace").strip())
    finally:
        writer.close()


async def _load(port: int, bodies: list[bytes], path: str, headers: str, clients: int, seconds: float):
    lat: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(
        _client(port, bodies, path, headers, stop_at, lat, errors, k * 7) for k in range(clients)
    ))
    return lat, errors, time.perf_counter() - started


def measure(port: int, bodies: list[bytes], path: str, headers: str, clients: int, seconds: float) -> dict:
    asyncio.run(_load(port, bodies, path, headers, clients, min(2.0, seconds)))  # warm-up
    lat, errors, elapsed = asyncio.run(_load(port, bodies, path, headers, clients, seconds))
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"clients": clients, "requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": 1e3 * q[49],
            "p99_ms": 1e3 * q[98], "errors": len(errors)}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="existing project (champions + online store); default: build one")
    parser.add_argument("--customers", type=int, default=2000, help="synthetic customers when building")
    parser.add_argument("--trees", type=int, default=100, help="trees per model when building (tuned models: 67-78)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--workers", type=int, default=0, help="service workers; 0: configs/serving.yaml")
    args = parser.parse_args()

    from core.logs import setup_logging
    from core.settings import quiet_environment

    setup_logging()
    tmp = None
    home = args.home
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        home = tmp / "project"
        (home / "mlruns").mkdir(parents=True)
    os.environ["PROPENSITY_HOME"] = str(home.resolve())
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home.resolve() / 'mlruns' / 'mlflow.db'}")
    os.environ["PROPENSITY_API_KEY"] = KEY
    quiet_environment()
    procs: list[subprocess.Popen] = []
    try:
        if args.home is None:
            log.info("building a project with %d customers, %d trees per model in %s", args.customers, args.trees, home)
            build_project(home, args.customers, args.trees)
        ids = json.loads((home / "bench_ids.json").read_text()) if (home / "bench_ids.json").exists() else None
        from features.retrieval import model_feature_names, online_features
        from pipelines.cli.serve import serve_command, serve_environment
        from serving.config import load_serving_config

        if ids is None:
            raise SystemExit("--home needs bench_ids.json (a JSON list of customer ids to query)")
        config = load_serving_config()
        workers = args.workers or config.workers
        env = serve_environment(workers, config.lightgbm_threads)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

        ours_port, peer_port = free_port(), free_port()
        ours_log, peer_log = home / "bench_ours.log", home / "bench_peer.log"
        with open(ours_log, "wb") as out:
            procs.append(subprocess.Popen(serve_command("127.0.0.1", ours_port), env=env, stdout=out, stderr=subprocess.STDOUT))
        with open(peer_log, "wb") as out:
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/churn@champion",
                 "--env-manager", "local", "--host", "127.0.0.1", "-p", str(peer_port)],
                env=env, stdout=out, stderr=subprocess.STDOUT))
        wait_ready(f"http://127.0.0.1:{ours_port}/readyz", procs[0], ours_log)
        wait_ready(f"http://127.0.0.1:{peer_port}/ping", procs[1], peer_log)

        found = online_features(ids, "churn_v1")
        sample = found.loc[found["found"], "customer_id"].tolist()[:500]
        ours_bodies = [json.dumps({"customer_ids": [c], "top_k": 5}).encode() for c in sample]
        names = model_feature_names("churn_v1")
        frame = online_features(sample, "churn_v1")
        rows = frame[names].astype(object).where(frame[names].notna(), None).values.tolist()
        peer_bodies = [json.dumps({"dataframe_split": {"columns": names, "data": [row]}}).encode() for row in rows]

        from training.champion import load_model_version

        trees = {name: load_model_version(name).booster.num_trees() for name in config.models}
        results = [
            ("floor: ours GET /healthz (empty route)", measure(ours_port, [], "/healthz", "", 1, args.seconds)),
            ("floor: peer GET /ping (empty route)", measure(peer_port, [], "/ping", "", 1, args.seconds)),
        ]
        for clients in (1, 32):
            ours = measure(ours_port, ours_bodies, "/predict", f"X-API-Key: {KEY}\r\n", clients, args.seconds)
            peer = measure(peer_port, peer_bodies, "/invocations", "", clients, args.seconds)
            results.append(("ours (features + 2 models + top-5 reasons)", ours))
            results.append(("peer: mlflow models serve (churn only)", peer))
        sizes = ", ".join(f"{name} {n}" for name, n in trees.items())
        print(f"\nserving bench: {len(ids)} customers, trees per model: {sizes}, "
              f"{workers} worker(s), {os.cpu_count()} cores shared with the load generator")
        print(f"{'server':45s} {'clients':>7s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} {'requests':>9s}")
        for label, r in results:
            print(f"{label:45s} {r['clients']:7d} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['errors']:7d} {r['requests']:9d}")
        floor, peer_floor, one, peer_one, many, peer_many = (r for _, r in results)
        ratio = many["rps"] / peer_many["rps"]
        print(f"\n1 client: p50 {one['p50_ms']:.2f} ms (target <= 3), p99 {one['p99_ms']:.2f} ms (target <= 6); "
              f"above the empty-route floor: p50 {one['p50_ms'] - floor['p50_ms']:.2f} ms "
              f"(peer: {peer_one['p50_ms'] - peer_floor['p50_ms']:.2f} ms)")
        print(f"32 clients: {many['rps']:.0f} req/s vs peer {peer_many['rps']:.0f} req/s = {ratio:.2f}x "
              f"(target >= 2x), errors {many['errors']} (target 0)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
