"""The service's edges, in-process through its ASGI app (models from a tmp MLflow registry, features from
the synthetic table): hostile bodies get their own 422 / 413, only known routes and methods are answered
(and only they reach the metrics), and the OpenAPI document lists the data routes with their schemas."""

from __future__ import annotations

import json

import pytest

from tests.serving.conftest import CHURN_FEATURES, serve_app, table_fetcher

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def client(asgi_app, app_home, customers):
    with serve_app(asgi_app, table_fetcher(customers)) as test_client:
        yield test_client


def _row(customers, i: int = 3) -> dict:
    return {k: (None if v != v else v) for k, v in customers.loc[i, CHURN_FEATURES].to_dict().items()}


def _feature_body(customers, value: str, key: str = "orders_30d") -> bytes:
    """A /predict_features body with ``key`` set to the raw JSON text ``value`` (json.dumps cannot
    write Infinity-as-literal or 400-digit integers the way an attacker's client can)."""
    row = _row(customers)
    row[key] = "__VALUE__"
    return json.dumps({"rows": [row], "models": ["churn"]}).replace('"__VALUE__"', value).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"customer_ids": ["\\ud800"]}', "customer_ids.0"),  # lone surrogate: not encodable as UTF-8
        (b'{"customer_ids": ["c0001", "ok\\udfff"]}', "customer_ids.1"),
        (b'{"customer_ids": ["c0001"], "top_k": true}', "top_k"),  # no bool -> int coercion
        (b'{"customer_ids": ["c0001"], "top_k": "3"}', "top_k"),  # no str -> int coercion
        (b'{"customer_ids": ["c0001"], "top_k": 3.5}', "top_k"),  # 3.0 is an integer in JSON Schema
        (b'{"customer_ids": ["c0001"], "top_k": 1' + b"0" * 400 + b"}", "top_k"),
        (b'{"customer_ids": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "(body)"),  # RecursionError before
        (b"[" * 200_000, "(body)"),
        (b'{"customer_ids": [["c0001"]]}', "customer_ids.0"),
        (b'{"customer_ids": ["c0001"], "models": ["churn", true]}', "models.1"),
        (b'{"customer_ids": ["c0001"], "lang": "\\ud83d"}', "lang"),
    ],
)
def test_bad_predict_bodies_get_their_own_422(client, body, field):
    res = client.post("/predict", content=body, headers={**KEY, "Content-Type": "application/json"})
    assert res.status_code == 422, res.text
    assert res.json()["field"] == field


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", "1" + "0" * 400, "true"])
def test_non_finite_or_huge_feature_values_are_422(client, customers, value):
    res = client.post("/predict_features", content=_feature_body(customers, value), headers=KEY)
    assert res.status_code == 422, res.text
    assert res.json()["field"] == "rows.0.orders_30d"


def test_surrogate_feature_name_is_a_422_the_handler_can_write(client, customers):
    """Before: the 422 naming the key crashed while encoding its own body (500)."""
    body = json.dumps({"rows": [{**_row(customers), "\ud800x": 1}], "models": ["churn"]}).encode()
    res = client.post("/predict_features", content=body, headers=KEY)
    assert res.status_code == 422
    assert res.json()["field"].startswith("rows.0.") and "\\ud800" in res.json()["field"]


def test_body_over_max_body_bytes_is_413(client):
    from serving.config import load_serving_config

    limit = load_serving_config().max_body_bytes
    padded = b'{"customer_ids": ["c0001"]' + b" " * limit + b"}"
    res = client.post("/predict", content=padded, headers=KEY)
    assert res.status_code == 413 and res.json()["field"] == "(body)"

    def chunks():  # no Content-Length: the limit holds while streaming too
        yield b'{"customer_ids": ["c0001"]'
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536
        yield b"}"

    res = client.post("/predict", content=chunks(), headers=KEY)
    assert res.status_code == 413
    assert client.post("/predict", json={"customer_ids": ["c0001"]}, headers=KEY).status_code == 200


def test_health_routes_answer_get_and_head_only(client):
    for path in ("/healthz", "/readyz"):
        assert client.get(path).status_code == 200
        assert client.head(path).status_code == 200
        for method in ("TRACE", "POST", "PUT", "DELETE", "PATCH"):
            res = client.request(method, path)
            assert res.status_code == 405, (method, path)
            assert res.headers["allow"] == "GET, HEAD"
    res = client.get("/predict", headers=KEY)
    assert res.status_code == 405 and res.headers["allow"] == "POST"


def test_unknown_paths_are_404_and_share_one_metrics_bucket(client):
    import secrets

    paths = [f"/probe-{secrets.token_hex(6)}" for _ in range(40)]
    for path in paths:
        res = client.get(path)
        assert res.status_code == 404 and res.json() == {"error": "not found"}
    client.post("/predict", json={"customer_ids": ["c0001"]}, headers=KEY)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert not any(p in metrics.text for p in paths)
    assert 'route="(unknown)"' in metrics.text and 'route="/predict"' in metrics.text


def test_openapi_document_lists_every_data_route_with_schemas(client):
    doc = client.get("/docs.json").json()
    assert doc["openapi"].startswith("3.1")
    for path, method in [("/predict", "post"), ("/predict_features", "post"), ("/ui/api/flagged", "get"),
                         ("/healthz", "get"), ("/readyz", "get")]:
        operation = doc["paths"][path][method]
        assert "200" in operation["responses"], path
        assert operation["responses"]["200"]["content"]["application/json"]["schema"], path
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert schema["properties"]["customer_ids"]["maxItems"] == 100
    assert schema["additionalProperties"] is False
    assert {"401", "413", "422"} <= set(doc["paths"]["/predict"]["post"]["responses"])
    assert doc["paths"]["/predict"]["post"]["security"] == [{"ApiKey": []}]
