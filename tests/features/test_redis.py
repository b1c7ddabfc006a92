"""The Redis online store against a real redis-server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pandas as pd
import pytest

from features.build import build_features
from features.catalog import DERIVED_NUMERIC, service_raw_features
from features.online_store import OnlineStoreUnavailable
from features.retrieval import historical_features, online_features
from features.settings import FeaturesConfig, SnapshotConfig
from features.store import apply, feature_store, materialize
from tests.features.conftest import END
from tests.features.test_retrieval import assert_frames_match

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, tmp_path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def redis_url(tmp_path, monkeypatch):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (.ci/run installs it)")
    port = _free_port()
    proc = _start(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("PROPENSITY_REDIS_URL", url)
    yield url, port, tmp_path
    proc.kill()
    proc.wait()


def test_redis_online_store_matches_offline_and_feast(random_store, redis_url):
    _url, port, tmp_path = redis_url
    build_features(END.date(), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=7)))
    apply()
    summary = materialize()
    assert summary.online_store == "redis" and summary.customers == 40
    ids = ["c000", "c004", "nobody", "c030"]
    online = online_features(ids, "churn_v1", as_of=END)
    assert online["found"].tolist() == [True, True, False, True]
    offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": END}), "churn_v1")
    assert_frames_match(online, offline, [*service_raw_features("churn_v1"), *DERIVED_NUMERIC])
    # Without as_of the day counts are those of the snapshot Redis holds, not of today.
    assert (online_features(ids, "churn_v1")["as_of"] == END.timestamp()).all()
    store = feature_store()
    feast_df = store.get_online_features(
        features=store.get_feature_service("churn_v1"), entity_rows=[{"customer_id": c} for c in ids]
    ).to_df()
    assert_frames_match(feast_df, online, service_raw_features("churn_v1"))


def test_redis_down_raises_and_recovers(random_store, redis_url):
    _url, port, tmp_path = redis_url
    build_features(END.date(), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=7)))
    apply()
    materialize()
    assert online_features(["c000"], "churn_v1")["found"].item()
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True)
    time.sleep(0.2)
    with pytest.raises(OnlineStoreUnavailable, match="unreachable"):
        online_features(["c000"], "churn_v1")
    proc = _start(port, tmp_path)  # empty again: materialize reloads it
    try:
        materialize()
        assert online_features(["c000"], "churn_v1")["found"].item()
    finally:
        proc.kill()
        proc.wait()


def test_forget_removes_the_customer_from_redis(random_store, redis_url):
    """`propensity forget` deletes the customer's hash from a Redis online store; others stay."""
    from pipelines.forget import forget

    build_features(END.date(), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=7)))
    apply()
    materialize()
    assert online_features(["c000", "c004"], "churn_v1", as_of=END)["found"].tolist() == [True, True]
    report = forget(["c000"], check_tracking=False)
    assert report.removed["online store (redis)"] == 1
    assert online_features(["c000", "c004"], "churn_v1", as_of=END)["found"].tolist() == [False, True]
