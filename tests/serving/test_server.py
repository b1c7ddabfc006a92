"""A real `bentoml serve` process on a free loopback port, over the real chain: events -> feature build
-> Feast online store (SQLite) -> LightGBM models registered as champions in a tmp MLflow.

Covers every status code of the API (200, 401, per-customer not found, 413, 422, 503 and recovery),
the hot reload of a moved champion under load, and the staff page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

KEY = "server-test-key"


def free_port() -> int:
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
    mp.setenv("PROPENSITY_API_KEY", KEY)
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
            register_booster(boosters[name], name, feature_service=service, calibration=Calibration(),
                             alias="champion")
        yield {"home": home, "ids": ids, "boosters": boosters}
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def server(served_project):
    """`propensity serve`'s command line and environment, on a free port; stopped at the end."""
    import httpx

    from pipelines.cli.serve import serve_command, serve_environment

    port = free_port()
    env = serve_environment(workers=1, threads=1)
    env.update({
        "PROPENSITY_HOME": str(served_project["home"]),
        "PROPENSITY_CONFIGS": str(served_project["home"] / "configs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{served_project['home'] / 'mlruns' / 'mlflow.db'}",
        "BENTOML_HOME": str(served_project["home"] / "bentoml_home"),
        "PROPENSITY_API_KEY": KEY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    log_path = served_project["home"] / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_command("127.0.0.1", port), env=env, stdout=log, stderr=subprocess.STDOUT)
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
            yield {"client": client, "base": base, **served_project}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


H = {"X-API-Key": KEY}


def test_status_codes(server):
    c = server["client"]
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").json()["online_store"] == "ok"
    assert c.post("/predict", json={"customer_ids": ["c001"]}).status_code == 401
    ok = c.post("/predict", json={"customer_ids": ["c001", "nobody"], "top_k": 5}, headers=H)
    assert ok.status_code == 200
    known, unknown = ok.json()["results"]
    assert known["found"] and known["lifecycle_stage"] and known["rfm_segment"]
    assert 0 < known["churn"]["probability"] < 1 and 0 < len(known["conversion"]["reasons"]) <= 5
    assert unknown == {"customer_id": "nobody", "found": False, "error": "customer not found in the online store"}
    too_many = c.post("/predict", json={"customer_ids": ["c001"] * 101}, headers=H)
    assert too_many.status_code == 413
    bad = c.post("/predict", json={"customer_ids": ["c001"], "lang": "fr"}, headers=H)
    assert bad.status_code == 422 and bad.json()["field"] == "lang"


def test_predict_matches_the_registered_model(server):
    """The served probability is the champion's on the store's features (end to end, no drift)."""
    from features.retrieval import model_feature_names, online_features

    c = server["client"]
    answer = c.post("/predict", json={"customer_ids": ["c005"], "models": ["churn"]}, headers=H).json()
    frame = online_features(["c005"], "churn_v1")
    raw = server["boosters"]["churn"].predict(frame[model_feature_names("churn_v1")].to_numpy(), raw_score=True)
    assert answer["results"][0]["churn"]["probability"] == pytest.approx(1 / (1 + np.exp(-raw[0])), abs=1e-9)
    reasons = answer["results"][0]["churn"]["reasons"]
    assert [abs(r["contribution"]) for r in reasons] == sorted((abs(r["contribution"]) for r in reasons), reverse=True)


def test_store_down_is_503_then_recovers(server):
    c = server["client"]
    db = server["home"] / "data" / "online_store.db"
    moved = db.with_name("online_store.db.away")
    db.rename(moved)
    try:
        down = c.post("/predict", json={"customer_ids": ["c001"]}, headers=H)
        assert down.status_code == 503 and "online feature store unavailable" in down.json()["error"]
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        moved.rename(db)
    assert c.post("/predict", json={"customer_ids": ["c001"]}, headers=H).status_code == 200
    assert c.get("/readyz").status_code == 200


def test_hot_reload_under_load_drops_nothing(server):
    import httpx

    from training.champion import Calibration, register_booster

    before = server["client"].get("/healthz").json()["models"]
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server["base"], timeout=10) as client:
            while not stop.is_set():
                res = client.post("/predict", json={"customer_ids": ["c002"], "models": ["churn"]}, headers=H)
                statuses.append(res.status_code)
                if res.status_code == 200:
                    versions.add(res.json()["model_versions"]["churn"])

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        new = register_booster(server["boosters"]["churn"], "churn", feature_service="churn_v1",
                               calibration=Calibration(0.5, 0.1), alias="champion")
        deadline = time.monotonic() + 30
        while server["client"].get("/healthz").json()["models"]["churn"] != new:
            assert time.monotonic() < deadline, "champion move not picked up in 30 s"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert statuses and set(statuses) == {200}
    assert versions == {before["churn"], new}


def _chromium():
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian chromium not installed (CI installs it with apt-get)")
    return path


def test_staff_page_in_headless_chromium(server):
    import pandas as pd

    playwright = pytest.importorskip("playwright.sync_api")
    scores = server["home"] / "data" / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "customer_id": ["c003"], "as_of": pd.to_datetime(["2026-03-01"], utc=True),
        "churn_probability": [0.91], "churn_band": ["high"], "conversion_probability": [0.1],
        "conversion_band": ["low"], "rfm_segment": ["general_to_win_back"], "lifecycle_stage": ["at_risk"],
        "reasons": ["no order for 94 days"],
    }).to_parquet(scores / "latest.parquet")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page()
            page.goto(f"{server['base']}/ui")
            page.fill("#apikey", "wrong")
            page.click("#keyform button")
            page.wait_for_selector("#status.error")
            assert "wrong API key" in page.inner_text("#status")
            page.fill("#apikey", KEY)
            page.click("#keyform button")
            page.wait_for_selector("tr.row[data-customer=c003]")
            assert "no order for 94 days" in page.inner_text("#flagged")
            page.select_option("#lang", "zh")
            page.fill("#search", "c004")
            page.click("#searchform button")
            page.wait_for_selector("div.model[data-model=churn] svg rect.contribution")
            bars = page.locator("div.model[data-model=churn] rect.contribution").count()
            assert 1 <= bars <= 8
            assert page.locator("div.model[data-model=churn] li").count() == bars
            page.fill("#search", "nobody")
            page.click("#searchform button")
            page.wait_for_selector("#detail >> text=not found")
        finally:
            browser.close()
