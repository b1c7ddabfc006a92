"""Does cleaning give back the model that clean data gives? Churn and conversion AUC, paired.

For each seed the same shop is generated twice, without and with ``--anomalies`` (the genuine rows are
identical; the anomalies are added on top), and ingested three ways into three projects:

- ``clean``: the shop without anomalies;
- ``cleaned``: the dirty shop with the cleaning rules of configs/cleaning.yaml;
- ``uncleaned``: the dirty shop with every rule off except ``cancellations`` (the data contract refuses a
  negative amount, so "no cleaning at all" cannot be ingested; this is the nearest that can).

Each project trains every model (same trials). All models are then scored on the same rows: the clean
project's latest ground-truth date whose label window has matured, labels from the clean events, each
model with features from its own project's store (what it would see in production). Printed: AUC per
variant with its 95% interval, and the paired bootstrap interval of (variant - clean), per seed and over
all seeds pooled (rows of every seed, resampled together).

    .venv/bin/python -m bench.bench_cleaning --customers 8000 --seeds 7 11 23 --trials 8
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

VARIANTS = ("clean", "cleaned", "uncleaned")
MODELS = ("churn", "conversion")
TABLES = ("orders", "customers", "page_views", "complaints")
KEEP_FOR_UNCLEANED = {"cancellations"}

log = logging.getLogger("bench.cleaning")


def _cli(home: Path, *args: str) -> None:
    env = {**os.environ, "PROPENSITY_HOME": str(home)}
    proc = subprocess.run([str(Path(sys.executable).with_name("propensity")), *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"propensity {' '.join(args)} failed in {home}:\n{proc.stderr[-3000:]}")


def _rules_without_cleaning(configs: Path, out: Path) -> Path:
    rules = yaml.safe_load((configs / "cleaning.yaml").read_text())
    for name, rule in rules.items():
        if isinstance(rule, dict) and "enabled" in rule:
            rule["enabled"] = name in KEEP_FOR_UNCLEANED
    out.write_text(yaml.safe_dump(rules))
    return out


def build_project(home: Path, variant: str, customers: int, days: int, seed: int, trials: int,
                  configs: Path) -> None:
    home.mkdir(parents=True)
    gen = ["generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed)]
    _cli(home, *gen, *([] if variant == "clean" else ["--anomalies"]))
    raw = home / "data" / "raw"
    ingest = ["ingest"]
    for table in TABLES:
        ingest += [f"--{table.replace('_', '-')}", str(raw / f"{table}.parquet")]
    if variant == "uncleaned":
        ingest += ["--cleaning", str(_rules_without_cleaning(configs, home / "no-cleaning.yaml"))]
    _cli(home, *ingest)
    _cli(home, "features", "build")
    for model in MODELS:
        _cli(home, "train", model, "--trials", str(trials))


def evaluation_rows(model: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Labelled rows at the latest matured ground-truth date of the project in PROPENSITY_HOME, with the
    generator's true probability (the oracle)."""
    from core.events import EventStore
    from core.settings import project_paths
    from core.specs import load_spec
    from training.evaluate import read_ground_truth
    from training.labels import TEST, build_labels, data_end

    spec = load_spec(model)
    truth_col = spec.ground_truth.probability
    gt = read_ground_truth(columns=(truth_col,))
    store = EventStore(project_paths().events)
    end = data_end(store, spec.cutoffs)
    horizon = pd.Timedelta(days=spec.labels.horizon_days)
    as_of = pd.Timestamp(max(t for t in gt["as_of"].unique() if t + horizon <= end))
    cutoffs = pd.DataFrame({"cutoff": pd.Series([as_of]).astype("datetime64[us, UTC]"), "split": [TEST]})
    rows = build_labels(store, spec.labels, cutoffs)
    rows = rows.merge(gt[gt["as_of"] == as_of][["customer_id", truth_col]], on="customer_id", how="inner")
    return rows.rename(columns={truth_col: "oracle"}).reset_index(drop=True), as_of


def score_in(home: Path, model: str, rows: pd.DataFrame) -> np.ndarray:
    """The registered model ``model`` (latest version) of project ``home``, on ``rows`` with that
    project's own features."""
    os.environ["PROPENSITY_HOME"] = str(home)
    from features.exact import exact_historical_features
    from training.champion import load_model_version
    from training.tracking import client, configure_mlflow

    configure_mlflow()
    latest = max(int(v.version) for v in client().search_model_versions(f"name='{model}'"))
    loaded = load_model_version(model, version=latest)
    feats = exact_historical_features(rows[["customer_id", "event_timestamp"]], loaded.feature_service)
    return loaded.predict_proba(feats.reset_index(drop=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=8000, help="customers per generated shop")
    parser.add_argument("--days", type=int, default=365, help="simulated days")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23], help="generator seeds")
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials per model")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from training.backtest import bootstrap

    configs = Path(os.environ.get("PROPENSITY_CONFIGS", Path(__file__).resolve().parent.parent / "configs"))
    os.environ["PROPENSITY_CONFIGS"] = str(configs)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-cleaning-"))
    pooled: dict[str, list] = {m: [] for m in MODELS}
    for seed in args.seeds:
        for variant in VARIANTS:
            home = work / f"seed{seed}" / variant
            if not (home / "mlruns").exists():
                start = time.perf_counter()
                build_project(home, variant, args.customers, args.days, seed, args.trials, configs)
                log.info("seed %d %s: built and trained in %.0f s", seed, variant, time.perf_counter() - start)
        for model in MODELS:
            os.environ["PROPENSITY_HOME"] = str(work / f"seed{seed}" / "clean")
            rows, as_of = evaluation_rows(model)
            scores = {v: score_in(work / f"seed{seed}" / v, model, rows) for v in VARIANTS}
            scores["oracle"] = rows["oracle"].to_numpy()
            pooled[model].append((rows["label"].to_numpy(), scores))
            _print(f"seed {seed} {model} at {as_of:%Y-%m-%d} ({len(rows)} rows)",
                   bootstrap(rows["label"].to_numpy(), scores, args.resamples, reference="clean"))
    for model in MODELS:
        y = np.concatenate([y for y, _ in pooled[model]])
        scores = {k: np.concatenate([s[k] for _, s in pooled[model]]) for k in pooled[model][0][1]}
        _print(f"pooled {model} ({len(args.seeds)} seeds, {len(y)} rows)",
               bootstrap(y, scores, args.resamples, reference="clean"))
    log.info("projects kept in %s", work)
    return 0


def _print(title: str, stats: dict) -> None:
    log.info("%s", title)
    for name, s in stats.items():
        line = f"  {name:10s} AUC {s['roc_auc']:.4f} [{s['roc_auc_ci'][0]:.4f}, {s['roc_auc_ci'][1]:.4f}]"
        if "auc_diff" in s:
            # bootstrap() reports reference - scorer; print scorer - clean
            lo, hi = s["auc_diff_ci"]
            line += f"   minus clean {-s['auc_diff']:+.4f} [{-hi:+.4f}, {-lo:+.4f}]"
        log.info(line)


if __name__ == "__main__":
    raise SystemExit(main())
