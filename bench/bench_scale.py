"""Scale bench: the real `propensity score` on N customers on the local engine, then on Ray with 1 and 2
workers (one CPU each), in one throw-away project (the same set-up as bench.bench_score).

What it prints: per run the stage times; for the Ray runs the rows/s per worker of the Ray passes
(predict: every customer; causes: TreeSHAP and the past of the rows a rule or the reasons rank; text: the
reasons of the customers with an action) and the scaling factor from 1 to 2 workers on those passes (the
issue's target: at least 1.6x). Ray's start-up (a local Ray for the run and its actors) is shown apart:
it is a fixed cost, not a per-row one. Every run's CSV must equal the local engine's byte for byte; a
difference fails the bench.

    .venv/bin/python -m bench.bench_scale --customers 1000000 --trees 67 --num-leaves 57 --max-depth 7
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# The stages of the Ray passes (serving.ray_engine): predict, a model's causes ranked (TreeSHAP and the
# past, for the rules and then the reasons), the reason text.
RAY_PASSES = ("predict", "causes: TreeSHAP (ray", "reasons: text + JSON (ray")
LOCAL_REASONS = ("reasons: SHAP", "reasons: text")


def _run(engine: str, workers: int | None, num_cpus: int):
    from bench.bench_score import AS_OF
    from core.settings import SCORES_CSV
    from serving.actions import load_actions_config
    from serving.batch import score

    cfg = load_actions_config()
    ray = cfg.scoring.ray.model_copy(update={"workers": workers, "num_cpus": num_cpus})
    cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"ray": ray})})
    started = time.perf_counter()
    result = score(AS_OF, cfg=cfg, engine=engine)
    wall = time.perf_counter() - started
    digest = hashlib.sha256((result.scores_dir / SCORES_CSV).read_bytes()).hexdigest()
    return result, wall, digest


def _stage(stages: dict, prefix: str) -> tuple[float, int]:
    """Seconds and rows of the stages whose name starts with ``prefix``, summed."""
    hits = [v for k, v in stages.items() if k.startswith(prefix)]
    return sum(s for s, _ in hits), sum(n for _, n in hits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=100, help="trees per model (tuned demo models: 67 and 78)")
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--num-leaves", type=int, default=63)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-local", action="store_true", help="skip the local engine (then no output check)")
    args = parser.parse_args(argv)

    from core.logs import setup_logging

    setup_logging()
    log = logging.getLogger("propensity.bench")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        from bench.bench_score import _setup_env, setup

        _setup_env(Path(tmp))
        started = time.perf_counter()
        sizes = setup(args.customers, args.trees, args.seed, args.max_depth, args.num_leaves)
        log.info("set-up (not timed): %.0f s", time.perf_counter() - started)
        # The local Ray gets as many CPUs as the largest run uses, so every run sees the same cluster.
        num_cpus = max(args.workers)
        runs = [] if args.no_local else [("local", None)]
        runs += [("ray", w) for w in args.workers]
        results = []
        for engine, workers in runs:
            log.info("=== %s%s", engine, f", {workers} worker(s)" if workers else "")
            results.append((engine, workers, *_run(engine, workers, num_cpus)))

    print(f"\nscale bench: {results[0][2].rows:,} customers, {results[0][2].flagged:,} with an action, "
          f"{os.cpu_count()} cores; models --trees {args.trees} --max-depth {args.max_depth} "
          f"--num-leaves {args.num_leaves}:")
    for name, size in sizes.items():
        print(f"  {name}: {size}")
    print(f"{'run':<14}{'wall s':>9}{'ray start':>11}{'predict s':>11}{'reasons s':>11}{'passes s':>10}"
          f"{'rows/s/worker':>15}")
    passes: dict[int, float] = {}
    reference = results[0][4]
    same = True
    for engine, workers, result, wall, digest in results:
        stages = result.times.stages
        predict, n = _stage(stages, "predict")
        reasons = sum(_stage(stages, p)[0] for p in (RAY_PASSES[1:] if engine == "ray" else LOCAL_REASONS))
        total = predict + reasons
        per_worker = n / total / (workers or 1) if total else 0.0
        label = f"{engine} x{workers}" if workers else engine
        start = _stage(stages, "ray: start")[0]
        print(f"{label:<14}{wall:>9.1f}{start:>11.1f}{predict:>11.1f}{reasons:>11.1f}{total:>10.1f}"
              f"{per_worker:>15,.0f}")
        if workers:
            passes[workers] = total
        same &= digest == reference
    if 1 in passes and 2 in passes:
        factor = passes[1] / passes[2]
        print(f"scaling 1 -> 2 Ray workers (predict + reasons passes): {factor:.2f}x  (target >= 1.6x: "
              f"{'met' if factor >= 1.6 else 'MISSED'})")
    if not args.no_local:
        print(f"every run's CSV equals the local engine's byte for byte: {'yes' if same else 'NO'}")
    print("(local: LightGBM uses every core in one process; rows/s/worker there is per process)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
