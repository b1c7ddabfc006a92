"""Benchmark of `propensity ingest`: rows/s with every cleaning rule on, against the same ingest with the
rules off (the ingest before cleaning existed: the contract checks and the merge only) in the same run.

    .venv/bin/python -m bench.bench_ingest --customers 100000

Goal (the cleaning issue): with all rules on, at least half the rows/s of the ingest without them. The
log is generated with ``--anomalies`` so every rule has rows to remove (bots, short views, test orders,
outliers, cancellations, duplicate complaints); with the rules off the negative-amount cancellations would
break the contract, so that arm keeps the ``cancellations`` rule alone on (the nearest to "no cleaning"
that ingests). Each arm writes a fresh store; rounds alternate the arms so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger("propensity.bench")
TABLES = ("customers", "orders", "page_views", "complaints")


def _rules(on: bool):
    """configs/cleaning.yaml as shipped, or with every rule but cancellations switched off."""
    from pipelines.ingest.cleaning import load_cleaning_config

    rules = load_cleaning_config()
    if on:
        return rules
    data = rules.model_dump()
    for name, rule in data.items():
        if isinstance(rule, dict) and "enabled" in rule:
            rule["enabled"] = name == "cancellations"
    return type(rules).model_validate(data)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000, help="customers in the generated log")
    parser.add_argument("--days", type=int, default=365, help="days simulated")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm (best of)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pipelines.ingest.commit import ingest
    from pipelines.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        raw = work / "raw"
        generate(args.customers, args.days, args.seed, raw, progress=False, anomalies=True)
        files = {t: raw / f"{t}.parquet" for t in TABLES if (raw / f"{t}.parquet").exists()}
        arms = {"rules on": _rules(True), "rules off": _rules(False)}
        best: dict[str, float] = {}
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files.values())
        for round_no in range(args.rounds):
            for arm, rules in (arms.items() if round_no % 2 == 0 else reversed(arms.items())):
                store = work / f"store-{arm.replace(' ', '-')}-{round_no}"
                started = time.perf_counter()
                ingest(store=store, cleaning=rules, **files)
                seconds = time.perf_counter() - started
                best[arm] = min(best.get(arm, float("inf")), seconds)
                log.info("round %d %-9s %.2f s", round_no + 1, arm, seconds)
                shutil.rmtree(store, ignore_errors=True)
        figures = {"customers": args.customers, "rows in": rows,
                   **{f"{k} s (best of {args.rounds})": round(v, 2) for k, v in best.items()},
                   **{f"{k} rows/s": round(rows / v) for k, v in best.items()},
                   "speed ratio on/off": round(best["rules off"] / best["rules on"], 3)}
        for key, value in figures.items():
            log.info("  %-28s %s", key, value)
        log.info("  goal (ratio >= 0.5): %s", "met" if figures["speed ratio on/off"] >= 0.5 else "NOT met")
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
