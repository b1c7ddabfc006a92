"""`make bench`: every benchmark in turn, each in its own process so peak memory is its own.

Each benchmark prints its figures and the peer it is compared with. Sizes default to the issue targets
(1M customers); `--quick` runs everything at a size that finishes in a few minutes, for a smoke check.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

FULL = [
    ["bench.bench_generate", "--customers", "1000000", "--days", "365"],
    ["bench.bench_ingest", "--customers", "100000"],
    ["bench.bench_features", "--customers", "1000000", "--entity-rows", "500000", "--ray-build", "1,2"],
    ["bench.bench_training"],
    ["bench.bench_score", "--customers", "1000000"],
    ["bench.bench_scale", "--customers", "1000000"],
    ["bench.bench_serving", "--seconds", "10"],
]
QUICK = [
    ["bench.bench_generate", "--customers", "50000", "--days", "365"],
    ["bench.bench_ingest", "--customers", "10000", "--rounds", "1"],
    ["bench.bench_features", "--customers", "50000", "--entity-rows", "50000", "--ray-build", "1,2"],
    ["bench.bench_training", "--rows", "20000", "--trials", "5"],
    ["bench.bench_score", "--customers", "50000"],
    ["bench.bench_scale", "--customers", "20000"],
    ["bench.bench_serving", "--seconds", "3"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run), not the targets")
    parser.add_argument("--only", nargs="*", default=None, help="run only these, e.g. bench_score")
    args = parser.parse_args()
    failed = []
    for cmd in QUICK if args.quick else FULL:
        if args.only and cmd[0].split(".")[-1] not in args.only:
            continue
        print(f"\n=== {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", *cmd])
        print(f"=== {cmd[0]}: exit {rc} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(cmd[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
