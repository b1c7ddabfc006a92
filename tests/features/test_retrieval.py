"""Point-in-time training sets, online reads, and that both agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import PropensityError
from core.settings import project_paths
from features.build import build_features
from features.catalog import DERIVED_NUMERIC, DERIVED_STRING, service_raw_features
from features.retrieval import historical_features, model_feature_names, online_features
from features.settings import FeaturesConfig, SnapshotConfig
from features.store import OnlineStoreUnavailable, apply, feature_store, materialize
from tests.features.conftest import END, random_events, write_store
from tests.features.reference import reference_features

SHORT = FeaturesConfig(snapshots=SnapshotConfig(history_days=21))
DAY = pd.Timedelta(days=1)


@pytest.fixture
def served(random_store):
    """Random store built, applied and materialized."""
    build_features(END.date(), config=SHORT)
    apply()
    materialize()
    return random_store


def assert_frames_match(left: pd.DataFrame, right: pd.DataFrame, columns) -> None:
    for col in columns:
        if col in DERIVED_STRING:
            assert left[col].tolist() == right[col].tolist(), col
        else:
            np.testing.assert_allclose(
                left[col].to_numpy(float), right[col].to_numpy(float), equal_nan=True, err_msg=col
            )


def test_historical_keeps_every_row_in_order_with_nulls_before_the_first_snapshot(served):
    ids = ["c005", "nobody", "c001", "c005", "c003"]
    times = [END, END, END - 200 * DAY, END - 3 * DAY, END - 10 * DAY]  # c001 row precedes any snapshot
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": times, "label": [1, 0, 1, 0, 1]})
    result = historical_features(entity, "churn_v1")
    assert len(result) == len(entity)
    assert result["customer_id"].tolist() == ids and result["label"].tolist() == [1, 0, 1, 0, 1]
    assert result.loc[1, service_raw_features("churn_v1")].isna().all()  # unknown customer
    assert result.loc[2, service_raw_features("churn_v1")].isna().all()  # before its first feature row
    assert result.loc[0, "orders_365d"] >= 0 and not np.isnan(result.loc[3, "orders_365d"])
    assert set(model_feature_names("churn_v1")) <= set(result.columns)


def test_day_counts_are_exact_for_the_date_asked_for(served):
    # Three days after the latest snapshot (END): the counts come from that snapshot, the day counts
    # from the asked date (a stale snapshot must not make the customer look more recent).
    snapshot = END
    asked = snapshot + 3 * DAY + pd.Timedelta(hours=5)
    expected = reference_features(served, snapshot)
    entity = pd.DataFrame({"customer_id": expected.index[:10], "event_timestamp": asked})
    result = historical_features(entity, "churn_v1").set_index("customer_id")
    exp = expected.loc[result.index]
    want = np.floor((asked.timestamp() - exp["last_order_at"]) / 86400)
    np.testing.assert_allclose(result["days_since_last_order"], want, equal_nan=True)
    np.testing.assert_allclose(result["orders_30d"], exp["orders_30d"])
    tenure = np.floor((asked.timestamp() - exp["signup_at"]) / 86400)
    np.testing.assert_allclose(result["tenure_days"], tenure)


def test_an_event_after_the_cutoff_never_changes_a_feature(project_home):
    tables = random_events()
    cutoff = END - 4 * DAY + pd.Timedelta(hours=7)
    entity = pd.DataFrame({"customer_id": ["c000", "c001", "c002"], "event_timestamp": cutoff})

    def features_with(extra_orders: pd.DataFrame, extra_views: pd.DataFrame) -> pd.DataFrame:
        t = dict(tables)
        t["orders"] = pd.concat([tables["orders"], extra_orders], ignore_index=True)
        t["page_views"] = pd.concat([tables["page_views"], extra_views], ignore_index=True)
        write_store(project_home, t)
        build_features(END.date(), config=SHORT)
        apply()
        return historical_features(entity, "churn_v1")

    base = features_with(tables["orders"].iloc[:0], tables["page_views"].iloc[:0])
    # Events right after the cutoff (same day, and the day after): an order and a cart session.
    after = [cutoff + pd.Timedelta(minutes=1), cutoff + DAY]
    orders = pd.DataFrame(
        {"order_id": ["x1", "x2"], "customer_id": ["c000", "c001"], "ordered_at": after, "amount": [999.0, 5.0]}
    )
    views = pd.DataFrame(
        {"customer_id": ["c002"] * 2, "session_id": ["late"] * 2, "viewed_at": after,
         "page_type": ["cart", "cart"], "product_id": [None, None]}
    )
    leaked = features_with(orders, views)
    cols = [*service_raw_features("churn_v1"), *DERIVED_NUMERIC, *DERIVED_STRING]
    assert_frames_match(base, leaked, cols)
    # ...while a snapshot after those events does see them (the events are not simply ignored).
    later = historical_features(entity.assign(event_timestamp=END), "churn_v1")
    assert later.loc[0, "spend_7d"] >= 999.0


def test_online_equals_offline_for_the_same_customer_and_date(served):
    ids = ["c003", "c010", "c000", "ghost", "c021"]
    online = online_features(ids, "churn_v1", as_of=END)
    offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": END}), "churn_v1")
    assert online["customer_id"].tolist() == ids
    assert online["found"].tolist() == [True, True, True, False, True]
    assert_frames_match(online, offline, [*service_raw_features("churn_v1"), *DERIVED_NUMERIC, *DERIVED_STRING])
    conv = online_features(ids, "conversion_v1", as_of=END)
    assert "complaints_30d" not in conv.columns and conv["sessions_30d"].notna().sum() == 4


def test_online_day_counts_default_to_the_snapshot_date_not_the_wall_clock(served):
    """The data's own clock: without as_of, day counts are those of the snapshot the store holds (a
    log from another year must not say "no order for 10,000 days")."""
    ids = ["c003", "c010"]
    implicit = online_features(ids, "churn_v1")
    assert (implicit["as_of"] == END.timestamp()).all()
    explicit = online_features(ids, "churn_v1", as_of=END)
    assert_frames_match(implicit, explicit, [*DERIVED_NUMERIC, *DERIVED_STRING])


def test_feast_reads_back_what_the_bulk_materialize_wrote(served):
    ids = ["c000", "c007", "c019"]
    store = feature_store()
    feast_df = store.get_online_features(
        features=store.get_feature_service("churn_v1"), entity_rows=[{"customer_id": c} for c in ids]
    ).to_df()
    ours = online_features(ids, "churn_v1", as_of=END)
    assert_frames_match(feast_df, ours, service_raw_features("churn_v1"))
    assert feast_df["orders_365d"].notna().all()


def test_missing_sqlite_store_raises_and_recovers(served):
    assert online_features(["c000"], "churn_v1")["found"].item()
    project_paths().online_store.unlink()
    with pytest.raises(OnlineStoreUnavailable, match="online_store.db"):
        online_features(["c000"], "churn_v1")
    materialize()
    assert online_features(["c000"], "churn_v1")["found"].item()


def test_unknown_service_and_bad_entity_df_are_clear_errors(served):
    with pytest.raises(PropensityError, match="unknown feature service 'churn_v9'"):
        online_features(["c000"], "churn_v9")
    with pytest.raises(PropensityError, match="event_timestamp"):
        historical_features(pd.DataFrame({"customer_id": ["c000"]}), "churn_v1")
