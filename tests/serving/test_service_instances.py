"""Service instances of their own, in-process through the ASGI app: without an API key (not ready unless
run open), with the store or the registry broken (error bodies without server paths), and with a short
poll (a `forget` reaches the running service). Each test opens its own TestClient: the app keeps one
current service, so these must not share a module with a long-lived client."""

from __future__ import annotations

import time

from tests.serving.conftest import configs_with, serve_app, table_fetcher

KEY = {"X-API-Key": "test-key"}


def test_readyz_needs_an_api_key_unless_run_open(asgi_app, app_home, customers, tmp_path):
    no_key = {"PROPENSITY_API_KEY": None}
    with serve_app(asgi_app, table_fetcher(customers), env=no_key) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "API key" in ready.json()["auth"]
        assert c.post("/predict", json={"customer_ids": ["c0001"]}).status_code == 401
    configs = configs_with(tmp_path, {"allow_no_api_key: false": "allow_no_api_key: true"})
    with serve_app(asgi_app, table_fetcher(customers), env={**no_key, "PROPENSITY_CONFIGS": str(configs)}) as c:
        assert c.get("/readyz").status_code == 200
        assert c.post("/predict", json={"customer_ids": ["c0001"]}).status_code == 200


def test_error_bodies_carry_no_server_paths(asgi_app, app_home, customers, tmp_path):
    from features.online_store import OnlineStoreUnavailable

    home = app_home[0]

    def down(ids, service):
        raise OnlineStoreUnavailable(f"sqlite: unable to open database file {home / 'data' / 'online_store.db'}")

    with serve_app(asgi_app, down) as c:
        for res in (c.post("/predict", json={"customer_ids": ["c0001"]}, headers=KEY), c.get("/readyz")):
            assert res.status_code == 503
            assert str(home) not in res.text and "/tmp" not in res.text, res.text
        assert "online feature store unavailable" in c.post(
            "/predict", json={"customer_ids": ["c0001"]}, headers=KEY).json()["error"]
    corrupt = tmp_path / "mlflow.db"
    corrupt.write_bytes(b"not a database" * 100)
    with serve_app(asgi_app, table_fetcher(customers), env={"MLFLOW_TRACKING_URI": f"sqlite:///{corrupt}"}) as c:
        for res in (c.post("/predict", json={"customer_ids": ["c0001"]}, headers=KEY), c.get("/readyz"),
                    c.get("/healthz")):
            assert str(tmp_path) not in res.text, res.text
        assert c.post("/predict", json={"customer_ids": ["c0001"]}, headers=KEY).status_code == 503


def test_forget_drops_the_customer_from_the_running_service(asgi_app, app_home, customers, tmp_path):
    from core.settings import project_paths
    from serving.privacy import record_forgotten

    configs = configs_with(tmp_path, {"reload_poll_seconds: 10": "reload_poll_seconds: 0.2"})
    with serve_app(asgi_app, table_fetcher(customers), env={"PROPENSITY_CONFIGS": str(configs)}) as c:
        ids = customers["customer_id"].head(80).tolist()
        assert c.post("/predict", json={"customer_ids": ids}, headers=KEY).status_code == 200
        recent = [r["customer_id"] for r in c.get("/ui/api/flagged", headers=KEY).json()["recent"]]
        assert len(recent) >= 2
        gone, kept = recent[0], recent[1:]
        record_forgotten([gone])
        deadline = time.monotonic() + 10
        while gone in [r["customer_id"] for r in c.get("/ui/api/flagged", headers=KEY).json()["recent"]]:
            assert time.monotonic() < deadline, "forgotten customer still listed after 10 s"
            time.sleep(0.1)
        left = [r["customer_id"] for r in c.get("/ui/api/flagged", headers=KEY).json()["recent"]]
        assert left == kept
        # Asked again later, a forgotten customer is not listed again either.
        c.post("/predict", json={"customer_ids": [gone]}, headers=KEY)
        assert gone not in [r["customer_id"] for r in c.get("/ui/api/flagged", headers=KEY).json()["recent"]]
    text = project_paths().forgotten_ids.read_text()
    assert gone not in text and len(text.split()) == 1 and len(text.split()[0]) == 64
