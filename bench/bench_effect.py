"""Honest monitoring after effective actions: realised AUC on the untreated view against all rows, on a
simulated year with campaigns that work and on the same shop without them.

    .venv/bin/python -m bench.bench_effect --customers 60000 --days 365

Two generator runs with the same seed: one whose shop runs two campaigns that lower the churn hazard
(x``--effect`` for 60 days after a contact, ``--control-share`` held out), one without campaigns. Each is
ingested into a project home of its own (temp folders), and every Monday gets a list of every customer
scored by the ground truth's untreated p_churn (the oracle of untreated behaviour, standing in for a
model trained on untreated labels), carrying the campaigns' rule and group. Monitoring's realised AUC
(``pipelines.monitor._realised``: all rows, and the untreated view where a rule's treated rows weigh
0 and its control rows stand in) is averaged over the lists whose 60-day label window has closed.

Done-when (issue 14): the untreated AUC of the run with actions stays within 0.01 of the AUC without
actions, while the naive AUC on all rows is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger("propensity.bench")


def campaigns_config(effect: float, control_share: float):
    """Two effective campaigns: after a complaint, and a win-back of customers quiet for 30-90 days."""
    from pipelines.synthetic import GeneratorConfig

    return GeneratorConfig(campaigns=[
        {"name": "complaint_recovery", "when": {"complaint_within_days": 30}, "control_share": control_share,
         "effect": effect, "effect_days": 60},
        {"name": "reactivation", "when": {"days_since_last_order": [30, 90]}, "control_share": control_share,
         "effect": effect, "effect_days": 60},
    ])


def realised(home: Path, customers: int, days: int, seed: int, config) -> dict:
    """Generate into ``home``, ingest, write the oracle's weekly lists; monitoring's realised AUC per list."""
    os.environ["PROPENSITY_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    from core.events import EventStore
    from core.settings import project_paths
    from pipelines.ingest import ingest
    from pipelines.monitor import _realised, load_monitor_config
    from pipelines.synthetic import generate
    from pipelines.synthetic.campaigns import oracle_lists, write_lists

    report = generate(customers, days, seed, home / "raw", config=config, progress=False)
    tables = ("orders", "customers", "contacts")
    ingest(**{t: report.files[t] for t in tables if t in report.files})
    paths = project_paths()
    write_lists(oracle_lists(report.files), paths.scores)
    frame, note = _realised("churn", paths.scored_dates(), paths, EventStore(paths.events), load_monitor_config())
    matured = frame.dropna(subset=["auc"])
    return {"lists": len(matured), "auc": float(matured["auc"].mean()),
            "auc_untreated": float(matured["auc_untreated"].mean()), "note": note,
            "contacts": report.rows.get("contacts", 0), "per_list": matured}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=60_000, help="customers to simulate")
    parser.add_argument("--days", type=int, default=365, help="days to simulate")
    parser.add_argument("--seed", type=int, default=7, help="random seed (both runs)")
    parser.add_argument("--effect", type=float, default=0.7, help="churn hazard multiplier after a contact")
    parser.add_argument("--control-share", type=float, default=0.2, help="share of each list held out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("PROPENSITY_CONFIGS", str(Path(__file__).resolve().parents[1] / "configs"))
    from pipelines.synthetic import GeneratorConfig

    root = Path(tempfile.mkdtemp(prefix="bench-effect-"))
    try:
        started = time.perf_counter()
        with_actions = realised(root / "with", args.customers, args.days, args.seed,
                                campaigns_config(args.effect, args.control_share))
        without = realised(root / "without", args.customers, args.days, args.seed, GeneratorConfig())
        figures = {
            "customers": args.customers, "days": args.days, "seed": args.seed, "effect": args.effect,
            "control_share": args.control_share, "contacts": with_actions["contacts"],
            "lists": with_actions["lists"],
            "auc_without_actions": round(without["auc"], 4),
            "auc_all_rows_with_actions": round(with_actions["auc"], 4),
            "auc_untreated_with_actions": round(with_actions["auc_untreated"], 4),
            "naive_minus_without": round(with_actions["auc"] - without["auc"], 4),
            "untreated_minus_without": round(with_actions["auc_untreated"] - without["auc"], 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        figures["within_0.01"] = abs(figures["untreated_minus_without"]) <= 0.01
        log.info("realised AUC over %d matured weekly lists (mean):\n  without actions        %.4f\n"
                 "  with actions, all rows %.4f  (naive, %+.4f)\n  with actions, untreated %.4f (%+.4f)",
                 figures["lists"], without["auc"], with_actions["auc"], figures["naive_minus_without"],
                 with_actions["auc_untreated"], figures["untreated_minus_without"])
        log.info("figures: %s", json.dumps(figures))
        return figures
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
