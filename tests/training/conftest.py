"""Fixtures for training tests. One tiny business per session, made by the project's own chain
(tests/training/business.py: generator -> ingest -> feature build), with a churn and a conversion model
trained on it through the real labels and Feast retrieval and promoted to champion. Tests read it
(``trained_home``) and must not move its aliases or rebuild its features; a test that writes gets a fresh
project home with a copy of the data (``business_home``)."""

from __future__ import annotations

import pytest

from core.settings import REPO_ROOT
from core.specs import load_spec
from tests.training.business import copy_business, make_business, point_env_at


def small_config(model: str, trials: int = 3):
    """The shipped config with thresholds and tuning sized for test data. One LightGBM thread: on the two
    cores the tests share with other jobs, two OpenMP threads made boosting 3-20x slower (measured)."""
    cfg = load_spec(model, REPO_ROOT / "configs" / "models" / f"{model}.yaml")
    tuning = cfg.tuning.model_copy(update={"trials": trials, "max_boost_rounds": 300, "early_stopping_rounds": 20,
                                           "startup_trials": 2, "pruner_warmup_rounds": 20, "num_threads": 1})
    split = cfg.split.model_copy(update={"train_cutoffs": 12, "validation_cutoffs": 4})
    min_data = cfg.min_data.model_copy(update={"train_rows": 200, "train_positives": 20, "validation_rows": 50,
                                               "validation_positives": 5, "test_rows": 20, "test_positives": 3})
    return cfg.model_copy(update={"tuning": tuning, "split": split, "min_data": min_data, "shap_sample_rows": 200})


@pytest.fixture(scope="session")
def _trained_session(tmp_path_factory):
    """A project home (same env as ``project_home``): generated business with ground truth, event store,
    feature snapshots, and a churn and a conversion model (small_config: 3 trials) registered as
    challenger and promoted to champion."""
    from training.promotion import promote
    from training.train import train_model

    home = tmp_path_factory.mktemp("trained") / "project"
    (home / "mlruns").mkdir(parents=True)
    # The environment points at the home only while it is built: a session-long setting would leak into
    # every later test that does not set its own.
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, home)
        make_business(home)
        results = {m: train_model(small_config(m), progress=False) for m in ("churn", "conversion")}
        for m in results:
            promote(m)
    return home, results


@pytest.fixture
def trained_home(_trained_session, monkeypatch):
    """(home, {model: TrainResult}) of the session's trained project, with this test's environment and
    MLflow's process-global tracking URI pointed at it (other tests move both)."""
    from training.tracking import configure_mlflow

    point_env_at(monkeypatch, _trained_session[0])
    configure_mlflow()
    return _trained_session


@pytest.fixture
def business_home(project_home, _trained_session):
    """A fresh ``project_home`` (no models, empty MLflow) holding a copy of the session business: raw
    exports with ground truth, event store, feature snapshots; its Feast registry applied."""
    from features.store import apply

    copy_business(_trained_session[0], project_home)
    apply()
    return project_home
