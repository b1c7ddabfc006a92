"""Labels and the time split, computed from the event store with DuckDB.

Rows are (customer, cutoff) pairs: a customer eligible at a cutoff gets one row whose label looks only
at events after the cutoff, while the features (fetched point-in-time at the cutoff) look only before.
Cutoffs sit at UTC midnight on a weekly (configurable) grid. Events at exactly a cutoff count as after it.

Split by time, never at random: test = the latest cutoff whose label window has fully passed, validation
= the cutoffs before it, train = the cutoffs before those. With ``purge`` (the default) a cutoff's label
window ends before the first cutoff of the next split, so no training label has seen the period the
validation or test labels are about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from core.errors import DataError, NotEnoughDataError
from core.events import EventStore
from core.specs import LABEL_TASK, ActiveBuyersLabels, BrowsersLabels, Cutoffs, Labels, MinData, Split

log = logging.getLogger("propensity.training")

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class SplitPlan:
    """Which cutoffs go in which split, and the (exclusive) end of the data they were planned against."""

    data_end: pd.Timestamp
    train: tuple[pd.Timestamp, ...]
    validation: tuple[pd.Timestamp, ...]
    test: pd.Timestamp

    def frame(self) -> pd.DataFrame:
        rows = [(c, TRAIN) for c in self.train] + [(c, VALIDATION) for c in self.validation]
        rows.append((self.test, TEST))
        df = pd.DataFrame(rows, columns=["cutoff", "split"])
        df["cutoff"] = pd.to_datetime(df["cutoff"], utc=True).astype("datetime64[us, UTC]")
        return df

    def describe(self) -> dict[str, list[str]]:
        fmt = lambda cs: [c.strftime("%Y-%m-%d") for c in cs]  # noqa: E731
        return {TRAIN: fmt(self.train), VALIDATION: fmt(self.validation), TEST: fmt([self.test])}


def _midnight(value: date | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize()


def _connect():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def event_span(store: EventStore) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last event timestamp over orders and page views."""
    if not store.has("orders"):
        raise DataError(f"no orders in the event store {store.root}: run `propensity ingest` first")
    parts = [f"SELECT min(ordered_at) lo, max(ordered_at) hi FROM read_parquet('{store.glob('orders')}')"]
    if store.has("page_views"):
        parts.append(f"SELECT min(viewed_at), max(viewed_at) FROM read_parquet('{store.glob('page_views')}')")
    lo, hi = _connect().execute(f"SELECT min(lo), max(hi) FROM ({' UNION ALL '.join(parts)})").fetchone()
    return pd.Timestamp(lo).tz_convert("UTC"), pd.Timestamp(hi).tz_convert("UTC")


def data_end(store: EventStore, cutoffs: Cutoffs) -> pd.Timestamp:
    """Exclusive end of the data: midnight after the configured last day, or after the last event's day."""
    if cutoffs.data_end is not None:
        return _midnight(cutoffs.data_end) + DAY
    _, last = event_span(store)
    return last.normalize() + DAY


def _snapshot_anchor(end: pd.Timestamp) -> pd.Timestamp:
    """The feature store's snapshot grid (features.build.grid_anchor); before any build, the data end,
    which is where a first build puts its grid."""
    from core.settings import project_paths
    from features.build import built_dates, grid_anchor
    from features.settings import load_features_config

    anchor = grid_anchor(load_features_config(), built_dates(project_paths().feature_sources), None)
    return _midnight(anchor) if anchor is not None else end


def plan_split(
    end: pd.Timestamp,
    horizon_days: int,
    cutoffs: Cutoffs,
    split: Split,
    earliest: pd.Timestamp | None = None,
    config_file: str = "the model spec",
) -> SplitPlan:
    """Lay the cutoff grid over the data and assign train / validation / test cutoffs.

    With ``split.adapt`` a history too short for the configured validation cutoffs gets fewer of them
    (down to one, logged); when even that leaves no train cutoff, NotEnoughDataError says how many days
    of history there are, how many the split needs and which settings change that."""
    plan = _plan_split(end, horizon_days, cutoffs, split, earliest)
    if plan.train or not split.adapt:
        return _checked(plan, end, horizon_days, cutoffs, split, earliest, config_file)
    for fewer in range(split.validation_cutoffs - 1, 0, -1):
        smaller = split.model_copy(update={"validation_cutoffs": fewer})
        adapted = _plan_split(end, horizon_days, cutoffs, smaller, earliest)
        if adapted.train:
            log.info("short history: %d validation cutoff(s) instead of %d (%s: split.validation_cutoffs)",
                     fewer, split.validation_cutoffs, config_file)
            return adapted
    return _checked(plan, end, horizon_days, cutoffs, split, earliest, config_file)


def _checked(plan: SplitPlan, end, horizon_days: int, cutoffs: Cutoffs, split: Split, earliest,
             config_file: str) -> SplitPlan:
    if (plan.train and plan.validation) or (earliest is not None and plan.test < earliest):
        return plan  # fine, or no test cutoff at all: label_rows says that in its own words
    gap = horizon_days if split.purge else 0
    gaps = 2 if split.purge_test else 1
    # test matures after one horizon; validation sits a purge gap before it, train a purge gap before that.
    need = horizon_days + gaps * gap + (1 if split.adapt else split.validation_cutoffs) * cutoffs.every_days
    have = (end - earliest).days if earliest is not None else 0
    raise NotEnoughDataError(
        f"the time split needs about {need} days of history (horizon {horizon_days} d"
        f"{f', purge gaps {gaps} x {gap} d' if gap else ''}, cutoffs every {cutoffs.every_days} d) and the data has "
        f"{have} days ({earliest:%Y-%m-%d} to {end - DAY:%Y-%m-%d}). Change labels.horizon_days, split.purge or "
        f"split.validation_cutoffs in {config_file}, or add history"
    )


def _plan_split(end, horizon_days: int, cutoffs: Cutoffs, split: Split, earliest) -> SplitPlan:
    horizon = pd.Timedelta(days=horizon_days)
    step = pd.Timedelta(days=cutoffs.every_days)
    # Cutoffs sit on the feature store's snapshot grid by default, so every training row reads a
    # snapshot taken exactly at its cutoff (windowed counts are exact only on snapshot dates).
    anchor = _midnight(cutoffs.anchor) if cutoffs.anchor is not None else _snapshot_anchor(end)
    # The latest grid point (anchor + k * step, any integer k) whose label window has fully passed.
    latest_allowed = end - horizon
    test = anchor + ((latest_allowed - anchor) // step) * step
    gap = horizon if split.purge else pd.Timedelta(0)

    def before(limit: pd.Timestamp, count: int, gap: pd.Timedelta = gap) -> list[pd.Timestamp]:
        # Latest grid points c with c + gap <= limit (strictly before limit when not purging).
        c = test
        while c + gap > limit or c >= limit:
            c -= step
        out = []
        while len(out) < count and (earliest is None or c >= earliest):
            out.append(c)
            c -= step
        return sorted(out)

    validation = before(test, split.validation_cutoffs, gap if split.purge_test else pd.Timedelta(0))
    train = before(min(validation), split.train_cutoffs) if validation else []
    return SplitPlan(end, tuple(train), tuple(validation), test)


def _active_buyers_sql(labels: ActiveBuyersLabels, orders_glob: str, views_glob: str | None) -> str:
    h = labels.horizon_days
    outcome = "= 0" if labels.positive == "no_order" else "> 0"
    return f"""
    SELECT o.customer_id, c.cutoff AS event_timestamp,
           CAST(count(*) FILTER (WHERE o.ordered_at >= c.cutoff) {outcome} AS INTEGER) AS label, c.split
    FROM cutoffs c
    JOIN read_parquet('{orders_glob}') o
      ON o.ordered_at >= c.cutoff - INTERVAL ({labels.active_window_days}) DAY
     AND o.ordered_at <  c.cutoff + INTERVAL ({h}) DAY
    GROUP BY o.customer_id, c.cutoff, c.split
    HAVING count(*) FILTER (WHERE o.ordered_at < c.cutoff) >= {labels.min_orders}
    """


def _browsers_sql(labels: BrowsersLabels, orders_glob: str, views_glob: str | None) -> str:
    if views_glob is None:
        raise DataError("a 'browsers' label needs page views, and the event store has none")
    h = labels.horizon_days
    outcome = "> 0" if labels.positive == "order" else "= 0"
    return f"""
    WITH browsers AS (
        SELECT v.customer_id, c.cutoff, c.split
        FROM cutoffs c
        JOIN read_parquet('{views_glob}') v
          ON v.viewed_at >= c.cutoff - INTERVAL ({labels.browse_window_days}) DAY AND v.viewed_at < c.cutoff
        GROUP BY ALL
        HAVING count(*) >= {labels.min_page_views}
    )
    SELECT b.customer_id, b.cutoff AS event_timestamp,
           CAST(count(o.ordered_at) FILTER (WHERE o.ordered_at >= b.cutoff) {outcome} AS INTEGER) AS label, b.split
    FROM browsers b
    LEFT JOIN read_parquet('{orders_glob}') o
      ON o.customer_id = b.customer_id
     AND o.ordered_at >= b.cutoff - INTERVAL ({labels.no_order_window_days}) DAY
     AND o.ordered_at <  b.cutoff + INTERVAL ({h}) DAY
    GROUP BY b.customer_id, b.cutoff, b.split
    HAVING count(o.ordered_at) FILTER (WHERE o.ordered_at < b.cutoff) = 0
    """


def _future_spend_sql(labels, orders_glob: str, views_glob: str | None) -> str:
    h = labels.horizon_days
    return f"""
    SELECT o.customer_id, c.cutoff AS event_timestamp,
           CAST(coalesce(sum(o.amount) FILTER (WHERE o.ordered_at >= c.cutoff), 0) AS DOUBLE) AS label, c.split
    FROM cutoffs c
    JOIN read_parquet('{orders_glob}') o
      ON o.ordered_at >= c.cutoff - INTERVAL ({labels.active_window_days}) DAY
     AND o.ordered_at <  c.cutoff + INTERVAL ({h}) DAY
    GROUP BY o.customer_id, c.cutoff, c.split
    HAVING count(*) FILTER (WHERE o.ordered_at < c.cutoff) >= {labels.min_orders}
    """


# One SQL builder per label kind of core.specs.Labels, each over the table ``cutoffs(cutoff, split)``
# giving customer_id, event_timestamp, label, split. A new kind of label is one function here.
LABEL_SQL: dict[str, Callable[..., str]] = {
    "active_buyers": _active_buyers_sql, "browsers": _browsers_sql, "future_spend": _future_spend_sql,
}


def build_labels(
    store: EventStore, labels: Labels, cutoffs: pd.DataFrame
) -> pd.DataFrame:
    """Eligible (customer, cutoff) rows with their label. ``cutoffs`` has columns cutoff, split.

    Returns customer_id (str), event_timestamp (datetime64[us, UTC]), label (int 0/1), split; sorted by
    cutoff then customer so the result (and the training-set hash) is deterministic.
    """
    views_glob = store.glob("page_views") if store.has("page_views") else None
    if not store.has("orders"):
        raise DataError(f"no orders in the event store {store.root}: run `propensity ingest` first")
    con = _connect()
    con.register("cutoffs", cutoffs[["cutoff", "split"]])
    df = con.execute(LABEL_SQL[labels.kind](labels, store.glob("orders"), views_glob)).df()
    df["customer_id"] = df["customer_id"].astype(str)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    # 0/1 outcomes as int64, amounts as float64 (core.specs.LABEL_TASK).
    df["label"] = df["label"].astype("float64" if LABEL_TASK[labels.kind] == "regression" else "int64")
    return df.sort_values(["event_timestamp", "customer_id"], kind="stable").reset_index(drop=True)


# ---- actions and their groups: labels untouched by an action ---------------------------------------------
TREATMENT, CONTROL = "treatment", "control"  # the groups of a follow-up list (serving.actions.assign_groups)


def untreated_weights(scores: pd.DataFrame) -> np.ndarray:
    """Weights that make a scored list look as if nobody had been treated: a rule's treated rows get 0
    (the action changed their outcome), its control rows stand in for them with weight n_rule / n_control
    (inverse probability of being held out), every row without a rule keeps 1. Without group columns
    (lists scored before control groups existed) every row weighs 1."""
    weights = np.ones(len(scores))
    if "group" not in scores.columns or "action_rule" not in scores.columns:
        return weights
    group = scores["group"].to_numpy()
    rule = scores["action_rule"].to_numpy()
    for name in {r for r in rule if r}:
        in_rule = rule == name
        control = in_rule & (group == CONTROL)
        weights[in_rule & (group == TREATMENT)] = 0.0
        if control.any():
            weights[control] = in_rule.sum() / control.sum()
    return weights


def contacted_rows(store: EventStore, rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Which (customer_id, event_timestamp) rows an action acts on: the CRM's export (the ``contacts``
    family) has a contact with the customer from a list made by the row's date (``list_as_of``, else the
    contact's day), less than one horizon before it, so its effect can reach the label window (the effect
    report reads an action's effect over one horizon). Contacts from later lists are not counted: whether
    they happen depends on what the customer does after the date (a win-back list picks those who went
    quiet), and leaving those rows out would bias the labels more than the contact does. All False when
    the store has no contacts."""
    if not store.has("contacts") or rows.empty:
        return np.zeros(len(rows), dtype=bool)
    con = _connect()
    con.register("label_rows", rows[["customer_id", "event_timestamp"]].assign(row_no=np.arange(len(rows))))
    listed = "date_trunc('day', c.contacted_at)"
    if "list_as_of" in store.columns("contacts"):
        listed = f"coalesce(c.list_as_of, {listed})"
    hit = con.execute(
        f"""
        SELECT DISTINCT r.row_no FROM label_rows r
        JOIN read_parquet('{store.glob("contacts")}') c
          ON c.customer_id = r.customer_id
         AND {listed} <= r.event_timestamp
         AND c.contacted_at >= r.event_timestamp - INTERVAL ({horizon_days}) DAY
        """
    ).fetchnumpy()["row_no"]
    out = np.zeros(len(rows), dtype=bool)
    out[np.asarray(hit, dtype=np.int64)] = True
    return out


def label_rows(
    store: EventStore, labels: Labels, cutoffs: Cutoffs, split: Split, config_file: str = "the model spec"
) -> tuple[SplitPlan, pd.DataFrame]:
    """Plan the split over the store's data and label every eligible row of every planned cutoff.

    Training labels should say what customers do untouched: when the store holds contacts, rows whose
    label an action may have changed (``contacted_rows``) get weight 0, i.e. are left out, in every
    split (docs/training.md, "Labels after actions")."""
    first, _ = event_span(store)
    end = data_end(store, cutoffs)
    plan = plan_split(end, labels.horizon_days, cutoffs, split, earliest=first.normalize(), config_file=config_file)
    if plan.test < first:
        raise NotEnoughDataError(
            f"no cutoff has matured labels: events run from {first:%Y-%m-%d} to {end - DAY:%Y-%m-%d}, and a "
            f"{labels.kind} label needs {labels.horizon_days} days after its cutoff"
        )
    rows = build_labels(store, labels, plan.frame())
    contacted = contacted_rows(store, rows, labels.horizon_days)
    if contacted.any():
        log.info("%d of %d labelled rows left out: a contact from a list made by the cutoff, less than %d days "
                 "before it, acts on the label", int(contacted.sum()), len(rows), labels.horizon_days)
        rows = rows[~contacted].reset_index(drop=True)
    log.info(
        "%s labels: %d rows over %d cutoffs (data end %s)", labels.kind, len(rows),
        len(plan.train) + len(plan.validation) + 1, f"{end - DAY:%Y-%m-%d}",
    )
    for split_name, dates in plan.describe().items():
        log.info("  %-10s %2d cutoff(s) %s", split_name, len(dates), ", ".join(dates))
    return plan, rows


def check_min_data(
    rows: pd.DataFrame, minimum: MinData, model: str, plan: SplitPlan | None = None, config_file: str | None = None
) -> None:
    """Raise NotEnoughDataError naming each split that has too few rows or positives."""
    problems = []
    for split in SPLITS:
        part = rows[rows["split"] == split]
        n, pos = len(part), int((part["label"] > 0).sum())  # buyers, for an amount label
        need_rows = getattr(minimum, f"{split}_rows")
        need_pos = getattr(minimum, f"{split}_positives")
        where = ""
        if plan is not None:
            cs = plan.describe()[split]
            where = f" (cutoffs {cs[0]}..{cs[-1]})" if cs else " (no cutoffs: the data is too short)"
        if n < need_rows:
            problems.append(f"{split} split has {n} rows, needs >= {need_rows}{where}")
        if pos < need_pos:
            problems.append(f"{split} split has {pos} positive labels, needs >= {need_pos}{where}")
    if problems:
        raise NotEnoughDataError(
            f"{model}: not enough data to train: " + "; ".join(problems)
            + f". Add more history or customers, or lower min_data in {config_file or f'configs/models/{model}.yaml'}."
        )
