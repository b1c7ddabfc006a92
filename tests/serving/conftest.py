"""Fixtures for the serving tests: tiny synthetic customers whose churn / conversion depend on known
drivers, two small LightGBM models trained on them, and the same models registered in a tmp MLflow."""

from __future__ import annotations

from contextlib import contextmanager, suppress

import numpy as np
import pandas as pd
import pytest

CHURN_FEATURES = [
    "complaints_30d",
    "open_complaints",
    "days_since_last_order",
    "orders_30d",
    "orders_prev_30d",
    "orders_trend_30d",
    "sessions_30d",
]
CONVERSION_FEATURES = [
    "cart_views_30d",
    "abandoned_carts_30d",
    "product_views_30d",
    "pages_per_session_30d",
    "days_since_last_visit",
    "sessions_7d",
]


def make_customers(n: int = 400, seed: int = 7) -> pd.DataFrame:
    """Customers with contract feature names; churn driven by complaints and inactivity, conversion by
    cart views and product views, so the models' top reasons have a known answer."""
    rng = np.random.default_rng(seed)
    complaints = rng.poisson(0.6, n)
    orders_30d = rng.poisson(1.5, n)
    orders_prev = rng.poisson(1.5, n)
    trend = np.where(orders_30d + orders_prev > 0, (orders_30d - orders_prev) / np.maximum(orders_30d + orders_prev, 1), np.nan)
    days_order = rng.integers(0, 200, n).astype(float)
    days_order[rng.random(n) < 0.05] = np.nan  # never ordered
    carts = rng.poisson(1.0, n)
    products = rng.poisson(4.0, n)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i:04d}" for i in range(n)],
            "complaints_30d": complaints.astype(float),
            "open_complaints": np.minimum(complaints, rng.poisson(0.3, n)).astype(float),
            "days_since_last_order": days_order,
            "orders_30d": orders_30d.astype(float),
            "orders_prev_30d": orders_prev.astype(float),
            "orders_trend_30d": trend,
            "sessions_30d": rng.poisson(5, n).astype(float),
            "cart_views_30d": carts.astype(float),
            "abandoned_carts_30d": np.minimum(carts, rng.poisson(0.5, n)).astype(float),
            "product_views_30d": products.astype(float),
            "pages_per_session_30d": rng.gamma(2.0, 2.0, n),
            "days_since_last_visit": rng.integers(0, 60, n).astype(float),
            "sessions_7d": rng.poisson(1.5, n).astype(float),
            "rfm_segment": rng.choice(["champions", "at_risk", "hibernating"], n),
            "lifecycle_stage": rng.choice(["new", "active", "at_risk", "lapsed"], n),
        }
    )
    logit_churn = -2.0 + 1.3 * complaints + 0.015 * np.nan_to_num(days_order, nan=200)
    logit_conv = -2.5 + 1.2 * carts + 0.25 * products
    frame["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit_churn))).astype(int)
    frame["converted"] = (rng.random(n) < 1 / (1 + np.exp(-logit_conv))).astype(int)
    return frame


def train_booster(frame: pd.DataFrame, features: list[str], label: str, trees: int = 40, seed: int = 1):
    import lightgbm as lgb

    data = lgb.Dataset(frame[features].astype("float64"), label=frame[label], params={"feature_pre_filter": False})
    params = {"objective": "binary", "num_leaves": 7, "learning_rate": 0.1, "min_data_in_leaf": 10,
              "verbose": -1, "seed": seed, "num_threads": 1}
    return lgb.train(params, data, num_boost_round=trees)


@pytest.fixture(scope="session")
def customers() -> pd.DataFrame:
    return make_customers()


@pytest.fixture(scope="session")
def boosters(customers):
    return {
        "churn": train_booster(customers, CHURN_FEATURES, "churned"),
        "conversion": train_booster(customers, CONVERSION_FEATURES, "converted"),
    }


@pytest.fixture(scope="session")
def loaded_models(boosters):
    """LoadedModel objects built directly (no registry) for logic tests."""
    from training.champion import Calibration, LoadedModel

    services = {"churn": "churn_v1", "conversion": "conversion_v1"}
    return {
        name: LoadedModel(
            name=name,
            version="1",
            booster=booster,
            feature_names=list(booster.feature_name()),
            feature_service=services[name],
            calibration=Calibration(a=1.0, b=0.0),
            tags={"band_thresholds": '{"high": 0.6, "medium": 0.3}'},  # as training would store them
        )
        for name, booster in boosters.items()
    }


def table_fetcher(table: pd.DataFrame, calls: list | None = None):
    """Feature look-up from a DataFrame with the online path's output shape (a `found` column)."""
    indexed = table.drop(columns=["churned", "converted"], errors="ignore").set_index("customer_id")

    def fetch(customer_ids: list[str], service: str) -> pd.DataFrame:
        if calls is not None:
            calls.append((list(customer_ids), service))
        out = indexed.reindex(customer_ids)
        out["found"] = out.index.isin(indexed.index)
        return out.reset_index()

    return fetch


@pytest.fixture
def registered_champions(project_home, boosters):
    """Both models registered in the tmp MLflow with the contract's tags, alias champion."""
    from training.champion import Calibration, register_booster

    versions = {}
    for name, service in (("churn", "churn_v1"), ("conversion", "conversion_v1")):
        versions[name] = register_booster(
            boosters[name], name, bands={"high": 0.6, "medium": 0.3}, feature_service=service, calibration=Calibration(1.0, 0.0),
            holdout_auc=0.8, alias="champion",
        )
    return versions


# ---------------------------------------------------------------------------------------------- ASGI app
@pytest.fixture(scope="session")
def asgi_app():
    """Built once: BentoML registers its Prometheus metrics per app. Each TestClient context still runs
    the lifespan, so every test gets a fresh service instance against its own project home."""
    from serving.service import PropensityService

    return PropensityService.to_asgi()


@pytest.fixture(scope="module")
def app_home(tmp_path_factory, boosters):
    """One project home per test module (registering in a fresh MLflow costs seconds per test)."""
    from core.settings import REPO_ROOT
    from training.champion import Calibration, register_booster

    home = tmp_path_factory.mktemp("app") / "project"
    (home / "mlruns").mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    for key, value in {
        "PROPENSITY_HOME": str(home), "PROPENSITY_CONFIGS": str(REPO_ROOT / "configs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
        "BENTOML_HOME": str(home / "bentoml_home"), "PROPENSITY_API_KEY": "test-key",
    }.items():
        mp.setenv(key, value)
    versions = {
        name: register_booster(boosters[name], name, bands={"high": 0.6, "medium": 0.3}, feature_service=service, calibration=Calibration(),
                               alias="champion")
        for name, service in (("churn", "churn_v1"), ("conversion", "conversion_v1"))
    }
    yield home, versions
    mp.undo()


@pytest.fixture(scope="module")
def registered(app_home):
    return app_home[1]


@contextmanager
def serve_app(asgi_app, fetcher, env: dict[str, str | None] | None = None):
    """A TestClient over the service app (its lifespan builds a fresh service instance) whose online
    look-ups go to ``fetcher``; ``env`` sets (or with None unsets) variables for this instance only."""
    from starlette.testclient import TestClient

    import serving.predictor

    mp = pytest.MonkeyPatch()
    mp.setattr(serving.predictor, "online_fetcher", lambda: fetcher)
    for key, value in (env or {}).items():
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)
    try:
        with TestClient(asgi_app) as test_client:
            yield test_client
    finally:
        mp.undo()


def configs_with(tmp_path, replacements: dict[str, str]):
    """A copy of the shipped configs/ with text replacements in serving.yaml (each must match)."""
    import shutil

    from core.settings import REPO_ROOT

    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    text = (configs / "serving.yaml").read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    (configs / "serving.yaml").write_text(text, encoding="utf-8")
    return configs


# ---------------------------------------------------------------------------------------------- real server
# A real `propensity serve` command line (bentoml serve) on a free loopback port, over the real chain:
# events -> feature build -> Feast online store (SQLite) -> LightGBM champions in a tmp MLflow. Used by
# test_server.py and test_schemathesis.py (both `slow`); the session fixtures start it once.
SERVER_KEY = "server-test-key"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_on_store(name: str, service: str, ids: list[str], seed: int):
    """A small booster on the service's online features, labels from a known rule plus noise."""
    import lightgbm as lgb

    from features.retrieval import model_feature_names, online_features

    frame = online_features(ids, service)
    names = model_feature_names(service)
    rng = np.random.default_rng(seed)
    score = frame[names].fillna(0).to_numpy() @ rng.normal(size=len(names))
    label = (score + rng.normal(scale=score.std() + 1e-9, size=len(score)) > np.median(score)).astype(int)
    data = lgb.Dataset(frame[names], label=label, params={"feature_pre_filter": False})
    params = {"objective": "binary", "num_leaves": 5, "min_data_in_leaf": 3, "verbose": -1, "seed": seed}
    return lgb.train(params, data, num_boost_round=20)


@pytest.fixture(scope="session")
def served_project(tmp_path_factory):
    """Project home with events, features in the online store and both champions registered."""
    import shutil

    from core.settings import REPO_ROOT
    from tests.features.conftest import END, random_events, write_store

    home = tmp_path_factory.mktemp("serving") / "project"
    (home / "mlruns").mkdir(parents=True)
    configs = home / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    text = (configs / "serving.yaml").read_text(encoding="utf-8")
    text = text.replace("reload_poll_seconds: 10", "reload_poll_seconds: 0.5").replace("workers: 2", "workers: 1")
    (configs / "serving.yaml").write_text(text, encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROPENSITY_HOME", str(home))
    mp.setenv("PROPENSITY_CONFIGS", str(configs))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    mp.setenv("BENTOML_HOME", str(home / "bentoml_home"))
    mp.setenv("PROPENSITY_API_KEY", SERVER_KEY)
    mp.delenv("PROPENSITY_REDIS_URL", raising=False)
    try:
        from features.build import build_features
        from features.store import materialize
        from training.champion import Calibration, register_booster

        tables = random_events(n_customers=60)
        write_store(home, tables)
        build_features(END.date())
        materialize()
        ids = sorted(tables["customers"]["customer_id"])
        boosters = {}
        for name, service, seed in (("churn", "churn_v1", 1), ("conversion", "conversion_v1", 2)):
            boosters[name] = train_on_store(name, service, ids, seed)
            register_booster(boosters[name], name, bands={"high": 0.6, "medium": 0.3}, feature_service=service, calibration=Calibration(),
                             alias="champion")
        yield {"home": home, "ids": ids, "boosters": boosters}
    finally:
        mp.undo()


@contextmanager
def start_server(project: dict, workers: int = 1):
    """`propensity serve`'s command line and environment for ``project`` on a free port, ready (/readyz
    200) within 120 s; yields {client, base, proc, log}; stopped (its whole process group) at the end."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from pipelines.cli.serve import serve_command, serve_environment

    port = free_port()
    home = project["home"]
    env = serve_environment(workers=workers, threads=1)
    env.update({
        "PROPENSITY_HOME": str(home),
        "PROPENSITY_CONFIGS": str(home / "configs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
        "BENTOML_HOME": str(home / "bentoml_home"),
        "PROPENSITY_API_KEY": SERVER_KEY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    log_path = home / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_command("127.0.0.1", port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service not ready after 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield {"client": client, "base": base, "proc": proc, "log": log_path, **project}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        with suppress(ProcessLookupError):  # workers of a server that did not stop cleanly
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def server(served_project):
    with start_server(served_project) as running:
        yield running
