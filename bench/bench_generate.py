"""Benchmark of `propensity generate`: rows/s and peak memory (default 1M customers x 365 days).

    .venv/bin/python -m bench.bench_generate --customers 1000000 --days 365

Goal (issue 2): 1M x 365 in at most 3 minutes and 8 GB on 2 cores. Peak memory is the peak resident set
of this process (ru_maxrss), which includes the interpreter and imported libraries.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger("propensity.bench")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to simulate")
    parser.add_argument("--days", type=int, default=365, help="days to simulate")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a temp folder, removed after)"
    )
    parser.add_argument("--progress", action="store_true", help="show the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pipelines.synthetic import generate

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        started = time.perf_counter()
        report = generate(args.customers, args.days, args.seed, out, progress=args.progress)
        seconds = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
        event_rows = sum(report.rows[t] for t in ("orders", "page_views", "complaints"))
        all_rows = sum(report.rows.values())
        size_mb = sum(p.stat().st_size for p in report.files.values()) / 1024**2
        figures = {
            "customers": args.customers,
            "days": args.days,
            "seconds": round(seconds, 1),
            "event_rows": event_rows,
            "all_rows": all_rows,
            "event_rows_per_s": round(event_rows / seconds),
            "all_rows_per_s": round(all_rows / seconds),
            "customer_days_per_s": round(args.customers * args.days / seconds),
            "events_per_customer_year": round(event_rows / args.customers * 365 / args.days, 1),
            "peak_rss_gb": round(peak_gb, 2),
            "output_mb": round(size_mb, 1),
        }
        log.info("generate %s x %s days: %s", args.customers, args.days, report.summary())
        for key, value in figures.items():
            log.info("  %-26s %s", key, value)
        goal = "met" if seconds <= 180 and peak_gb <= 8 else "NOT met"
        log.info("  goal (<= 180 s and <= 8 GB at 1M x 365): %s at this size", goal)
        return figures
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
