"""Optuna tuning: a seeded study is reproducible, and two worker processes tune one shared study."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest

from core.settings import REPO_ROOT
from tests.training.conftest import small_config

# A tune-only worker as `propensity train churn --tune-only` runs it: labels and Feast features of the
# project in PROPENSITY_HOME (the environment the test hands down).
WORKER = textwrap.dedent("""
    import sys
    from tests.training.conftest import small_config
    from training.train import train_model

    storage, study = sys.argv[1], sys.argv[2]
    train_model(small_config("churn"), trials=3, storage=storage, study_name=study, tune_only=True,
                progress=False)
""")


def test_seeded_study_proposes_the_same_first_trials(trained_home, tmp_path):
    from training.train import build_training_set
    from training.tune import Datasets, open_study, run_trials

    cfg = small_config("churn")
    ts = build_training_set(cfg)
    data = Datasets.build(ts.X("train"), ts.y("train"), ts.X("validation"), ts.y("validation"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # not the session project's study database
    params = []
    for name in ("a", "b"):
        study = open_study(name, storage, cfg.tuning)
        run_trials(study, data, cfg.tuning, 2, None, log_to_mlflow=False, progress=False)
        params.append([t.params for t in study.trials])
        assert all(t.user_attrs.get("best_iteration", 0) > 0 for t in study.trials if t.state.name == "COMPLETE")
    assert params[0] == params[1]


@pytest.mark.slow
def test_two_workers_tune_one_study(business_home):
    home = business_home
    storage = f"sqlite:///{home / 'mlruns' / 'shared-optuna.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage, "shared"], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-4000:] for o in outputs]  # the tail holds the error

    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 6
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    # Different sampler seeds per worker: no two trials share parameters.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6

    import mlflow

    from training.tracking import configure_mlflow

    configure_mlflow()  # this process's MLflow may still point at an earlier test's store
    trial_runs = mlflow.search_runs(experiment_names=["churn"], filter_string="tags.optuna_study = 'shared'")
    trial_runs = trial_runs[trial_runs["tags.optuna_trial"].notna()]
    assert trial_runs["tags.worker_pid"].nunique() == 2
    assert sorted(trial_runs["tags.optuna_trial"].astype(int)) == list(range(6))

    # The main process fits the final model from the shared study's best trial without new trials.
    from training.train import train_model

    result = train_model(small_config("churn"), trials=0, storage=storage, study_name="shared", progress=False)
    assert result.trials_in_study == 6 and result.version == "1"
    assert result.best_params == study.best_trial.params
