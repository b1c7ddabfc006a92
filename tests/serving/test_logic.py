"""Request logic without HTTP: validation and status mapping, scoring, not-found entries, batching, store
down and recovery, hot reload through the ModelRegistry."""

from __future__ import annotations

import time

import numpy as np
import pytest

from serving.config import load_serving_config
from serving.errors import InvalidRequest, PayloadTooLarge, StoreUnavailable, Unauthorized, check_api_key
from serving.predictor import Predictor
from serving.registry import ModelRegistry
from serving.requests import PredictFeaturesRequest, PredictRequest, parse_request
from tests.serving.conftest import CHURN_FEATURES, table_fetcher


@pytest.fixture(scope="module")
def config():
    return load_serving_config()


def make_predictor(config, loaded_models, fetcher):
    registry = ModelRegistry(["churn", "conversion"], loader=lambda name, alias: loaded_models[name])
    registry.load()
    return Predictor(config, registry, fetcher)


@pytest.fixture
def predictor(config, loaded_models, customers):
    return make_predictor(config, loaded_models, table_fetcher(customers))


def test_config_validates_and_names_bad_keys(tmp_path):
    from core.errors import ConfigError

    bad = tmp_path / "serving.yaml"
    bad.write_text("bands: {churn: {high: 0.6, medium: 0.3}}\n")  # bands live in the model specs now
    with pytest.raises(ConfigError, match="bands"):
        load_serving_config(bad)
    bad.write_text("max_batch: 3\n")
    with pytest.raises(ConfigError, match="max_batch"):
        load_serving_config(bad)


def test_api_key_from_config_or_environment(config, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEY", "from-env")
    assert config.resolved_api_key() == "from-env"
    assert config.model_copy(update={"api_key": "from-config"}).resolved_api_key() == "from-config"
    check_api_key("from-env", "from-env")
    for given, expected, match in [(None, "k", "missing"), ("x", "k", "wrong"), ("k", None, "no API key")]:
        with pytest.raises(Unauthorized, match=match) as err:
            check_api_key(given, expected)
        assert err.value.status == 401


def test_parse_request_statuses(config):
    served = ["churn", "conversion"]
    req = parse_request({"customer_ids": ["c1"], "top_k": 2, "lang": "zh"}, PredictRequest, config, served)
    assert req.customer_ids == ["c1"] and req.top_k == 2
    with pytest.raises(PayloadTooLarge) as err:
        parse_request({"customer_ids": ["c"] * (config.max_batch_size + 1)}, PredictRequest, config, served)
    assert err.value.status == 413 and err.value.field == "customer_ids"
    cases = [
        ({"customer_ids": "c1"}, "customer_ids"),
        ({"customer_ids": []}, "customer_ids"),
        ({"customer_ids": ["c1"], "top_k": -1}, "top_k"),
        ({"customer_ids": ["c1"], "lang": "fr"}, "lang"),
        ({"customer_ids": ["c1"], "colour": 1}, "colour"),
        ({"customer_ids": ["c1"], "models": ["fraud"]}, "models.0"),
        ({}, "customer_ids"),
        ([], "(body)"),
    ]
    for body, field in cases:
        with pytest.raises(InvalidRequest) as err:
            parse_request(body, PredictRequest, config, served)
        assert err.value.status == 422 and err.value.field == field, body
        assert field in str(err.value)


def test_predict_scores_both_models_with_reasons(predictor, loaded_models, customers):
    answer = predictor.predict(PredictRequest(customer_ids=["c0001", "c0002"], top_k=3))
    assert answer["model_versions"] == {"churn": "1", "conversion": "1"}
    first = answer["results"][0]
    assert first["customer_id"] == "c0001" and first["found"] is True
    assert first["rfm_segment"] == customers.loc[1, "rfm_segment"]
    X = customers.loc[[1], CHURN_FEATURES].to_numpy(np.float64)
    assert first["churn"]["probability"] == pytest.approx(loaded_models["churn"].predict_proba(X)[0])
    assert first["churn"]["band"] in {"high", "medium", "low"}
    assert 1 <= len(first["churn"]["reasons"]) <= 3
    assert set(first["churn"]["reasons"][0]) == {"feature", "value", "contribution", "direction", "sentence", "cause",
                                                 "headline", "evidence", "rose"}
    assert first["conversion"]["model_version"] == "1"


def test_unknown_customer_is_a_not_found_entry(predictor):
    answer = predictor.predict(PredictRequest(customer_ids=["nobody", "c0003"], models=["churn"]))
    missing, known = answer["results"]
    assert missing == {"customer_id": "nobody", "found": False, "error": "customer not found in the online store"}
    assert known["found"] and "churn" in known and "conversion" not in known


def test_batched_requests_share_one_lookup_and_match_single_answers(config, loaded_models, customers):
    calls: list = []
    predictor = make_predictor(config, loaded_models, table_fetcher(customers, calls))
    requests = [
        PredictRequest(customer_ids=["c0001"]),
        PredictRequest(customer_ids=["c0002", "c0001"], lang="zh", top_k=1, models=["conversion"]),
    ]
    batched = predictor.predict_many(requests)
    assert len(calls) == 2  # one look-up per feature service for the whole batch
    assert sorted(len(ids) for ids, _ in calls) == [2, 2]
    singles = [predictor.predict(r) for r in requests]
    assert batched == singles
    assert len(batched[1]["results"][0]["conversion"]["reasons"]) == 1


def test_store_down_is_503_and_recovers(config, loaded_models, customers):
    OnlineStoreUnavailable = pytest.importorskip("features.store").OnlineStoreUnavailable

    healthy = table_fetcher(customers)
    state = {"down": True}

    def flaky(ids, service):
        if state["down"]:
            raise OnlineStoreUnavailable("sqlite: unable to open database file")
        return healthy(ids, service)

    predictor = make_predictor(config, loaded_models, flaky)
    with pytest.raises(StoreUnavailable) as err:
        predictor.predict(PredictRequest(customer_ids=["c0001"]))
    assert err.value.status == 503 and "online feature store unavailable" in str(err.value)
    assert predictor.readiness()[0] is False
    state["down"] = False
    assert predictor.predict(PredictRequest(customer_ids=["c0001"]))["results"][0]["found"]
    ready, body = predictor.readiness()
    assert ready and body["models"] == {"churn": "1", "conversion": "1"} and body["online_store"] == "ok"


def test_predict_features_validates_and_matches_predict(predictor, loaded_models, customers):
    row = customers.loc[5, CHURN_FEATURES].to_dict()
    answer = predictor.predict_features(PredictFeaturesRequest(rows=[{**row, "customer_id": "c0005"}], models=["churn"]))
    via_store = predictor.predict(PredictRequest(customer_ids=["c0005"], models=["churn"]))
    assert answer["results"][0]["churn"]["probability"] == pytest.approx(via_store["results"][0]["churn"]["probability"])
    assert answer["results"][0]["churn"]["reasons"] == via_store["results"][0]["churn"]["reasons"]
    for rows, field in [
        ([{**row, "shoe_size": 3}], "rows.0.shoe_size"),
        ([{k: v for k, v in row.items() if k != "orders_30d"}], "rows.0.orders_30d"),
        ([{**row, "orders_30d": "many"}], "rows.0.orders_30d"),
    ]:
        with pytest.raises(InvalidRequest) as err:
            predictor.predict_features(PredictFeaturesRequest(rows=rows, models=["churn"]))
        assert err.value.field == field


def test_registry_swaps_the_whole_set_when_alias_moves(registered_champions, boosters):
    from training.champion import Calibration, register_booster

    registry = ModelRegistry(["churn", "conversion"])
    before = registry.load()
    assert before.versions() == registered_champions
    assert registry.refresh() is False
    new = register_booster(boosters["churn"], "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1",
                           calibration=Calibration(0.5, 0.0), alias="champion")
    assert registry.refresh() is True
    after = registry.current
    assert after.versions()["churn"] == new != before.versions()["churn"]
    assert after.models["conversion"] is before.models["conversion"]  # untouched model not reloaded
    assert before.versions()["churn"] == registered_champions["churn"]  # old snapshot intact for in-flight requests


def test_recent_flagged_keeps_high_band_only(predictor, customers):
    ids = customers["customer_id"].head(60).tolist()
    answer = predictor.predict(PredictRequest(customer_ids=ids))
    flagged = predictor.recent.list()
    expected = [r for r in answer["results"] if "high" in (r["churn"]["band"], r["conversion"]["band"])]
    assert len(flagged) == len(expected) > 0


def test_one_failing_request_does_not_fail_its_batch():
    """Before: an exception scoring the batch answered every request of it with that exception (500s)."""
    import asyncio

    from serving.service import MicroBatcher

    class Flaky:
        def __init__(self):
            self.calls: list[list[str]] = []

        def predict_many(self, requests):
            ids = [cid for r in requests for cid in r.customer_ids]
            self.calls.append(ids)
            if "poison" in ids:
                raise UnicodeEncodeError("utf-8", "poison", 0, 1, "surrogates not allowed")
            return [{"results": list(r.customer_ids)} for r in requests]

    async def main(batcher):
        ids = ["a", "b", "poison", "c", "d"]
        return await asyncio.gather(*(batcher.submit(PredictRequest(customer_ids=[i])) for i in ids),
                                    return_exceptions=True)

    predictor = Flaky()
    answers = asyncio.run(main(MicroBatcher(predictor, max_customers=100)))
    assert [a if isinstance(a, dict) else type(a).__name__ for a in answers] == [
        {"results": ["a"]}, {"results": ["b"]}, "UnicodeEncodeError", {"results": ["c"]}, {"results": ["d"]}]
    assert any(len(call) > 1 for call in predictor.calls)  # they were batched, then answered alone


def test_store_down_fails_the_whole_batch_once():
    """A store outage is the same for every request: answered 503 for all, without one retry each."""
    import asyncio

    from serving.service import MicroBatcher

    calls = []

    class Down:
        def predict_many(self, requests):
            calls.append(len(requests))
            raise StoreUnavailable("online feature store unavailable; retry shortly")

    async def main():
        batcher = MicroBatcher(Down(), max_customers=100)
        return await asyncio.gather(*(batcher.submit(PredictRequest(customer_ids=[f"c{i}"])) for i in range(4)),
                                    return_exceptions=True)

    answers = asyncio.run(main())
    assert all(isinstance(a, StoreUnavailable) for a in answers)
    assert sum(calls) == 4 and len(calls) <= 2  # the first request alone, then the rest as one batch


def test_forgotten_customers_leave_the_recent_list(predictor, customers, project_home):
    from serving.privacy import ForgottenIds, id_hash, record_forgotten

    ids = customers["customer_id"].head(80).tolist()
    predictor.predict(PredictRequest(customer_ids=ids))
    flagged = [r["customer_id"] for r in predictor.recent.list()]
    assert len(flagged) >= 2
    watcher = ForgottenIds()
    assert watcher.refresh() is False  # no file yet: nothing forgotten
    record_forgotten([flagged[0], "never-seen"])
    assert watcher.refresh() is True and id_hash(flagged[0]) in watcher.hashes
    assert watcher.refresh() is False  # unchanged file: not re-read
    predictor.recent.forget(watcher.hashes)
    assert [r["customer_id"] for r in predictor.recent.list()] == flagged[1:]
    predictor.predict(PredictRequest(customer_ids=[flagged[0]]))
    assert flagged[0] not in [r["customer_id"] for r in predictor.recent.list()]
    assert flagged[0] not in watcher.path.read_text()


def _tracking(monkeypatch, db):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")


def test_corrupt_registry_db_is_one_line_naming_the_file(project_home, monkeypatch, tmp_path):
    """Before: a multi-line SQLAlchemy error (SQL text, sqlalche.me link) after several seconds."""
    from core.specs import model_names
    from serving.config import served_models

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"\x00garbage" * 4096)
    _tracking(monkeypatch, db)
    start = time.monotonic()
    assert served_models(load_serving_config()) == model_names()  # every spec; the poller retries
    registry = ModelRegistry(["churn", "conversion"])
    assert registry.refresh() is False
    assert time.monotonic() - start < 3
    assert "\n" not in registry.last_error and str(db) in registry.last_error
    assert "not a database" in registry.last_error


def test_locked_registry_db_is_one_line_and_fast(registered_champions, monkeypatch):
    import sqlite3

    from core.settings import project_paths

    db = project_paths().mlruns / "mlflow.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        registry = ModelRegistry(["churn", "conversion"])
        start = time.monotonic()
        assert registry.refresh() is False
        assert time.monotonic() - start < 5
        assert "\n" not in registry.last_error and str(db) in registry.last_error and "locked" in registry.last_error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert registry.refresh() is True and registry.current.versions() == registered_champions


def test_predict_features_row_may_carry_every_served_models_features(predictor, customers):
    """One row shape (all features of the served models) fits any choice of `models`: the features of a
    model not asked for are ignored; labels must be strings."""
    from tests.serving.conftest import CONVERSION_FEATURES

    row = {f: (None if v != v else v) for f, v in customers.loc[7, CHURN_FEATURES + CONVERSION_FEATURES].items()}
    answer = predictor.predict_features(PredictFeaturesRequest(rows=[row], models=["churn"]))
    assert answer["results"][0]["customer_id"] == "row-0" and "conversion" not in answer["results"][0]
    with pytest.raises(InvalidRequest) as err:
        predictor.predict_features(PredictFeaturesRequest(rows=[{**row, "lifecycle_stage": 3}], models=["churn"]))
    assert err.value.field == "rows.0.lifecycle_stage"
