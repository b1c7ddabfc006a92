"""Small synthetic event logs with known mechanics, and a feature source that computes a subset of the
contract's features from them with DuckDB (stands in for Feast in training tests).

Mechanics (so model-behaviour tests have something true to find): each customer orders at a personal
base rate; complaints halve the order rate for 90 days and raise the hazard of leaving for good; deep
browsing sessions (cart views) raise the chance of an order in the following days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.events import EventStore

FEATURES = [
    "days_since_last_order", "days_since_last_visit", "orders_30d", "orders_90d", "spend_90d",
    "complaints_90d", "sessions_7d", "page_views_7d", "pages_per_session_7d", "max_session_depth_30d",
    "cart_views_30d",
]
EXTRA = ["r_score", "f_score", "m_score"]


def make_events(store_root, n_customers: int = 600, start: str = "2025-06-01", end: str = "2026-10-31",
                seed: int = 0) -> EventStore:
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, end, freq="D", tz="UTC")
    base = rng.lognormal(np.log(1 / 25), 0.6, n_customers)
    browse = rng.lognormal(np.log(1 / 8), 0.5, n_customers)
    alive = np.ones(n_customers, bool)
    last_complaint = np.full(n_customers, -10_000)
    last_deep = np.full(n_customers, -10_000)
    ids = np.array([f"c{i:05d}" for i in range(n_customers)])
    orders, views, complaints = [], [], []
    for d, day in enumerate(days):
        recent_complaint = (d - last_complaint) < 90
        alive &= rng.random(n_customers) > (0.0015 + 0.01 * recent_complaint)
        # browsing sessions with a depth; deep ones reach the cart
        has_session = alive & (rng.random(n_customers) < browse)
        for i in np.flatnonzero(has_session):
            depth = 1 + rng.poisson(2.5)
            t = day + pd.Timedelta(seconds=int(rng.integers(0, 86_000)))
            pages = rng.choice(["home", "category", "product"], size=depth)
            if depth >= 5:
                pages[-1] = "cart"
                last_deep[i] = d
            sid = f"s{d}-{i}"
            views.extend((ids[i], sid, t + pd.Timedelta(seconds=30 * k), p) for k, p in enumerate(pages))
        rate = base * np.where(recent_complaint, 0.5, 1.0) * np.where((d - last_deep) < 5, 3.0, 1.0)
        buys = alive & (rng.random(n_customers) < rate)
        for i in np.flatnonzero(buys):
            t = day + pd.Timedelta(seconds=int(rng.integers(0, 86_000)))
            orders.append((f"o{len(orders)}", ids[i], t, float(rng.gamma(2.0, 30.0))))
        complain = alive & (rng.random(n_customers) < 0.003)
        for i in np.flatnonzero(complain):
            last_complaint[i] = d
            t = day + pd.Timedelta(hours=int(rng.integers(0, 23)))
            complaints.append((f"k{len(complaints)}", ids[i], t, "email", "delivery", int(rng.integers(1, 4))))
    store = EventStore(store_root)
    store.replace_months({
        "orders": pd.DataFrame(orders, columns=["order_id", "customer_id", "ordered_at", "amount"]),
        "page_views": pd.DataFrame(views, columns=["customer_id", "session_id", "viewed_at", "page_type"]),
        "complaints": pd.DataFrame(complaints, columns=["complaint_id", "customer_id", "opened_at", "channel",
                                                        "category", "severity"]),
    })
    return store


class EventFeatures:
    """Point-in-time features straight from the event store (events strictly before the cutoff)."""

    def __init__(self, store: EventStore, names: list[str] | None = None) -> None:
        self.store = store
        self.names = names or FEATURES

    def feature_names(self, service: str) -> list[str]:
        return list(self.names)

    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        e = entity_df[["customer_id", "event_timestamp"]].reset_index(drop=True).copy()
        e["row_id"] = np.arange(len(e))
        con.register("e", e)
        o, v, c = (self.store.glob(t) for t in ("orders", "page_views", "complaints"))
        df = con.execute(f"""
        WITH ord AS (
          SELECT e.row_id,
            date_diff('second', max(o.ordered_at), any_value(e.event_timestamp)) / 86400.0 AS days_since_last_order,
            count(*) FILTER (WHERE o.ordered_at >= e.event_timestamp - INTERVAL 30 DAY) AS orders_30d,
            count(*) FILTER (WHERE o.ordered_at >= e.event_timestamp - INTERVAL 90 DAY) AS orders_90d,
            coalesce(sum(o.amount) FILTER (WHERE o.ordered_at >= e.event_timestamp - INTERVAL 90 DAY), 0) AS spend_90d
          FROM e JOIN read_parquet('{o}') o ON o.customer_id = e.customer_id AND o.ordered_at < e.event_timestamp
          GROUP BY e.row_id),
        ses AS (
          SELECT e.row_id, v.session_id, min(v.viewed_at) AS at, count(*) AS depth,
                 count(*) FILTER (WHERE v.page_type = 'cart') AS carts
          FROM e JOIN read_parquet('{v}') v ON v.customer_id = e.customer_id AND v.viewed_at < e.event_timestamp
          GROUP BY e.row_id, v.session_id),
        brw AS (
          SELECT s.row_id,
            date_diff('second', max(s.at), any_value(e.event_timestamp)) / 86400.0 AS days_since_last_visit,
            count(*) FILTER (WHERE s.at >= e.event_timestamp - INTERVAL 7 DAY) AS sessions_7d,
            coalesce(sum(s.depth) FILTER (WHERE s.at >= e.event_timestamp - INTERVAL 7 DAY), 0) AS page_views_7d,
            coalesce(max(s.depth) FILTER (WHERE s.at >= e.event_timestamp - INTERVAL 30 DAY), 0) AS max_session_depth_30d,
            coalesce(sum(s.carts) FILTER (WHERE s.at >= e.event_timestamp - INTERVAL 30 DAY), 0) AS cart_views_30d
          FROM ses s JOIN e USING (row_id) GROUP BY s.row_id),
        cmp AS (
          SELECT e.row_id, count(*) AS complaints_90d
          FROM e JOIN read_parquet('{c}') k ON k.customer_id = e.customer_id
           AND k.opened_at < e.event_timestamp AND k.opened_at >= e.event_timestamp - INTERVAL 90 DAY
          GROUP BY e.row_id)
        SELECT e.row_id, e.customer_id, e.event_timestamp, ord.* EXCLUDE (row_id), brw.* EXCLUDE (row_id),
               coalesce(cmp.complaints_90d, 0) AS complaints_90d
        FROM e LEFT JOIN ord USING (row_id) LEFT JOIN brw USING (row_id) LEFT JOIN cmp USING (row_id)
        ORDER BY e.row_id
        """).df()
        for col in ("orders_30d", "orders_90d", "spend_90d", "sessions_7d", "page_views_7d",
                    "max_session_depth_30d", "cart_views_30d"):
            df[col] = df[col].fillna(0)
        df["pages_per_session_7d"] = np.where(df["sessions_7d"] > 0, df["page_views_7d"] / df["sessions_7d"].clip(lower=1), np.nan)
        # RFM scores 1-5 by fixed cut points (the real ones live in configs/features.yaml)
        df["r_score"] = 5 - np.digitize(df["days_since_last_order"].fillna(9999), [14, 30, 60, 120])
        df["f_score"] = 1 + np.digitize(df["orders_90d"], [1, 2, 4, 7])
        df["m_score"] = 1 + np.digitize(df["spend_90d"], [1, 60, 150, 300])
        return df.drop(columns=["row_id"])
