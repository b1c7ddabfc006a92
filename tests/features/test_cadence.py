"""customer_cadence: a customer's own rhythm (lifetime counts, first order and visit, gaps between orders
and between visit days) and the gap ratios derived from it, on a tiny event log whose answers are worked
out by hand, and against the pandas reference."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from core.settings import project_paths
from features.build import build_features, plan_dates, read_snapshot
from features.catalog import SERVICES, VIEWS, service_raw_features
from features.derived import add_derived
from features.online_store.sqlite import _UNKNOWN_FEATURE
from features.retrieval import historical_features, online_features
from features.settings import FeaturesConfig, SnapshotConfig
from features.store import apply, materialize
from tests.features.conftest import END, write_store
from tests.features.reference import reference_features
from tests.features.test_retrieval import assert_frames_match

SHORT = FeaturesConfig(snapshots=SnapshotConfig(history_days=21))
DATES = plan_dates(END.date(), [], SHORT)  # three weekly grid dates, then END
GRID = [pd.Timestamp(d, tz="UTC") for d in DATES]
G = GRID[1]  # a grid date with snapshots on both sides
H = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
CADENCE = VIEWS["customer_cadence"].names
ORDER_CADENCE = ["lifetime_orders", "first_order_at", "orders_mean_gap_days", "orders_gap_std_days"]
VISIT_CADENCE = ["lifetime_sessions", "first_visit_at", "visit_mean_gap_days"]
SPEND = ["spend_7d", "spend_30d", "spend_90d", "spend_365d", "avg_order_value_365d", "lifetime_spend"]
DERIVED = ["days_since_first_order", "days_since_first_visit", "gap_ratio", "visit_gap_ratio"]
START = G - 40 * DAY + 10 * H  # 10:00, 40 days before G
# Not a whole number of days: equal gaps whose square sums lose digits without the build's shift.
WEEKLY = 7 * DAY + pd.Timedelta(seconds=12_345)


def _utc(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True).astype("datetime64[us, UTC]")


def tiny_log() -> dict[str, pd.DataFrame]:
    """Five customers whose rhythm is easy to check by hand (times relative to the grid date G):

    - ``weekly``: 6 orders exactly a week and 12,345 s apart (amounts 10..60): standard deviation 0;
    - ``irregular``: 4 orders with gaps of 1, 3 and 10.5 days;
    - ``twice``: 2 orders 9 days apart (a mean gap, no standard deviation);
    - ``once``: 1 order, and a session that runs over G's midnight (23:55 to 00:05), then a session 10
      days after its first visit day: counted as 2 sessions on 3 visit days, never as 3 sessions;
    - ``browser``: page views and no order.
    """
    orders = [
        *[("weekly", START + k * WEEKLY, 10.0 * (k + 1)) for k in range(6)],
        ("irregular", START, 5.0), ("irregular", START + DAY, 5.0), ("irregular", START + 4 * DAY, 5.0),
        ("irregular", START + 14.5 * DAY, 5.0),
        ("twice", START + 2 * DAY, 30.0), ("twice", START + 11 * DAY, 70.0),
        ("once", START + 3 * DAY, 12.5),
    ]
    views = [
        ("once", "s1", G - pd.Timedelta(minutes=5), "home"), ("once", "s1", G + pd.Timedelta(minutes=5), "product"),
        ("once", "s2", G + 9 * DAY + 3 * H, "cart"),
        ("browser", "b1", START + 5 * DAY, "home"), ("browser", "b2", START + 5 * DAY + 4 * H, "category"),
        ("browser", "b3", START + 8 * DAY, "product"),
    ]
    return {
        "orders": pd.DataFrame(
            {
                "order_id": [f"o{i}" for i in range(len(orders))],
                "customer_id": [o[0] for o in orders],
                "ordered_at": _utc([o[1] for o in orders]),
                "amount": [o[2] for o in orders],
            }
        ),
        "page_views": pd.DataFrame(
            {
                "customer_id": [v[0] for v in views],
                "session_id": [v[1] for v in views],
                "viewed_at": _utc([v[2] for v in views]),
                "page_type": [v[3] for v in views],
                "product_id": None,
            }
        ),
    }


def snapshot(view: str | None, day: pd.Timestamp) -> pd.DataFrame:
    built = read_snapshot(project_paths().feature_sources, day.date(), view)
    return built.set_index("customer_id").drop(columns="event_timestamp")


def all_views(day: pd.Timestamp) -> pd.DataFrame:
    return snapshot(None, day)


def assert_matches_reference(tables: dict[str, pd.DataFrame], columns: list[str]) -> None:
    for day in GRID:
        built = all_views(day)
        expected = reference_features(tables, day)
        assert list(built.index) == list(expected.index), day
        for col in columns:
            np.testing.assert_allclose(
                built[col].astype(float), expected[col].astype(float), rtol=1e-12, equal_nan=True,
                err_msg=f"{col} at {day.date()}",
            )


def unix(ts: pd.Timestamp) -> int:
    return int(ts.timestamp())


def test_cadence_by_hand_and_against_the_reference(project_home):
    tables = tiny_log()
    write_store(project_home, tables)
    build_features(END.date(), config=SHORT)
    end = snapshot("customer_cadence", END)

    weekly = end.loc["weekly"]
    assert weekly.lifetime_orders == 6 and weekly.lifetime_spend == 210.0
    assert weekly.first_order_at == unix(START)
    assert weekly.orders_mean_gap_days == pytest.approx(WEEKLY / DAY, rel=1e-12)
    assert weekly.orders_gap_std_days == 0.0  # exactly: the per-customer shift keeps every digit

    irregular = end.loc["irregular"]
    assert irregular.orders_mean_gap_days == pytest.approx(14.5 / 3, rel=1e-12)
    assert irregular.orders_gap_std_days == pytest.approx(np.std([1.0, 3.0, 10.5], ddof=1), rel=1e-12)

    assert end.loc["twice", "orders_mean_gap_days"] == 9.0 and np.isnan(end.loc["twice", "orders_gap_std_days"])
    assert end.loc["twice", "lifetime_spend"] == 100.0
    once = end.loc["once"]
    assert once.lifetime_orders == 1 and np.isnan(once.orders_mean_gap_days) and np.isnan(once.orders_gap_std_days)
    browser = end.loc["browser"]
    assert browser.lifetime_orders == 0 and browser.lifetime_spend == 0.0 and np.isnan(browser.first_order_at)
    assert browser.lifetime_sessions == 3 and browser.first_visit_at == unix(START + 5 * DAY)
    assert browser.visit_mean_gap_days == 3.0  # two sessions on one day, one 3 days later: 2 visit days

    # The session over G's midnight: at G it has a view before the snapshot (one session, one visit day);
    # from the next snapshot on it is still one session, on two days.
    at_g = snapshot("customer_cadence", G)
    assert at_g.loc["once", "lifetime_sessions"] == 1 and np.isnan(at_g.loc["once", "visit_mean_gap_days"])
    after_g = snapshot("customer_cadence", GRID[2])
    assert after_g.loc["once", "lifetime_sessions"] == 1 and after_g.loc["once", "visit_mean_gap_days"] == 1.0
    assert once.lifetime_sessions == 2 and once.visit_mean_gap_days == 5.0  # visit days G-1, G, G+9
    assert once.first_visit_at == unix(G - pd.Timedelta(minutes=5))

    assert_matches_reference(tables, CADENCE)


def test_events_after_a_snapshot_never_change_it(project_home):
    tables = tiny_log()
    write_store(project_home, tables)
    build_features(END.date(), config=SHORT)
    before = {day: all_views(day) for day in GRID}

    # Right after G: an order for every customer (one without orders until then) and a new session for
    # ``weekly``, a customer who never visited.
    after = G + pd.Timedelta(seconds=1)
    late_orders = pd.DataFrame(
        {
            "order_id": ["x1", "x2", "x3"],
            "customer_id": ["weekly", "once", "browser"],
            "ordered_at": _utc([after, after + 2 * H, after + DAY]),
            "amount": [999.0, 1.0, 2.0],
        }
    )
    late_views = pd.DataFrame(
        {"customer_id": ["weekly"], "session_id": ["w1"], "viewed_at": _utc([after]), "page_type": ["cart"],
         "product_id": [None]}
    )
    leaked = {
        "orders": pd.concat([tables["orders"], late_orders], ignore_index=True),
        "page_views": pd.concat([tables["page_views"], late_views], ignore_index=True),
    }
    shutil.rmtree(project_paths().feature_sources)
    write_store(project_home, leaked)
    build_features(END.date(), config=SHORT)
    for day in GRID[:2]:  # up to and including G
        pd.testing.assert_frame_equal(all_views(day)[CADENCE], before[day][CADENCE], obj=str(day.date()))
    # ...while the next snapshot sees them.
    later = snapshot("customer_cadence", GRID[2])
    assert later.loc["weekly", "lifetime_orders"] == before[GRID[2]].loc["weekly", "lifetime_orders"] + 1
    assert later.loc["weekly", "lifetime_sessions"] == 1 and later.loc["browser", "lifetime_orders"] == 1
    assert_matches_reference(leaked, CADENCE)


def test_transactions_only_log_without_amounts_gives_null_spend_and_browse_cadence(project_home):
    orders = tiny_log()["orders"].drop(columns="amount")
    write_store(project_home, {"orders": orders})
    build_features(END.date(), config=SHORT)
    built = all_views(END)
    assert built[SPEND].isna().all().all()
    assert built[VISIT_CADENCE].isna().all().all()
    assert (built["lifetime_orders"] > 0).all()
    assert_matches_reference({"orders": orders}, [*ORDER_CADENCE, *SPEND, "orders_30d", "last_order_at"])
    # No monetary score and no segment from it; recency and frequency are still scored.
    derived = add_derived(built, END, FeaturesConfig())
    assert derived["m_score"].isna().all() and derived["rfm_segment"].isna().all()
    assert derived["r_score"].notna().all() and derived["gap_ratio"].notna().any()


def test_an_amount_column_of_nulls_is_no_amount_and_one_missing_amount_nulls_its_windows(project_home):
    # What ingest stores for a file without amounts: the column, all null.
    orders = tiny_log()["orders"].assign(amount=np.nan)
    write_store(project_home, {"orders": orders})
    build_features(END.date(), config=SHORT)
    assert all_views(END)[SPEND].isna().all().all()

    # One order without an amount among priced ones: only the sums that include it are unknown.
    orders = tiny_log()["orders"]
    orders.loc[(orders.customer_id == "twice").idxmax(), "amount"] = np.nan
    shutil.rmtree(project_paths().feature_sources)
    write_store(project_home, {"orders": orders})
    build_features(END.date(), config=SHORT)
    built = all_views(END)
    assert np.isnan(built.loc["twice", "lifetime_spend"]) and built.loc["weekly", "lifetime_spend"] == 210.0
    assert_matches_reference({"orders": orders}, SPEND)


@pytest.fixture
def served(project_home):
    tables = tiny_log()
    write_store(project_home, tables)
    build_features(END.date(), config=SHORT)
    apply()
    materialize()
    return tables


def test_online_equals_offline_and_the_reference(served):
    ids = ["weekly", "irregular", "twice", "once", "browser", "ghost"]
    for service in SERVICES:
        online = online_features(ids, service, as_of=END)
        offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": END}), service)
        assert online["found"].tolist() == [True] * 5 + [False]
        assert_frames_match(online, offline, [*CADENCE, *DERIVED])
    expected = reference_features(served, END)
    for col in CADENCE:
        np.testing.assert_allclose(online[col][:5], expected.loc[ids[:5], col].astype(float), equal_nan=True)


def test_every_service_fits_one_sqlite_online_read():
    # The SQLite reader packs each feature's index into one byte (features.online_store.sqlite).
    for service in SERVICES:
        assert len(service_raw_features(service)) < _UNKNOWN_FEATURE, service


def test_derived_ratios_between_snapshots_are_exact(served):
    # Three days and five hours after a grid snapshot: the stored values are that snapshot's, the day
    # counts those of the date asked for.
    asked = GRID[2] + 3 * DAY + 5 * H
    ids = ["weekly", "irregular", "twice", "once", "browser"]
    result = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": asked}), "churn_v1")
    exp = reference_features(served, GRID[2]).loc[ids]

    def days(col: str) -> pd.Series:
        return np.floor((asked.timestamp() - exp[col].astype(float)) / 86400)

    np.testing.assert_array_equal(result["days_since_first_order"], days("first_order_at"))
    np.testing.assert_array_equal(result["days_since_first_visit"], days("first_visit_at"))
    np.testing.assert_allclose(result["gap_ratio"], days("last_order_at") / exp["orders_mean_gap_days"], rtol=1e-12)
    np.testing.assert_allclose(
        result["visit_gap_ratio"], days("last_visit_at") / exp["visit_mean_gap_days"], rtol=1e-12
    )
    # By hand for ``weekly``: last order at START + 5 gaps, 14 whole days before the date asked for.
    weekly = result.set_index("customer_id").loc["weekly"]
    assert np.floor((asked - (START + 5 * WEEKLY)) / DAY) == 14
    assert weekly.gap_ratio == pytest.approx(14 / (WEEKLY / DAY), rel=1e-12)
    assert result["gap_ratio"].notna().sum() == 3 and result["visit_gap_ratio"].notna().sum() == 2
