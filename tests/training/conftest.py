"""Fixtures for training tests: a synthetic event store (generated once per session and copied into each
project home), configs scaled down for tiny data, and one trained churn / conversion model per session (read-only: tests must not move its aliases)."""

from __future__ import annotations

import shutil

import pytest

from core.events import EventStore
from core.settings import REPO_ROOT
from core.specs import load_spec
from tests.training.synthetic import EventFeatures, make_events


@pytest.fixture(scope="session")
def synthetic_events(tmp_path_factory):
    """~1000 customers over 17 months: orders, page views, complaints (generated once, ~2 s)."""
    root = tmp_path_factory.mktemp("synthetic") / "events"
    make_events(root, n_customers=1000, seed=7)
    return root


def small_config(model: str, trials: int = 3):
    """The shipped config with thresholds and tuning sized for test data."""
    cfg = load_spec(model, REPO_ROOT / "configs" / "models" / f"{model}.yaml")
    tuning = cfg.tuning.model_copy(update={"trials": trials, "max_boost_rounds": 300, "early_stopping_rounds": 20,
                                           "startup_trials": 2, "pruner_warmup_rounds": 20})
    split = cfg.split.model_copy(update={"train_cutoffs": 12, "validation_cutoffs": 4})
    min_data = cfg.min_data.model_copy(update={"train_rows": 200, "train_positives": 20, "validation_rows": 50,
                                               "validation_positives": 5, "test_rows": 20, "test_positives": 3})
    return cfg.model_copy(update={"tuning": tuning, "split": split, "min_data": min_data, "shap_sample_rows": 200})


@pytest.fixture
def events_home(project_home, synthetic_events):
    """project_home with the synthetic event store in data/events; returns (home, EventFeatures source)."""
    dest = project_home / "data" / "events"
    shutil.copytree(synthetic_events, dest)
    return project_home, EventFeatures(EventStore(dest))


def point_env_at(mp: pytest.MonkeyPatch, home) -> None:
    """The environment of ``project_home`` (tests/conftest.py), for a project home made elsewhere."""
    mp.setenv("PROPENSITY_HOME", str(home))
    mp.setenv("PROPENSITY_CONFIGS", str(REPO_ROOT / "configs"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    mp.setenv("BENTOML_HOME", str(home / "bentoml_home"))
    mp.delenv("PROPENSITY_REDIS_URL", raising=False)


@pytest.fixture
def trained_home(_trained_session, monkeypatch):
    """The session's trained project, with this test's environment and MLflow's process-global tracking
    URI pointed at it (other tests move both)."""
    from training.tracking import configure_mlflow

    point_env_at(monkeypatch, _trained_session[0])
    configure_mlflow()
    return _trained_session


@pytest.fixture(scope="session")
def _trained_session(tmp_path_factory, synthetic_events):
    """A project home (same env as ``project_home``) holding a trained churn and conversion model."""
    from training.train import train_model

    home = tmp_path_factory.mktemp("trained") / "project"
    (home / "mlruns").mkdir(parents=True)
    shutil.copytree(synthetic_events, home / "data" / "events")
    # The environment points at the home only while it is built: a session-long setting would leak into
    # every later test that does not set its own.
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, home)
        source = EventFeatures(EventStore(home / "data" / "events"))
        results = {m: train_model(small_config(m), source=source, progress=False) for m in ("churn", "conversion")}
    return home, source, results


# ---- a project on the real chain: generator -> ingest -> Feast feature build -> training ----------------
GENERATED = {"customers": 1500, "days": 300, "seed": 7}  # the `tiny` size of configs/run.yaml


@pytest.fixture(scope="session")
def _generated_session(tmp_path_factory):
    """A project home holding generated data (with ground truth), the event store, the feature store's
    snapshots, and a churn and a conversion model trained on them with a few trials and promoted to
    champion. Read-only for tests: they must not move its aliases or rebuild its features."""
    from features.build import build_features
    from pipelines.ingest import ingest
    from pipelines.synthetic import generate
    from training.promotion import promote
    from training.train import train_model

    home = tmp_path_factory.mktemp("generated") / "project"
    (home / "mlruns").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, home)
        raw = home / "data" / "raw"
        generate(out=raw, progress=False, **GENERATED)
        ingest(orders=raw / "orders.parquet", customers=raw / "customers.parquet",
               page_views=raw / "page_views.parquet", complaints=raw / "complaints.parquet")
        build_features()
        results = {m: train_model(small_config(m, trials=2), progress=False) for m in ("churn", "conversion")}
        for m in results:
            promote(m)
    return home, results


@pytest.fixture
def generated_home(_generated_session, monkeypatch):
    """The session's generated project, with this test's environment (and MLflow) pointed at it."""
    from training.tracking import configure_mlflow

    home, results = _generated_session
    point_env_at(monkeypatch, home)
    configure_mlflow()
    return home, results
