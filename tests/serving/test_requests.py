"""Request validation without HTTP: every hostile body is an InvalidRequest (422) naming the field before
any scoring, so it never reaches the batcher or the online store."""

from __future__ import annotations

import pytest

from serving.config import load_serving_config
from serving.errors import InvalidRequest, PayloadTooLarge
from serving.requests import PredictFeaturesRequest, PredictRequest, decode_json, parse_request

SERVED = ["churn", "conversion"]


@pytest.fixture(scope="module")
def config():
    return load_serving_config()


def parse(raw: bytes, kind=PredictRequest, config=None):
    config = config or load_serving_config()
    return parse_request(decode_json(raw, config.max_body_bytes), kind, config, SERVED)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"customer_ids": ["\\ud800"]}', "customer_ids.0"),
        (b'{"customer_ids": ["a", "\\udc00b"]}', "customer_ids.1"),
        (b'{"customer_ids": ["c1"], "top_k": true}', "top_k"),
        (b'{"customer_ids": ["c1"], "top_k": "3"}', "top_k"),
        (b'{"customer_ids": ["c1"], "top_k": 2.5}', "top_k"),
        (b'{"customer_ids": [true]}', "customer_ids.0"),
        (b'{"customer_ids": ["c1"], "top_k": 1e999}', "top_k"),
        (b'{"customer_ids": ["c1"], "top_k": NaN}', "top_k"),
        (b'{"customer_ids": ["c1"], "top_k": ' + b"9" * 400 + b"}", "top_k"),
        (b'{"customer_ids": ["c1"], "top_k": ' + b"9" * 5000 + b"}", "top_k"),
        (b'{"customer_ids": ' + b"[" * 3000 + b"]" * 3000 + b"}", "(body)"),
        (b'{"customer_ids": ["c1"], "x": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}", "(body)"),
        (b'{"customer_ids": ["  "]}', "customer_ids.0"),
        (b'{"customer_ids": ["' + b"x" * 300 + b'"]}', "customer_ids.0"),
        (b"\xff\xfe", "(body)"),
        (b"", "(body)"),
    ],
)
def test_hostile_predict_bodies_are_422(raw, field):
    with pytest.raises(InvalidRequest) as err:
        parse(raw)
    assert err.value.status == 422 and err.value.field == field, err.value
    json_safe = err.value.body()
    import json

    json.dumps(json_safe, ensure_ascii=False).encode("utf-8")  # the 422 itself must be writable


@pytest.mark.parametrize("value", [b"Infinity", b"-Infinity", b"NaN", b"1e400", b"1" + b"0" * 400, b"false", b"[1]"])
def test_feature_values_must_be_finite_numbers_or_null(value):
    raw = b'{"rows": [{"orders_30d": ' + value + b', "customer_id": "c1"}], "models": ["churn"]}'
    with pytest.raises(InvalidRequest) as err:
        parse(raw, PredictFeaturesRequest)
    assert err.value.field == "rows.0.orders_30d", err.value


def test_surrogate_in_a_key_is_named_escaped():
    with pytest.raises(InvalidRequest) as err:
        parse(b'{"rows": [{"\\ud800": 1}]}', PredictFeaturesRequest)
    assert err.value.field == "rows.0.\\ud800"
    assert err.value.body()["field"].encode("utf-8")


def test_body_over_the_byte_limit_is_413(config):
    with pytest.raises(PayloadTooLarge) as err:
        decode_json(b" " * (config.max_body_bytes + 1), config.max_body_bytes)
    assert err.value.status == 413 and err.value.field == "(body)"


def test_valid_bodies_still_parse(config):
    req = parse(b'{"customer_ids": ["c1", "\\u00e9t\\u00e9", "\\ud83d\\ude00"], "top_k": 2, "lang": "zh"}')
    assert req.customer_ids == ["c1", "été", "😀"] and req.top_k == 2 and req.lang == "zh"
    assert parse(b'{"customer_ids": ["c1"], "top_k": 2.0}').top_k == 2  # an integer in JSON Schema terms
    req = parse(b'{"rows": [{"orders_30d": 2, "days_since_last_order": 1.5e2, "x": null, "customer_id": "c"}]}',
                PredictFeaturesRequest)
    assert req.rows[0]["orders_30d"] == 2 and req.rows[0]["days_since_last_order"] == 150.0
    assert PredictRequest(customer_ids=["c1"]).customer_ids == ["c1"]  # Python callers construct directly
