"""The online store interface: Feast's byte patterns, the bulk SQLite store (Feast writing into it,
file swaps, chunked reads, deletes), and a store registered by a test being used end to end."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest
import yaml

from core.errors import ConfigError
from core.settings import REPO_ROOT, project_paths
from features import online_store
from features.build import build_features, read_snapshot
from features.catalog import DERIVED_NUMERIC, FLOAT, INT, JOIN_KEY, VIEWS, service_raw_features
from features.online_store import OnlineStore, StoreTarget, open_store, resolve_target
from features.online_store import sqlite as sqlite_store
from features.online_store.encoding import decode_values, value_blobs
from features.retrieval import historical_features, online_feature_columns, online_features
from features.settings import FeaturesConfig, OnlineStoreConfig, SnapshotConfig
from features.store import apply, feature_store, materialize
from tests.features.conftest import END, random_events, write_store
from tests.features.test_retrieval import assert_frames_match

SHORT = FeaturesConfig(snapshots=SnapshotConfig(history_days=7))


def test_vectorised_values_are_the_bytes_of_feasts_own_proto():
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    rng = np.random.default_rng(1)
    ints = np.concatenate(
        [[0, 1, 127, 128, 16_383, 16_384, -1, -(2**62), 2**52, 1_793_000_000, np.nan], rng.integers(-(2**40), 2**40, 500)]
    ).astype("float64")
    doubles = np.concatenate([[0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 5e-324], rng.normal(0, 1e6, 500)])
    for values, kind, make in ((ints, INT, lambda v: ValueProto(int64_val=int(v))),
                               (doubles, FLOAT, lambda v: ValueProto(double_val=float(v)))):
        blobs = value_blobs(values, kind)
        expected = [b"" if np.isnan(v) else make(v).SerializeToString() for v in values]
        assert blobs.tolist() == expected, kind
        # ...and the reader's vectorised decoder turns them back into the numbers.
        np.testing.assert_array_equal(decode_values(blobs.tolist()), values)
    assert np.isnan(decode_values([b"", None])).all()


@pytest.fixture
def served(project_home):
    tables = random_events()
    write_store(project_home, tables)
    build_features(END.date(), config=SHORT)
    apply()
    materialize()
    return tables


def test_feast_upserts_into_the_bulk_written_store(served):
    # The bulk file must stay a working Feast store: Feast's own write path updates a row in place.
    before = online_features(["c001"], "churn_v1", as_of=END)
    assert before["found"].item() and before["orders_7d"].item() != 1234
    store = feature_store()
    row = read_snapshot(project_paths().feature_sources, END.date(), "customer_frequency")
    row = row[row.customer_id == "c001"]
    store.write_to_online_store("customer_frequency", row.assign(orders_7d=1234))
    after = online_features(["c001"], "churn_v1", as_of=END)
    assert after["orders_7d"].item() == 1234
    assert after["orders_30d"].item() == before["orders_30d"].item()


def test_a_serving_reader_sees_the_file_a_later_materialize_swapped_in(served, project_home):
    reader = open_store(resolve_target())  # a serving process keeps its reader across materializes
    views = ("customer_frequency",)
    before, _ = reader.read(["c000"], views)
    late = pd.DataFrame(
        {"order_id": ["late"], "customer_id": ["c000"], "ordered_at": [END - pd.Timedelta(hours=2)], "amount": [1.0]}
    ).astype({"ordered_at": "datetime64[us, UTC]"})
    orders = served["orders"]
    month = orders[orders.ordered_at.dt.strftime("%Y-%m") == "2026-02"]
    write_store(project_home, {"orders": pd.concat([month, late], ignore_index=True)})
    build_features(END.date(), config=SHORT)
    materialize()
    after, found = reader.read(["c000"], views)
    assert found.all() and after["orders_7d"][0] == before["orders_7d"][0] + 1


def test_reads_in_chunks_match_one_read_and_the_column_arrays_match_the_frame(served, monkeypatch):
    ids = ["c000", "ghost", "c013", "c013", "c039", "nobody", "c020", "c002"]
    whole = online_features(ids, "churn_v1", as_of=END)
    monkeypatch.setattr(sqlite_store, "_MAX_PER_QUERY", 3)
    chunked = online_features(ids, "churn_v1", as_of=END)
    pd.testing.assert_frame_equal(whole, chunked)
    assert whole["found"].tolist() == [True, False, True, True, True, False, True, True]
    columns = online_feature_columns(ids, "churn_v1", as_of=END)
    assert list(columns) == list(whole.columns)
    for name in service_raw_features("churn_v1"):
        np.testing.assert_array_equal(columns[name], whole[name].to_numpy(), err_msg=name)


def test_sqlite_delete_removes_the_customer_for_us_and_for_feast(served):
    store = open_store()
    assert store.delete(["c000", "ghost", "c000"]) == {"c000": len(VIEWS)}  # one record per view table
    _, found = store.read(["c000", "c001"], tuple(VIEWS))
    assert found.tolist() == [False, True]
    fs = feature_store()
    feast_df = fs.get_online_features(
        features=fs.get_feature_service("churn_v1"), entity_rows=[{"customer_id": "c000"}]
    ).to_df()
    assert feast_df[service_raw_features("churn_v1")].isna().all(axis=None)
    assert store.delete(["c000"]) == {}


def test_an_unknown_store_kind_is_a_config_error_naming_the_field(project_home):
    with pytest.raises(ConfigError, match=r"features.yaml: online_store.type 'cassandra'.*known: redis, sqlite"):
        resolve_target(FeaturesConfig(online_store=OnlineStoreConfig(type="cassandra")))


class MemoryStore(OnlineStore):
    """A store the project does not ship: a dict per customer, to prove the extension point."""

    kind = "memory"

    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target)
        self.rows: dict[str, dict[str, float]] = {}

    def feast_config(self) -> dict:
        # Feast has no in-memory store; its apply creates tables in a scratch file nothing reads.
        return {"type": "sqlite", "path": str(self.target.path.with_name("feast_scratch.db"))}

    def write(self, tables: Mapping) -> int:
        rows: dict[str, dict[str, float]] = {}
        values = 0
        for view, table in tables.items():
            ids = table.column(JOIN_KEY).to_pylist()
            for name in VIEWS[view].names:
                column = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
                for cid, value in zip(ids, column, strict=True):
                    rows.setdefault(cid, {})[name] = value
                values += len(ids)
        self.rows = rows
        return values

    def read(self, customer_ids: Sequence[str], views: Sequence[str]):
        names = [f for v in views for f in VIEWS[v].names]
        held = [self.rows.get(c) for c in customer_ids]
        columns = {n: np.array([r[n] if r else np.nan for r in held], dtype="float64") for n in names}
        return columns, np.array([r is not None for r in held], dtype=bool)

    def delete(self, customer_ids: Iterable[str]) -> dict[str, int]:
        return {c: 1 for c in dict.fromkeys(customer_ids) if self.rows.pop(c, None) is not None}


@pytest.fixture
def memory_configured(random_store, tmp_path, monkeypatch):
    """MemoryStore registered (the one line a new store adds) and chosen in configs/features.yaml."""
    monkeypatch.setitem(online_store.STORES, "memory", MemoryStore)
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    raw = yaml.safe_load((configs / "features.yaml").read_text())
    raw["online_store"] = {"type": "memory"}
    (configs / "features.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PROPENSITY_CONFIGS", str(configs))
    yield
    online_store.close_stores()


def test_a_registered_store_is_chosen_by_config_and_used_by_materialize_read_and_forget(memory_configured):
    from pipelines.forget import forget

    build_features(END.date(), config=SHORT)
    summary = materialize()
    store = open_store()
    assert isinstance(store, MemoryStore) and summary.online_store == "memory"
    assert summary.customers == 40 and summary.values == 40 * sum(len(v.features) for v in VIEWS.values())
    assert len(store.rows) == 40 and not project_paths().online_store.exists()  # SQLite never written

    ids = ["c000", "c004", "nobody", "c030"]
    online = online_features(ids, "churn_v1", as_of=END)
    assert online["found"].tolist() == [True, True, False, True]
    offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": END}), "churn_v1")
    assert_frames_match(online, offline, [*service_raw_features("churn_v1"), *DERIVED_NUMERIC])

    report = forget(["c000"], check_tracking=False)
    assert report.removed["online store (memory)"] == 1
    assert online_features(["c000", "c004"], "churn_v1", as_of=END)["found"].tolist() == [False, True]
