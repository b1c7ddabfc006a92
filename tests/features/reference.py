"""A slow, obviously correct pandas reference of every stored feature, one customer at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _unix(ts) -> float:
    return np.nan if pd.isna(ts) else float(int(pd.Timestamp(ts).timestamp()))


def reference_features(tables: dict[str, pd.DataFrame], snapshot: pd.Timestamp) -> pd.DataFrame:
    """Features of every customer known before ``snapshot``, from events strictly before it."""
    orders = tables["orders"]
    pv = tables.get("page_views")
    comp = tables.get("complaints")
    firsts = [orders.groupby("customer_id")["ordered_at"].min()]
    if "customers" in tables:
        firsts.append(tables["customers"].set_index("customer_id")["signup_at"])
    if pv is not None:
        firsts.append(pv.groupby("customer_id")["viewed_at"].min())
    if comp is not None:
        firsts.append(comp.groupby("customer_id")["opened_at"].min())
    signup = pd.concat(firsts).groupby(level=0).min()
    # Like an absent family: a log whose orders carry no amount at all has null spend everywhere.
    priced = "amount" in orders.columns and orders["amount"].notna().any()

    def spend(df) -> float:
        if not priced or df.amount.isna().any():  # an order without an amount: the sum is unknown
            return np.nan
        return float(df.amount.sum())

    rows = []
    for cid, signed in signup.items():
        if signed >= snapshot:
            continue
        r: dict = {"customer_id": cid, "signup_at": _unix(signed)}
        o = orders[(orders.customer_id == cid) & (orders.ordered_at < snapshot)]

        def within(df, col, days, end_days=0, _s=snapshot):
            return df[(df[col] >= _s - pd.Timedelta(days=days)) & (df[col] < _s - pd.Timedelta(days=end_days))]

        r["last_order_at"] = _unix(o.ordered_at.max()) if len(o) else np.nan
        for w in (7, 30, 90, 365):
            r[f"orders_{w}d"] = len(within(o, "ordered_at", w))
            r[f"spend_{w}d"] = spend(within(o, "ordered_at", w))
        r["orders_prev_30d"] = len(within(o, "ordered_at", 60, 30))
        a, b = r["orders_30d"], r["orders_prev_30d"]
        r["orders_trend_30d"] = np.nan if a + b == 0 else (a - b) / (a + b)
        r["avg_order_value_365d"] = r["spend_365d"] / r["orders_365d"] if r["orders_365d"] else np.nan
        # customer_cadence: gaps between consecutive orders, one by one.
        r["lifetime_orders"] = len(o)
        r["lifetime_spend"] = spend(o)
        r["first_order_at"] = _unix(o.ordered_at.min()) if len(o) else np.nan
        gaps = np.diff(np.sort(o.ordered_at.to_numpy())) / np.timedelta64(1, "D")
        r["orders_mean_gap_days"] = float(gaps.mean()) if len(o) >= 2 else np.nan
        r["orders_gap_std_days"] = float(np.std(gaps, ddof=1)) if len(o) >= 3 else np.nan
        active = set(within(o, "ordered_at", 90).ordered_at.dt.date)
        if pv is not None:
            v = pv[(pv.customer_id == cid) & (pv.viewed_at < snapshot)]
            active |= set(within(v, "viewed_at", 90).viewed_at.dt.date)
            r["last_visit_at"] = _unix(v.viewed_at.max()) if len(v) else np.nan
            prod = v[v.page_type == "product"]
            r["last_product_view_at"] = _unix(prod.viewed_at.max()) if len(prod) else np.nan
            v7, v30 = within(v, "viewed_at", 7), within(v, "viewed_at", 30)
            r["sessions_7d"], r["sessions_30d"] = v7.session_id.nunique(), v30.session_id.nunique()
            r["page_views_7d"], r["page_views_30d"] = len(v7), len(v30)
            r["pages_per_session_7d"] = len(v7) / r["sessions_7d"] if r["sessions_7d"] else np.nan
            r["pages_per_session_30d"] = len(v30) / r["sessions_30d"] if r["sessions_30d"] else np.nan
            r["max_session_depth_30d"] = int(v30.groupby("session_id").size().max()) if len(v30) else 0
            r["product_views_30d"] = int((v30.page_type == "product").sum())
            r["cart_views_30d"] = int((v30.page_type == "cart").sum())
            abandoned = 0
            for _, sess in v30.groupby("session_id"):
                if not (sess.page_type == "cart").any():
                    continue
                start, end = sess.viewed_at.min(), sess.viewed_at.max()
                limit = min(end + pd.Timedelta(hours=24), snapshot)
                bought = ((o.ordered_at >= start) & (o.ordered_at < limit)).any()
                abandoned += 0 if bought else 1
            r["abandoned_carts_30d"] = abandoned
            r["lifetime_sessions"] = v.session_id.nunique()
            r["first_visit_at"] = _unix(v.viewed_at.min()) if len(v) else np.nan
            visit_days = np.unique(v.viewed_at.dt.floor("D").to_numpy())
            day_gaps = np.diff(visit_days) / np.timedelta64(1, "D")
            r["visit_mean_gap_days"] = float(day_gaps.mean()) if len(visit_days) >= 2 else np.nan
        if comp is not None:
            c = comp[(comp.customer_id == cid) & (comp.opened_at < snapshot)]
            r["last_complaint_at"] = _unix(c.opened_at.max()) if len(c) else np.nan
            r["complaints_30d"] = len(within(c, "opened_at", 30))
            r["complaints_90d"] = len(within(c, "opened_at", 90))
            r["open_complaints"] = int((c.resolved_at.isna() | (c.resolved_at >= snapshot)).sum())
            r["high_severity_complaints_90d"] = int((within(c, "opened_at", 90).severity == 3).sum())
            res = within(c, "resolved_at", 365)
            days = (res.resolved_at - res.opened_at).dt.total_seconds() / 86400
            r["median_resolution_days_365d"] = float(days.median()) if len(days) else np.nan
        r["active_days_90d"] = len(active)
        rows.append(r)
    return pd.DataFrame(rows).set_index("customer_id").sort_index()
