"""Shared fixtures. Every test runs against a project home under tmp_path: MLflow, Feast and the event
store never touch the checkout."""

from __future__ import annotations

import os

import pytest

from core.settings import REPO_ROOT, TELEMETRY_OFF

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture
def project_home(tmp_path, monkeypatch):
    """A fresh project root: PROPENSITY_HOME, MLflow tracking and BentoML home all under tmp_path."""
    home = tmp_path / "project"
    home.mkdir()
    monkeypatch.setenv("PROPENSITY_HOME", str(home))
    monkeypatch.setenv("PROPENSITY_CONFIGS", str(REPO_ROOT / "configs"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    monkeypatch.setenv("BENTOML_HOME", str(home / "bentoml_home"))
    monkeypatch.delenv("PROPENSITY_REDIS_URL", raising=False)
    (home / "mlruns").mkdir()
    return home


def new_project(folder) -> tuple[object, pytest.MonkeyPatch]:
    """A project home with its own copy of configs/ and the environment pointing at it, for module-scoped
    end-to-end fixtures (``project_home`` is per test). Returns (home, the MonkeyPatch to undo)."""
    import shutil

    home = folder / "project"
    (home / "mlruns").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "configs", home / "configs")
    mp = pytest.MonkeyPatch()
    for k, v in TELEMETRY_OFF.items():
        mp.setenv(k, v)
    mp.setenv("PROPENSITY_HOME", str(home))
    mp.setenv("PROPENSITY_CONFIGS", str(home / "configs"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    mp.setenv("BENTOML_HOME", str(home / "bentoml_home"))
    mp.delenv("PROPENSITY_REDIS_URL", raising=False)
    return home, mp
