"""The feature build: per-customer snapshots computed from the canonical event store with DuckDB SQL,
written as the Parquet sources Feast reads.

Snapshot scheme (docs/features.md): a snapshot at date D describes every customer known before D
00:00 UTC, from events strictly before that instant. Snapshots are taken on a weekly grid
(configs/features.yaml ``snapshots``) plus the ``--until`` date itself, one Parquet file per date holding
every view's columns: ``data/features/date=YYYY-MM-DD.parquet`` (each Feast view reads its own columns).
Rebuilding a date replaces its file; new dates add files. Day counts are not stored (they are derived
for the date asked for at retrieval time), so a snapshot's age never makes a customer look more recent
than they are.

Events are first reduced to one row per customer and day (and per session and day) in DuckDB; each
snapshot then aggregates its windows from those. There is no Python loop over customers; the loop over
snapshot dates is what keeps memory flat for a year of backfill.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import DataError, PropensityError
from core.events import EventStore
from core.settings import ProjectPaths, project_paths
from features.catalog import FLOAT, JOIN_KEY, TIMESTAMP_FIELD, VIEWS
from features.settings import FeaturesConfig, load_features_config

log = logging.getLogger("propensity.features")


@dataclass
class BuildSummary:
    snapshots: list[dt.date] = field(default_factory=list)
    rows: int = 0  # rows written, summed over the snapshots built
    customers: int = 0  # customers in the latest snapshot
    events: int = 0  # events read (all families, before the last snapshot)
    seconds: float = 0.0
    families: dict[str, str] = field(default_factory=dict)

    def add(self, day: dt.date, rows: int) -> None:
        self.snapshots.append(day)
        self.rows += rows
        self.customers = rows


def snapshot_file(sources_dir: Path, day: dt.date) -> Path:
    """The snapshot of ``day``: every view's columns in one file (each Feast view reads its own)."""
    return sources_dir / f"date={day.isoformat()}.parquet"


def read_snapshot(sources_dir: Path, day: dt.date, view: str | None = None):
    """The snapshot of ``day`` as a pandas frame: the key, the time and ``view``'s columns (all without)."""
    import pandas as pd

    cols = None if view is None else [JOIN_KEY, TIMESTAMP_FIELD, *VIEWS[view].names]
    return pd.read_parquet(snapshot_file(sources_dir, day), columns=cols)


def write_snapshot(sources_dir: Path, day: dt.date, frames: dict[str, object]) -> Path:
    """Write per-view frames (the same customers in the same order, each with the key and the time) as the
    snapshot of ``day``, through a temp file. For snapshots made outside the build: benches and tests."""
    import pandas as pd

    first, *rest = frames.values()
    for view, frame in frames.items():
        if not frame[JOIN_KEY].equals(first[JOIN_KEY]):
            raise ValueError(f"write_snapshot: {view} holds other customers (or another order) than the first view")
    wide = pd.concat([first.reset_index(drop=True),
                      *(f.drop(columns=[JOIN_KEY, TIMESTAMP_FIELD]).reset_index(drop=True) for f in rest)], axis=1)
    final = snapshot_file(sources_dir, day)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        wide.to_parquet(tmp, index=False)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def built_dates(sources_dir: Path) -> list[dt.date]:
    """Snapshot dates built with every feature of the catalogue (a file from a build before a feature was
    added counts as not built, so the next build writes it again)."""
    import pyarrow.parquet as pq

    wanted = {JOIN_KEY, TIMESTAMP_FIELD, *(f for v in VIEWS.values() for f in v.names)}
    return sorted(
        dt.date.fromisoformat(p.stem.split("=", 1)[1])
        for p in sources_dir.glob("date=*.parquet")
        if wanted <= set(pq.read_schema(p).names)
    )


def _drop_legacy_layout(sources_dir: Path) -> None:
    """Remove the per-view folders of builds before one file per date (``<view>/date=...parquet``): no
    store reads them any more, and they are derived data, rebuilt from the events by this build."""
    import shutil

    for view in VIEWS:
        folder = sources_dir / view
        if folder.is_dir() and any(folder.glob("date=*.parquet")):
            log.warning("removing %s: snapshots are now one file per date (%s)", folder, sources_dir)
            shutil.rmtree(folder)


def grid_anchor(config: FeaturesConfig, existing: list[dt.date], until: dt.date | None) -> dt.date | None:
    """A date the snapshot grid passes through: the configured anchor, else the data's own clock (the
    first snapshot ever built, which a first build places on the grid that ends at its ``until``, the day
    after the newest event), else ``until``. So a 2010 log and a 2026 log each get a grid of their own."""
    if config.snapshots.anchor is not None:
        return config.snapshots.anchor
    return existing[0] if existing else until


def plan_dates(until: dt.date, existing: list[dt.date], config: FeaturesConfig) -> list[dt.date]:
    """Dates to (re)build: grid dates after the last built one (or, on a first build, within
    ``history_days`` before ``until``), and ``until`` itself."""
    snap = config.snapshots
    anchor = grid_anchor(config, existing, until)
    later_existing = [d for d in existing if d < until]
    start = later_existing[-1] + dt.timedelta(days=1) if later_existing else until - dt.timedelta(days=snap.history_days)
    offset = (start - anchor).days % snap.cadence_days
    first = start + dt.timedelta(days=(snap.cadence_days - offset) % snap.cadence_days)
    grid = []
    day = first
    while day < until:
        grid.append(day)
        day += dt.timedelta(days=snap.cadence_days)
    return [*grid, until]


# ---- SQL ---------------------------------------------------------------------------------------------


def _ts(day: dt.date) -> str:
    return f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+00'"


def _date(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def _day(expr: str) -> str:
    """The UTC date of a timestamp by arithmetic: CAST(ts AS DATE) goes through the time-zone library
    and cost 4x more on the page views."""
    return f"(DATE '1970-01-01' + CAST(floor(epoch_us({expr}) / 86400000000) AS INTEGER))"


_US_PER_DAY = "86400000000.0"


def _unix(expr: str) -> str:
    return f"(epoch_ms({expr}) // 1000)"


def _null(feature: str) -> str:
    kind = next(f.kind for v in VIEWS.values() for f in v.features if f.name == feature)
    return f"NULL::{'DOUBLE' if kind == FLOAT else 'BIGINT'} AS {feature}"


def _prepare(con, store: EventStore, present: dict[str, bool], dates: list[dt.date], cadence_days: int,
             shard: tuple[int, int] | None = None) -> None:
    """Per-customer reductions of the raw events that every snapshot in ``dates`` reads.

    Each reduction keeps only what the snapshots need, so that a build reads each event table's
    history once and aggregates it into few rows:
    - all-time figures (last order, last visit, first event, lifetime counts and gap sums) per customer
      and *snapshot bucket*: the bucket of an event is the first snapshot date after it, so a snapshot's
      value is the max/min/sum over buckets up to its date (one bucket, i.e. one row per customer, for a
      single-date build);
    - windowed figures per customer and day (per session and day for page views), kept only inside the
      longest window before the first date (365 days of orders, 90 days of activity and sessions).
    Adds ``present["amount"]``: whether the orders carry amounts at all.
    ``shard`` (k, n): read only the customers whose id hashes to k modulo n (features.ray_build). Every
    reduction is per customer, so a shard's rows are exactly the whole build's rows of its customers.
    """
    first, until = dates[0], dates[-1]
    shard_filter = "" if shard is None else f" AND hash(customer_id) % {int(shard[1])} = {int(shard[0])}"

    def raw(table: str, cols: str, time_col: str) -> str:
        return (
            f"SELECT {cols} FROM read_parquet('{store.glob(table)}', union_by_name = true) "
            f"WHERE {time_col} < {_ts(until)}{shard_filter}"
        )

    # Snapshot bucket of an event day: the first planned date after that day (dates are first + k *
    # cadence, then until).
    grid_end = dates[-2] if len(dates) > 1 else first
    bucket = _date(until) if len(dates) == 1 else (
        f"CASE WHEN {{day}} < {_date(first)} THEN {_date(first)} "
        f"WHEN {{day}} >= {_date(grid_end)} THEN {_date(until)} "
        f"ELSE {_date(first)} + CAST(((({{day}} - {_date(first)}) // {cadence_days}) + 1) * {cadence_days} AS INTEGER) END"
    )
    # A log of who bought when, without amounts, is enough: the spend features are then null.
    amount = "amount" if "amount" in _columns(con, store.glob("orders")) else "NULL::DOUBLE AS amount"
    con.execute(f"CREATE OR REPLACE TEMP VIEW raw_orders AS {raw('orders', f'customer_id, ordered_at AS ts, {amount}', 'ordered_at')}")
    # Each order's gap to the customer's previous one, in days, minus the customer's first gap: the
    # variance of the gaps is shift-invariant, and without the shift its sum-of-squares formula loses
    # every digit for a customer who orders on a regular rhythm (a std of 8e-8 days instead of 0 for
    # equal gaps, tests/features/test_cadence.py). The first gap is known at every snapshot with two
    # orders, so no later event enters a snapshot's value.
    # Integer microseconds: timestamp differences as INTERVALs made this step 1.5x slower.
    us = "epoch_us(ts)"
    gaps = (
        f"SELECT customer_id, ts, amount, ({us} - lag({us}) OVER w - nth_value({us}, 2) OVER "
        f"(w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) + min({us}) OVER (PARTITION BY customer_id)) "
        f"/ {_US_PER_DAY} AS gap FROM raw_orders WINDOW w AS (PARTITION BY customer_id ORDER BY ts)"
    )
    con.execute(
        f"CREATE TEMP TABLE orders_daily AS SELECT customer_id, {_day('ts')} AS day, count(*) AS n, "
        # NaN (not NULL) for a day with an order without an amount, so that every window summing over
        # it is NaN too and is written as null: a spend that misses an order would be silently low.
        "CASE WHEN count(amount) = count(*) THEN sum(amount) ELSE 'NaN'::DOUBLE END AS spend, "
        "max(ts) AS last_ts, min(ts) AS first_ts, sum(gap) AS gap_sum, sum(gap * gap) AS gap_sq "
        f"FROM ({gaps}) GROUP BY ALL"
    )
    # No amount at all (the column missing, or null throughout): every spend feature is null, also for
    # customers without orders, rather than a spend of 0 that nobody measured.
    present["amount"] = bool(con.execute("SELECT bool_or(NOT isnan(spend)) FROM orders_daily").fetchone()[0])
    # All-time order figures per snapshot bucket (lifetime counts, first and last order, gap sums).
    con.execute(
        f"CREATE TEMP TABLE order_buckets AS SELECT customer_id, {bucket.format(day='day')} AS bucket, "
        "sum(n) AS n, count(*) AS days, sum(spend) AS spend, min(first_ts) AS first_ts, max(last_ts) AS last_ts, "
        "sum(gap_sum) AS gap_sum, sum(gap_sq) AS gap_sq FROM orders_daily GROUP BY ALL"
    )
    # The spend of each customer's first order day: Gamma-Gamma leaves it out of the mean value per
    # buying day (customer_spend_rhythm). Read only by snapshots after that day.
    con.execute("CREATE TEMP TABLE first_day_spend AS SELECT customer_id, arg_min(spend, day) AS spend "
                "FROM orders_daily GROUP BY 1")
    # Orders that can close a cart session of some snapshot's 30-day window (abandoned carts).
    con.execute(f"CREATE TEMP TABLE recent_orders AS SELECT customer_id, ts FROM raw_orders WHERE ts >= {_ts(first)} - INTERVAL 31 DAY")
    firsts = ["SELECT customer_id, min(first_ts) AS first_at FROM order_buckets GROUP BY 1"]
    activity = [f"SELECT customer_id, day FROM orders_daily WHERE day >= {_date(first)} - 90"]
    if present["page_views"]:
        # One pass over every page view, per session and day; the all-time figures (per bucket) and the
        # windowed ones (the last 90 days) are both reduced from it.
        views = raw("page_views", "customer_id, session_id, viewed_at AS ts, page_type", "viewed_at")
        con.execute(
            "CREATE TEMP TABLE session_days_all AS SELECT customer_id, session_id, day, "
            "count(*) AS n_views, count(*) FILTER (WHERE page_type = 'product') AS n_product, "
            "count(*) FILTER (WHERE page_type = 'cart') AS n_cart, min(ts) AS first_ts, max(ts) AS last_ts, "
            "max(ts) FILTER (WHERE page_type = 'product') AS last_product_ts "
            f"FROM (SELECT *, {_day('ts')} AS day FROM ({views})) GROUP BY ALL"
        )
        # A session counts once, in the bucket of its first view: a session over a snapshot's midnight
        # is in that snapshot's lifetime count and not counted again by the next one.
        con.execute(
            f"CREATE TEMP TABLE visit_buckets AS WITH b AS (SELECT customer_id, {bucket.format(day='day')} AS bucket, "
            "max(last_ts) AS last_ts, max(last_product_ts) AS last_product_ts, min(first_ts) AS first_ts, "
            "sum(n_views) AS n, count(DISTINCT day) AS days FROM session_days_all GROUP BY ALL), "
            f"s AS (SELECT customer_id, {bucket.format(day='first_day')} AS bucket, count(*) AS sessions "
            "FROM (SELECT customer_id, min(day) AS first_day FROM session_days_all GROUP BY customer_id, session_id) "
            "GROUP BY ALL) SELECT b.*, coalesce(s.sessions, 0) AS sessions FROM b LEFT JOIN s USING (customer_id, bucket)"
        )
        firsts.append("SELECT customer_id, min(first_ts) FROM visit_buckets GROUP BY 1")
        con.execute(
            "CREATE TEMP TABLE session_days AS SELECT * EXCLUDE (last_product_ts) FROM session_days_all "
            f"WHERE day >= {_date(first)} - 90"
        )
        con.execute("DROP TABLE session_days_all")
        activity.append("SELECT customer_id, day FROM session_days")
    if present["complaints"]:
        con.execute(
            "CREATE TEMP TABLE raw_complaints AS "  # read once, used by every date
            + raw("complaints", "customer_id, opened_at, severity, resolved_at", "opened_at")
        )
        firsts.append("SELECT customer_id, min(opened_at) FROM raw_complaints GROUP BY 1")
    if present["customers"]:
        firsts.append(f"SELECT customer_id, min(ts) FROM ({raw('customers', 'customer_id, signup_at AS ts', 'signup_at')}) GROUP BY 1")
    con.execute(f"CREATE TEMP TABLE activity_daily AS SELECT DISTINCT * FROM ({' UNION ALL '.join(activity)})")
    # signup_at: the customers file's, or the first event when it has none (or the file is absent).
    con.execute(
        "CREATE TEMP TABLE customers_all AS SELECT customer_id, min(first_at) AS signup_at "
        f"FROM ({' UNION ALL '.join(firsts)}) GROUP BY 1"
    )


def _events_read(con, present: dict[str, bool]) -> int:
    """Events before the last snapshot, counted from the reductions (no second pass over the files)."""
    counts = ["SELECT sum(n) FROM orders_daily"]
    if present["page_views"]:
        counts.append("SELECT sum(n) FROM visit_buckets")
    if present["complaints"]:
        counts.append("SELECT count(*) FROM raw_complaints")
    return int(sum(con.execute(sql).fetchone()[0] or 0 for sql in counts))


def _columns(con, glob: str) -> set[str]:
    """Columns of any file of ``glob`` (every footer is read: files written by other ingests may differ)."""
    sql = f"DESCRIBE SELECT * FROM read_parquet('{glob}', union_by_name = true) LIMIT 0"
    return {row[0] for row in con.execute(sql).fetchall()}


@dataclass
class Part:
    """One view's share of a snapshot's query: named tables to compute first (names are shared across
    views: a table two views need, such as the orders to date, is computed once), its output columns and
    the joins onto ``pop``."""

    tables: dict[str, str] = field(default_factory=dict)
    cols: list[str] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)


def _population(day: dt.date) -> str:
    return f"SELECT customer_id, signup_at FROM customers_all WHERE signup_at < {_ts(day)}"


def _orders_to_date(day: dt.date) -> str:
    """All-time order figures per customer at ``day`` (the buckets up to it)."""
    return (
        "SELECT customer_id, sum(n) AS n, sum(days) AS days, sum(spend) AS spend, min(first_ts) AS first_ts, "
        "max(last_ts) AS last_ts, sum(gap_sum) AS gap_sum, sum(gap_sq) AS gap_sq FROM order_buckets "
        f"WHERE bucket <= {_date(day)} GROUP BY 1"
    )


def _visits_to_date(day: dt.date) -> str:
    """All-time visit figures per customer at ``day``."""
    return (
        "SELECT customer_id, max(last_ts) AS last_ts, max(last_product_ts) AS last_product_ts, "
        "min(first_ts) AS first_ts, sum(n) AS n, sum(days) AS days, sum(sessions) AS sessions "
        f"FROM visit_buckets WHERE bucket <= {_date(day)} GROUP BY 1"
    )


_OD = "LEFT JOIN od USING (customer_id)"
_VD = "LEFT JOIN vd USING (customer_id)"


def recency_sql(day: dt.date, present: dict[str, bool]) -> Part:
    part = Part({"od": _orders_to_date(day)}, [f"{_unix('od.last_ts')} AS last_order_at"], [_OD])
    if present["page_views"]:
        part.tables["vd"] = _visits_to_date(day)
        part.joins.append(_VD)
        part.cols.append(f"{_unix('vd.last_ts')} AS last_visit_at")
    else:
        part.cols.append(_null("last_visit_at"))
    if present["complaints"]:
        part.tables["lc"] = (f"SELECT customer_id, max(opened_at) AS last_complaint_at FROM raw_complaints "
                           f"WHERE opened_at < {_ts(day)} GROUP BY 1")
        part.joins.append("LEFT JOIN lc USING (customer_id)")
        part.cols.append(f"{_unix('lc.last_complaint_at')} AS last_complaint_at")
    else:
        part.cols.append(_null("last_complaint_at"))
    part.cols.append(f"{_unix('vd.last_product_ts')} AS last_product_view_at" if present["page_views"]
                     else _null("last_product_view_at"))
    part.cols.append(f"{_unix('pop.signup_at')} AS signup_at")
    return part


def frequency_sql(day: dt.date, present: dict[str, bool]) -> Part:
    d = _date(day)
    windows = {"7d": 7, "30d": 30, "90d": 90, "365d": 365}
    sums = [f"sum(n) FILTER (WHERE day >= {d} - {n}) AS orders_{w}" for w, n in windows.items()]
    sums += [f"sum(spend) FILTER (WHERE day >= {d} - {n}) AS spend_{w}" for w, n in windows.items()]
    sums.append(f"sum(n) FILTER (WHERE day >= {d} - 60 AND day < {d} - 30) AS orders_prev_30d")
    tables = {
        "ow": f"SELECT customer_id, {', '.join(sums)} FROM orders_daily WHERE day >= {d} - 365 AND day < {d} GROUP BY 1",
        "act": f"SELECT customer_id, count(*) AS active_days_90d FROM activity_daily "
               f"WHERE day >= {d} - 90 AND day < {d} GROUP BY 1",
    }
    cols = [f"coalesce(ow.orders_{w}, 0)::BIGINT AS orders_{w}" for w in windows]
    if present["amount"]:
        # NaN: the window holds an order without an amount (see _prepare).
        cols += [f"nullif(coalesce(ow.spend_{w}, 0), 'NaN')::DOUBLE AS spend_{w}" for w in windows]
        aov = "nullif(ow.spend_365d / nullif(ow.orders_365d, 0), 'NaN')::DOUBLE AS avg_order_value_365d"
    else:
        cols += [_null(f"spend_{w}") for w in windows]
        aov = _null("avg_order_value_365d")
    a, b = "coalesce(ow.orders_30d, 0)", "coalesce(ow.orders_prev_30d, 0)"
    cols += [
        "coalesce(act.active_days_90d, 0)::BIGINT AS active_days_90d",
        aov,
        f"{b}::BIGINT AS orders_prev_30d",
        f"CASE WHEN {a} + {b} = 0 THEN NULL ELSE ({a} - {b}) / ({a} + {b}) END::DOUBLE AS orders_trend_30d",
    ]
    return Part(tables, cols, ["LEFT JOIN ow USING (customer_id)", "LEFT JOIN act USING (customer_id)"])


def browse_sql(day: dt.date, present: dict[str, bool]) -> Part:
    if not present["page_views"]:
        return Part(cols=[_null(f) for f in VIEWS["customer_browse"].names])
    d, t = _date(day), _ts(day)
    tables = {
        # Per session, only its page views inside the 30-day window count (none after the snapshot).
        "sess30": f"SELECT customer_id, session_id, sum(n_views) AS n_views, "
                  f"sum(n_views) FILTER (WHERE day >= {d} - 7) AS n_views_7d, sum(n_product) AS n_product, "
                  f"sum(n_cart) AS n_cart, min(first_ts) AS first_ts, max(last_ts) AS last_ts "
                  f"FROM session_days WHERE day >= {d} - 30 AND day < {d} GROUP BY ALL",
        # First order at or after each cart session's start; abandoned when none came before
        # min(session end + 24 h, snapshot).
        "cart_next": "SELECT s.customer_id, s.session_id, o.ts AS next_order_at "
                     "FROM (SELECT * FROM sess30 WHERE n_cart > 0) s ASOF LEFT JOIN recent_orders o "
                     "ON s.customer_id = o.customer_id AND o.ts >= s.first_ts",
        "br": "SELECT s.customer_id, count(*) FILTER (WHERE n_views_7d > 0) AS sessions_7d, "
              "count(*) AS sessions_30d, coalesce(sum(n_views_7d), 0) AS page_views_7d, "
              "sum(n_views) AS page_views_30d, max(n_views) AS max_session_depth_30d, "
              "sum(n_product) AS product_views_30d, sum(n_cart) AS cart_views_30d, "
              f"count(*) FILTER (WHERE n_cart > 0 AND NOT coalesce(nx.next_order_at < "
              f"least(s.last_ts + INTERVAL 24 HOUR, {t}), false)) AS abandoned_carts_30d "
              "FROM sess30 s LEFT JOIN cart_next nx USING (customer_id, session_id) GROUP BY 1",
    }
    cols = []
    for f in VIEWS["customer_browse"].names:
        if f.startswith("pages_per_session_"):
            w = f.rsplit("_", 1)[1]
            cols.append(f"(br.page_views_{w} / nullif(br.sessions_{w}, 0))::DOUBLE AS {f}")
        else:
            cols.append(f"coalesce(br.{f}, 0)::BIGINT AS {f}")
    return Part(tables, cols, ["LEFT JOIN br USING (customer_id)"])


def complaints_sql(day: dt.date, present: dict[str, bool]) -> Part:
    if not present["complaints"]:
        return Part(cols=[_null(f) for f in VIEWS["customer_complaints"].names])
    t = _ts(day)
    tables = {
        "cc": f"SELECT customer_id, "
              f"count(*) FILTER (WHERE opened_at >= {t} - INTERVAL 30 DAY) AS complaints_30d, "
              f"count(*) FILTER (WHERE opened_at >= {t} - INTERVAL 90 DAY) AS complaints_90d, "
              f"count(*) FILTER (WHERE resolved_at IS NULL OR resolved_at >= {t}) AS open_complaints, "
              f"count(*) FILTER (WHERE severity = 3 AND opened_at >= {t} - INTERVAL 90 DAY) "
              f"AS high_severity_complaints_90d, "
              f"median(epoch(resolved_at - opened_at) / 86400.0) FILTER "
              f"(WHERE resolved_at >= {t} - INTERVAL 365 DAY AND resolved_at < {t}) AS median_resolution_days_365d "
              f"FROM raw_complaints WHERE opened_at < {t} GROUP BY 1",
    }
    cols = [
        f"coalesce(cc.{f}, 0)::BIGINT AS {f}"
        for f in ("complaints_30d", "complaints_90d", "open_complaints", "high_severity_complaints_90d")
    ]
    cols.append("cc.median_resolution_days_365d::DOUBLE AS median_resolution_days_365d")
    return Part(tables, cols, ["LEFT JOIN cc USING (customer_id)"])


def cadence_sql(day: dt.date, present: dict[str, bool]) -> Part:
    # n - 1 gaps between n orders: their mean telescopes to the span over n - 1; their sample variance
    # is (sum of squares - sum^2 / k) / (k - 1) over the shifted gaps (_prepare), k = n - 1. A rounding
    # error just below 0 for identical gaps is clamped.
    part = Part({"od": _orders_to_date(day)}, [
        "coalesce(od.n, 0)::BIGINT AS lifetime_orders",
        "nullif(coalesce(od.spend, 0), 'NaN')::DOUBLE AS lifetime_spend" if present["amount"] else _null("lifetime_spend"),
        f"{_unix('od.first_ts')} AS first_order_at",
        f"CASE WHEN od.n >= 2 THEN epoch_us(od.last_ts - od.first_ts) / {_US_PER_DAY} / (od.n - 1) END::DOUBLE "
        "AS orders_mean_gap_days",
        "CASE WHEN od.n >= 3 THEN sqrt(greatest((od.gap_sq - od.gap_sum * od.gap_sum / (od.n - 1)) / (od.n - 2), 0)) "
        "END::DOUBLE AS orders_gap_std_days",
    ], [_OD])
    if present["page_views"]:
        part.tables["vd"] = _visits_to_date(day)
        part.joins.append(_VD)
        part.cols += [
            "coalesce(vd.sessions, 0)::BIGINT AS lifetime_sessions",
            f"{_unix('vd.first_ts')} AS first_visit_at",
            f"CASE WHEN vd.days >= 2 THEN ({_day('vd.last_ts')} - {_day('vd.first_ts')}) / (vd.days - 1) END::DOUBLE "
            "AS visit_mean_gap_days",
        ]
    else:
        part.cols += [_null(f) for f in ("lifetime_sessions", "first_visit_at", "visit_mean_gap_days")]
    return part


# rhythm_fit holds the day's BG/NBD and Gamma-Gamma parameters (one row, nulls without a fit: set_rhythm).
_RHYTHM = "CROSS JOIN rhythm_fit r"


def rhythm_sql(day: dt.date, present: dict[str, bool]) -> Part:
    cols = ["coalesce(od.days, 0)::BIGINT AS order_days", *(f"r.{p}::DOUBLE AS btyd_{p}" for p in _BGNBD_PARAMS)]
    return Part({"od": _orders_to_date(day)}, cols, [_OD, _RHYTHM])


# Gamma-Gamma's input, the mean spend of the repeat order days; NaN (an order without an amount) is null.
_REPEAT_MEAN = "nullif((od.spend - f.spend) / (od.days - 1), 'NaN')"


def spend_rhythm_sql(day: dt.date, present: dict[str, bool]) -> Part:
    cols = [f"CASE WHEN od.days >= 2 THEN {_REPEAT_MEAN} END::DOUBLE AS repeat_day_mean_spend",
            *(f"r.{p}::DOUBLE AS gg_{p}" for p in _GG_PARAMS)]
    return Part({"od": _orders_to_date(day)}, cols,
                [_OD, "LEFT JOIN first_day_spend f USING (customer_id)", _RHYTHM])


def visit_rhythm_sql(day: dt.date, present: dict[str, bool]) -> Part:
    cols = [f"r.visit_{p}::DOUBLE AS btyd_visit_{p}" for p in _BGNBD_PARAMS]
    if not present["page_views"]:
        return Part({}, [_null("visit_days"), *cols], [_RHYTHM])
    return Part({"vd": _visits_to_date(day)}, ["coalesce(vd.days, 0)::BIGINT AS visit_days", *cols], [_VD, _RHYTHM])


_BGNBD_PARAMS = ("r", "alpha", "a", "b")
_GG_PARAMS = ("p", "q", "gamma")


def rhythm_sample(con, day: dt.date, fit_customers: int, present: dict[str, bool]) -> dict:
    """The customers the rhythm models are fitted on at ``day``: ``{"orders": ..., "visits": ...}`` (visits
    None without page views).

    Orders, for BG/NBD and Gamma-Gamma, from the snapshot's temp table ``od`` (the orders to date). The
    summary is the models' (Fader, Hardie and Lee): x repeat order days, t_x days from the first to the
    last order day, T days from the first order day to ``day``, m the mean spend of the repeat order days;
    orders are counted per UTC day, as two orders an hour apart are one buying occasion. Visits, for the
    BG/NBD of the visit rhythm, the same summary of the days with a page view, from ``vd``.
    At most ``fit_customers`` each, the same ones at every build: the first by ``key`` (a hash of the id),
    in that order, so that the samples of customer shards merge into this one (features.ray_build)."""
    import numpy as np

    d = _date(day)

    def sample(sql: str, cols: tuple[str, ...]) -> dict:
        got = con.execute(f"{sql} ORDER BY key LIMIT {int(fit_customers)}").fetchnumpy()
        return {"key": np.asarray(got["key"], dtype=object), **{c: np.asarray(got[c], np.float64) for c in cols}}

    orders = sample(
        f"SELECT md5(CAST(customer_id AS VARCHAR)) AS key, od.days - 1 AS x, "
        f"CAST(od.last_ts AS DATE) - CAST(od.first_ts AS DATE) AS t_x, {d} - CAST(od.first_ts AS DATE) AS T, "
        # 0 (not a value Gamma-Gamma reads) below two order days or without amounts.
        f"coalesce(CASE WHEN od.days >= 2 THEN {_REPEAT_MEAN} END, 0) AS m "
        "FROM od JOIN first_day_spend f USING (customer_id)", ("x", "t_x", "T", "m"))
    visits = None
    if present["page_views"]:
        visits = sample(
            f"SELECT md5(CAST(customer_id AS VARCHAR)) AS key, vd.days - 1 AS x, "
            f"{_day('vd.last_ts')} - {_day('vd.first_ts')} AS t_x, {d} - {_day('vd.first_ts')} AS T FROM vd",
            ("x", "t_x", "T"))
    return {"orders": orders, "visits": visits}


def _fit_bgnbd(sample: dict | None, view: str, day: dt.date):
    from features import btyd

    if sample is None or not len(sample["x"]):
        return None
    try:
        return btyd.fit(sample["x"], sample["t_x"], sample["T"])
    except PropensityError as exc:
        log.info("%s at %s: no BG/NBD fit (%s); its readings are null", view, day, exc)
        return None


def fit_rhythm(sample: dict, day: dt.date) -> tuple:
    """The rhythm models fitted on a ``rhythm_sample``: (BG/NBD of the orders, Gamma-Gamma, BG/NBD of the
    visit days), None for a model whose fit fails (too few customers, no repeat, no amounts, no page views)."""
    from features import btyd

    orders = sample["orders"]
    bg = _fit_bgnbd(orders, "customer_rhythm", day)
    gg = None
    if len(orders["x"]):
        try:
            gg = btyd.fit_gamma_gamma(orders["x"], orders["m"])
        except PropensityError as exc:
            log.info("customer_spend_rhythm at %s: no Gamma-Gamma fit (%s); its readings are null", day, exc)
    return bg, gg, _fit_bgnbd(sample["visits"], "customer_visit_rhythm", day)


def set_rhythm(con, bg, gg, visits) -> None:
    """The fitted parameters as the temp table ``rhythm_fit`` (one row; nulls for a model without a fit),
    which the snapshot's select reads; features.derived applies the fits."""

    def values(fitted, names, prefix=""):
        return [f"{getattr(fitted, p):.17g}::DOUBLE AS {prefix}{p}" if fitted else f"NULL::DOUBLE AS {prefix}{p}"
                for p in names]

    cols = [*values(bg, _BGNBD_PARAMS), *values(gg, _GG_PARAMS), *values(visits, _BGNBD_PARAMS, "visit_")]
    con.execute(f"CREATE OR REPLACE TEMP TABLE rhythm_fit AS SELECT {', '.join(cols)}")


VIEW_SQL = {
    "customer_recency": recency_sql,
    "customer_frequency": frequency_sql,
    "customer_browse": browse_sql,
    "customer_complaints": complaints_sql,
    "customer_cadence": cadence_sql,
    "customer_rhythm": rhythm_sql,
    "customer_spend_rhythm": spend_rhythm_sql,
    "customer_visit_rhythm": visit_rhythm_sql,
}


def snapshot_sql(day: dt.date, present: dict[str, bool]) -> tuple[dict[str, str], str]:
    """Every view's columns at ``day``, one row per customer known by then, in id order: the tables to
    compute first (name -> query, in order; a table two views need, such as the orders to date, once) and
    the query that joins them onto the population.

    One file for all views rather than one per view: retrieval joins each entity row once per snapshot
    instead of once per view, and the population is joined, sorted and written once. The parts are temp
    tables rather than CTEs of one query: as CTEs DuckDB held every aggregate's hash table while it ran
    the joins (1M customers: 6.0 s and a 4.0 GB peak, against 4.7 s and 2.8 GB; docs/features.md)."""
    tables: dict[str, str] = {"pop": _population(day)}
    cols: list[str] = []
    joins: list[str] = []
    for view, make_sql in VIEW_SQL.items():
        part = make_sql(day, present)
        for name, sql in part.tables.items():
            if tables.setdefault(name, sql) != sql:
                raise AssertionError(f"{view}: table {name} differs from another view's")
        cols += part.cols
        joins += [j for j in part.joins if j not in joins]
    select = (f"SELECT pop.customer_id AS {JOIN_KEY}, {_ts(day)} AS {TIMESTAMP_FIELD}, {', '.join(cols)} "
              f"FROM pop {' '.join(joins)} ORDER BY pop.customer_id")
    return tables, select


# ---- the build ---------------------------------------------------------------------------------------


def _default_until(con, present: dict[str, bool], store: EventStore) -> dt.date:
    """The day after the newest event, so that the latest snapshot sees every event."""
    times = {"orders": "ordered_at", "page_views": "viewed_at", "complaints": "opened_at"}
    newest = [
        con.execute(f"SELECT max({col}) FROM read_parquet('{store.glob(table)}')").fetchone()[0]
        for table, col in times.items()
        if present[table]
    ]
    newest = [n for n in newest if n is not None]
    if not newest:
        raise DataError(f"{store.root}: the event store holds no events")
    return max(newest).astimezone(dt.UTC).date() + dt.timedelta(days=1)


def connect(memory_limit: str, threads: int | None, tmp_dir: Path):
    """A DuckDB connection with the build's settings (UTC, memory limit, threads, spill folder)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {threads or os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{tmp_dir}'")
    return con


def build_features(
    until: dt.date | None = None,
    *,
    config: FeaturesConfig | None = None,
    paths: ProjectPaths | None = None,
    memory_limit: str = "4GB",
    threads: int | None = None,
    progress: bool = False,
    engine: str | None = None,
) -> BuildSummary:
    """Compute and write snapshots up to ``until`` (default: the day after the newest event).

    ``engine``: ``local`` (one DuckDB process) or ``ray`` (customer shards on Ray, features.ray_build);
    default: the config's ``build.engine``. ``memory_limit`` and ``threads`` are per DuckDB process.
    Returns a summary; logs one line. Raises DataError when the event store has no orders.
    """
    import duckdb

    started = time.perf_counter()
    config = config or load_features_config()
    engine = engine or config.build.engine
    if engine not in ("local", "ray"):
        raise PropensityError(f"feature build: unknown engine {engine!r} (local or ray)")
    paths = paths or project_paths()
    store = EventStore(paths.events)
    tables = ("customers", "orders", "page_views", "complaints")
    present = {t: store.has(t) for t in tables}  # _prepare adds "amount": whether orders carry amounts
    if not present["orders"]:
        raise DataError(
            f"{paths.events}: no orders in the event store (orders is the one required family); "
            "run `propensity ingest` or `propensity generate` first"
        )
    sources = paths.feature_sources
    tmp_dir = paths.data / ".duckdb_tmp"
    con = connect(memory_limit, threads, tmp_dir)
    try:
        if until is None:
            until = _default_until(con, present, store)
        dates = plan_dates(until, built_dates(sources), config)
        summary = BuildSummary(families={t: ("present" if present[t] else "absent") for t in tables})
        if engine == "ray":
            from features.ray_build import build_on_ray

            build_on_ray(con, store, present, dates, sources, summary, config, memory_limit, tmp_dir, progress)
        else:
            _prepare(con, store, present, dates, config.snapshots.cadence_days)
            summary.events = _events_read(con, present)
            _write_snapshots(con, dates, present, sources, summary, progress, config.rhythm.fit_customers)
        _drop_legacy_layout(sources)
    except duckdb.Error as exc:
        raise PropensityError(f"feature build failed in DuckDB on {paths.events}: {exc}") from exc
    finally:
        con.close()
    summary.seconds = time.perf_counter() - started
    log.info(
        "features built (%s engine): %d snapshot(s) %s..%s, %d rows per view, %d customers in the latest, "
        "%d events read, %.1f s (families: %s)",
        engine, len(summary.snapshots), summary.snapshots[0], summary.snapshots[-1], summary.rows,
        summary.customers, summary.events, summary.seconds,
        ", ".join(f"{k}={v}" for k, v in summary.families.items()),
    )
    return summary


def snapshot_tables(con, day: dt.date, present: dict[str, bool]) -> tuple[list[str], str]:
    """Create the temp tables of ``day``'s snapshot (snapshot_sql); their names and the final select."""
    tables, select = snapshot_sql(day, present)
    for name, sql in tables.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    return list(tables), select


def drop_tables(con, names: list[str]) -> None:
    for name in names:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def write_parquet(con, select: str, final: Path) -> int:
    """``select`` written to ``final`` through a temp file and a rename (a reader sees the old file or the
    new one, never half of one); the rows written."""
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con.execute(f"COPY ({select}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{tmp}')").fetchone()[0]
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return int(rows)


def _write_snapshots(con, dates, present, sources: Path, summary: BuildSummary, progress: bool,
                     fit_customers: int) -> None:
    from rich.progress import Progress

    sources.mkdir(parents=True, exist_ok=True)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("feature snapshots", total=len(dates))
        for day in dates:
            names, select = snapshot_tables(con, day, present)
            try:
                set_rhythm(con, *fit_rhythm(rhythm_sample(con, day, fit_customers, present), day))  # reads od, vd
                rows = write_parquet(con, select, snapshot_file(sources, day))
            finally:
                drop_tables(con, names)
            summary.add(day, rows)
            bar.advance(task)
