"""The ASGI app of the BentoML service with Starlette's TestClient: routes, status codes, auth, /ui.

Models come from a real MLflow registry under tmp_path (alias champion). Features come from the
synthetic table through the online fetcher's interface; the real Feast online store is exercised by the
`bentoml serve` tier (test_server.py)."""

from __future__ import annotations

import pytest

from tests.serving.conftest import CHURN_FEATURES, serve_app, table_fetcher

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def client(asgi_app, app_home, customers):
    with serve_app(asgi_app, table_fetcher(customers)) as test_client:
        yield test_client


def test_health_and_ready_carry_versions(client, registered):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "alive", "models": registered}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == registered and ready.json()["online_store"] == "ok"


def test_data_endpoints_need_the_key(client):
    for method, path in [("post", "/predict"), ("post", "/predict_features"), ("get", "/ui/api/flagged")]:
        assert getattr(client, method)(path).status_code == 401
        bad = getattr(client, method)(path, headers={"X-API-Key": "nope"})
        assert bad.status_code == 401 and "wrong API key" in bad.json()["error"]


def test_predict_answers_per_customer(client, registered):
    res = client.post("/predict", json={"customer_ids": ["c0001", "ghost"], "top_k": 2, "lang": "zh"}, headers=KEY)
    assert res.status_code == 200
    body = res.json()
    assert body["model_versions"] == registered
    known, ghost = body["results"]
    assert known["found"] and len(known["churn"]["reasons"]) == 2
    assert known["churn"]["model_version"] == registered["churn"]
    assert ghost == {"customer_id": "ghost", "found": False, "error": "customer not found in the online store"}


def test_bad_input_statuses(client):
    assert client.post("/predict", content=b"{not json", headers=KEY).status_code == 422
    res = client.post("/predict", json={"customer_ids": ["c1"], "top_k": "many"}, headers=KEY)
    assert res.status_code == 422 and res.json()["field"] == "top_k"
    res = client.post("/predict", json={"customer_ids": [f"c{i}" for i in range(101)]}, headers=KEY)
    assert res.status_code == 413 and "maximum per request is 100" in res.json()["error"]


def test_predict_features_route(client, customers):
    row = customers.loc[3, CHURN_FEATURES].to_dict()
    res = client.post("/predict_features", json={"rows": [row], "models": ["churn"]}, headers=KEY)
    assert res.status_code == 200 and 0 < res.json()["results"][0]["churn"]["probability"] < 1
    res = client.post("/predict_features", json={"rows": [{**row, "bogus": 1}], "models": ["churn"]}, headers=KEY)
    assert res.status_code == 422 and res.json()["field"] == "rows.0.bogus"


def test_concurrent_requests_are_batched_and_each_answered(client):
    from concurrent.futures import ThreadPoolExecutor

    ids = [f"c{i:04d}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda cid: client.post("/predict", json={"customer_ids": [cid]}, headers=KEY), ids))
    assert [a.status_code for a in answers] == [200] * 40
    assert [a.json()["results"][0]["customer_id"] for a in answers] == ids


def test_ui_page_and_flagged_feed(client, app_home):
    import pandas as pd

    page = client.get("/ui")
    assert page.status_code == 200 and "Follow-up lists" in page.text and "<script" in page.text
    assert "http" not in page.text.split("<script", 1)[1].split("fetch(", 1)[0]  # no external resources
    client.post("/predict", json={"customer_ids": [f"c{i:04d}" for i in range(50)]}, headers=KEY)
    scores = app_home[0] / "data" / "scores"
    scores.mkdir(parents=True)
    # Listed: a rule's treatment group in a work queue, whatever the bands; not the default action.
    pd.DataFrame({
        "customer_id": ["x1", "x2"], "as_of": pd.to_datetime(["2026-10-31"] * 2, utc=True),
        "churn_probability": [0.9, 0.95], "churn_band": ["high", "high"],
        "conversion_probability": [0.2, 0.1], "conversion_band": ["low", "low"],
        "rfm_segment": ["general_to_win_back", "important_value"], "lifecycle_stage": ["at_risk", "active"],
        "reasons": ["no order for 94 days", ""], "reasons_json": ["[]", "[]"],
        "action": ["Retention email with a personal offer", "no action"], "queue": ["marketing_retention", "none"],
        "action_rule": ["retention_offer", ""], "group": ["treatment", ""], "priority": [12.0, None],
        "queue_status": ["in queue", ""], "tags": ["", ""],
    }).to_parquet(scores / "latest.parquet")
    feed = client.get("/ui/api/flagged", headers=KEY).json()
    assert [r["customer_id"] for r in feed["rows"]] == ["x1"] and feed["rows"][0]["queue"] == "marketing_retention"
    assert feed["recent"] and {r["customer_id"] for r in feed["recent"]} <= {f"c{i:04d}" for i in range(50)}
