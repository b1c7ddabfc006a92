"""The bulk online store: Feast's byte patterns, Feast writing into it, file swaps and chunked reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.settings import project_paths
from features import online
from features.build import build_features, snapshot_file
from features.catalog import FLOAT, INT, service_raw_features
from features.retrieval import online_feature_columns, online_features
from features.settings import FeaturesConfig, SnapshotConfig
from features.store import apply, feature_store, materialize, resolve_target, value_blobs
from tests.features.conftest import END, random_events, write_store

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
        np.testing.assert_array_equal(online.decode_values(blobs.tolist()), values)
    assert np.isnan(online.decode_values([b"", None])).all()


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
    row = pd.read_parquet(snapshot_file(project_paths().feature_sources, "customer_frequency", END.date()))
    row = row[row.customer_id == "c001"]
    store.write_to_online_store("customer_frequency", row.assign(orders_7d=1234))
    after = online_features(["c001"], "churn_v1", as_of=END)
    assert after["orders_7d"].item() == 1234
    assert after["orders_30d"].item() == before["orders_30d"].item()


def test_a_serving_reader_sees_the_file_a_later_materialize_swapped_in(served, project_home):
    reader = online.reader(resolve_target())  # a serving process keeps its reader across materializes
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
    monkeypatch.setattr(online, "_MAX_PER_QUERY", 3)
    chunked = online_features(ids, "churn_v1", as_of=END)
    pd.testing.assert_frame_equal(whole, chunked)
    assert whole["found"].tolist() == [True, False, True, True, True, False, True, True]
    columns = online_feature_columns(ids, "churn_v1", as_of=END)
    assert list(columns) == list(whole.columns)
    for name in service_raw_features("churn_v1"):
        np.testing.assert_array_equal(columns[name], whole[name].to_numpy(), err_msg=name)
