"""Benchmark: Optuna trials per minute on a 200k-row training set (configs/models/churn.yaml search space and
pruning), with and without MLflow trial logging, on the machine as it is (report whether it was shared).

    .venv/bin/python -m bench.bench_training [--rows 200000] [--features 24] [--trials 20]

The data are synthetic (a known logistic signal plus noise features), so the figure measures the
tuning loop itself: LightGBM fits, early stopping, pruning, Optuna storage and MLflow writes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    X.iloc[rng.random(rows) < 0.05, 0] = np.nan
    z = 1.2 * X["f0"].fillna(0) - 0.8 * X["f1"] + 0.5 * X["f2"] * X["f3"] - 0.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(int)
    return X, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="training rows (validation gets a quarter)")
    ap.add_argument("--features", type=int, default=24, help="feature columns")
    ap.add_argument("--trials", type=int, default=20, help="trials per measurement")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["PROPENSITY_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from core.settings import REPO_ROOT, quiet_environment

        quiet_environment()
        import mlflow

        from core.specs import load_spec
        from training.tracking import ensure_experiment
        from training.tune import Datasets, open_study, run_trials

        cfg = load_spec("churn", REPO_ROOT / "configs" / "models" / "churn.yaml")
        X, y = synthetic(args.rows, args.features)
        Xv, yv = synthetic(args.rows // 4, args.features, seed=1)
        t = time.perf_counter()
        data = Datasets.build(X, y, Xv, yv)
        print(f"dataset build ({args.rows} + {args.rows // 4} rows x {args.features}): {time.perf_counter() - t:.2f} s")
        for with_mlflow in (False, True):
            study = open_study(f"bench-{with_mlflow}", None, cfg.tuning)
            t, cpu = time.perf_counter(), time.process_time()
            if with_mlflow:
                with mlflow.start_run(experiment_id=ensure_experiment("bench")):
                    run_trials(study, data, cfg.tuning, args.trials, None, log_to_mlflow=True, progress=False)
            else:
                run_trials(study, data, cfg.tuning, args.trials, None, log_to_mlflow=False, progress=False)
            minutes = (time.perf_counter() - t) / 60
            cpu_minutes = (time.process_time() - cpu) / 60
            pruned = sum(tr.state.name == "PRUNED" for tr in study.trials)
            # Both passes run the same seeded trials; on a shared machine the wall-clock rate moves with
            # other people's load, so CPU time (this process, all threads) is printed beside it.
            print(f"{'with' if with_mlflow else 'without'} MLflow trial runs: {args.trials / minutes:.1f} trials/min "
                  f"wall, {cpu_minutes * 60:.0f} CPU-s ({args.trials} trials, {pruned} pruned, "
                  f"best AUC {study.best_value:.4f}, {cfg.tuning.num_threads} threads, "
                  f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
