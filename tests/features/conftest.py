"""Fixtures of the feature-store tests: tiny event stores built with the real EventStore."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.events import EventStore

END = pd.Timestamp("2026-03-01", tz="UTC")  # the build's --until in most tests


def _ts(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True).astype("datetime64[us, UTC]")


def random_events(n_customers: int = 40, days: int = 200, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Small random event tables with every family, ending just before END."""
    rng = np.random.default_rng(seed)
    start = END - pd.Timedelta(days=days)
    ids = [f"c{i:03d}" for i in range(n_customers)]
    signup = start + pd.to_timedelta(rng.integers(0, days // 2, n_customers), unit="D")
    customers = pd.DataFrame({"customer_id": ids, "signup_at": _ts(signup)})

    def times(n: int, owners: np.ndarray) -> pd.Series:
        base = signup[owners]
        span = (END - base).total_seconds().to_numpy()
        offset = rng.random(n) * span
        return _ts(base + pd.to_timedelta(offset, unit="s"))

    n_orders = 400
    owners = rng.integers(0, n_customers, n_orders)
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n_orders)],
            "customer_id": [ids[i] for i in owners],
            "ordered_at": times(n_orders, owners),
            "amount": rng.gamma(2.0, 30.0, n_orders).round(2),
        }
    )
    n_sessions = 500
    s_owner = rng.integers(0, n_customers, n_sessions)
    s_start = times(n_sessions, s_owner)
    rows = []
    for s in range(n_sessions):
        depth = int(rng.integers(1, 8))
        for k in range(depth):
            rows.append(
                (
                    ids[s_owner[s]],
                    f"s{s}",
                    s_start[s] + pd.Timedelta(minutes=3 * k),
                    rng.choice(["home", "category", "product", "cart", "checkout", "help"]),
                )
            )
    page_views = pd.DataFrame(rows, columns=["customer_id", "session_id", "viewed_at", "page_type"])
    page_views = page_views[page_views["viewed_at"] < END].reset_index(drop=True)
    page_views["viewed_at"] = _ts(page_views["viewed_at"])
    page_views["product_id"] = None
    n_c = 60
    c_owner = rng.integers(0, n_customers, n_c)
    opened = times(n_c, c_owner)
    resolved = opened + pd.to_timedelta(rng.random(n_c) * 20, unit="D")
    resolved = resolved.where(rng.random(n_c) < 0.8)  # some stay open
    complaints = pd.DataFrame(
        {
            "complaint_id": [f"k{i}" for i in range(n_c)],
            "customer_id": [ids[i] for i in c_owner],
            "opened_at": opened,
            "channel": "email",
            "category": "delivery",
            "severity": rng.integers(1, 4, n_c).astype("int64"),
            "resolved_at": _ts(resolved),
        }
    )
    return {"customers": customers, "orders": orders, "page_views": page_views, "complaints": complaints}


def write_store(home, tables: dict[str, pd.DataFrame]) -> EventStore:
    store = EventStore(home / "data" / "events")
    families = {t: ("present" if t in tables else "absent") for t in ("customers", "orders", "page_views", "complaints")}
    store.replace_months(tables, manifest={"families": families, "ingested": []})
    return store


@pytest.fixture
def random_store(project_home):
    tables = random_events()
    write_store(project_home, tables)
    return tables


# The point-in-time edge rows both offline-store tests ask for, after the random ones (positions n..n+6).
EDGE_ROWS = 7


def point_in_time_rows(dates: list[pd.Timestamp], ttl: pd.Timedelta, n: int, seed: int) -> pd.DataFrame:
    """Entity rows for a store comparison: ``n`` random (customer, time) rows from two days before the first
    snapshot to three days past the last one's TTL (44 ids for the 40 customers: some unknown), then the
    edges: at the TTL edge twice (kept), one second past it (nulls), on two snapshot dates, before the
    first snapshot, and the last second before the second snapshot. ``label`` numbers the rows."""
    day, second = pd.Timedelta(days=1), pd.Timedelta(seconds=1)
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in rng.integers(0, 44, n)]
    span = (dates[-1] + ttl + 3 * day - (dates[0] - 2 * day)).total_seconds()
    times = [dates[0] - 2 * day + pd.Timedelta(seconds=int(s)) for s in rng.integers(0, span, n)]
    edge = [
        ("c001", dates[-1] + ttl), ("c001", dates[-1] + ttl),
        ("c002", dates[-1] + ttl + second),
        ("c003", dates[1]), ("c004", dates[0]),
        ("c005", dates[0] - second),
        ("c006", dates[1] - second),
    ]
    assert len(edge) == EDGE_ROWS
    return pd.DataFrame({
        "customer_id": ids + [c for c, _ in edge],
        "event_timestamp": pd.to_datetime(times + [t for _, t in edge], utc=True).astype("datetime64[us, UTC]"),
        "label": np.arange(n + len(edge)),
    })
