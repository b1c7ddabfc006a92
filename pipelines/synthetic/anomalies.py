"""Anomalies for `propensity generate --anomalies`: rows a real export carries that are not customer
behaviour, labelled, so the ingest's cleaning rules (configs/cleaning.yaml) can be measured.

Injected, per chunk of days as the exports are written (parameters: ``anomalies`` in configs/generate.yaml):

- **bots**: a few extra accounts (added to customers) that view hundreds of pages a day on some days;
- **short views**: a view inserted 1-2 s before a genuine view of the same session;
- **test orders** (amount 0 or 999999) and **absurd amounts**, extra orders of genuine customers;
- **cancellations** of genuine orders: in full (id ``C<order id>``, minus the amount) or partial
  returns (``R<order id>``, minus part of it), some hours or days after the order;
- **duplicate complaints**: a complaint submitted again under another id minutes later.

Labels go to ``anomalies.parquet`` beside the ground truth (not into it: the truth is per customer and
week, labels are per row): one row per injected row, and one per genuine order a cancellation touches,
with ``kind``, ``rule`` (the cleaning rule expected to remove it; null for a partly returned order,
which stays with ``expected_amount``) and the row's key (``row_id`` = order / complaint id; page views:
``customer_id``, ``session_id``, ``at``).

The injector draws from a random stream of its own, so the genuine rows are exactly those of a run
without ``--anomalies``. ``score`` (``python -m pipelines.synthetic.anomalies RAW QUARANTINE``)
compares the labels with what an ingest quarantined, per rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contract import PAGE_TYPES
from pipelines.synthetic.config import AnomalyConfig
from pipelines.synthetic.simulate import US_PER_DAY
from pipelines.synthetic.traits import ACQUISITION_CHANNELS, REGIONS

ANOMALIES_FILE = "anomalies.parquet"
MIN_PAGE_SECONDS = 5  # simulate._sessions: a genuine page is seen at least this long
_STREAM = 0x616E6F6D  # "anom": the injector's own random stream next to the simulation's seed
_TS = pa.timestamp("us", tz="UTC")
LABEL_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("kind", pa.string()),
        ("rule", pa.string()),
        ("customer_id", pa.string()),
        ("row_id", pa.string()),
        ("session_id", pa.string()),
        ("at", _TS),
        ("expected_amount", pa.float64()),
    ]
)
# kind -> (table, the cleaning rule expected to remove the row; None: expected to stay)
KINDS = {
    "bot": ("page_views", "bots"),
    "short_view": ("page_views", "short_views"),
    "test_order": ("orders", "test_orders"),
    "amount_outlier": ("orders", "amount_outliers"),
    "cancellation": ("orders", "cancellations"),
    "cancelled_order": ("orders", "cancellations"),
    "returned_order": ("orders", None),
    "duplicate_complaint": ("complaints", "content_duplicates"),
}
_BROWSE_PAGES = np.array([PAGE_TYPES.index(p) for p in ("home", "category", "product", "other")])


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=_TS)


class Injector:
    """Anomalies of one run; ``RawExport`` calls it for each chunk it writes (customer indices from
    ``sim.n`` on are the bots' accounts)."""

    def __init__(self, sim, cfg: AnomalyConfig, seed: int):
        self.sim, self.cfg = sim, cfg
        self.rng = np.random.default_rng([seed, _STREAM])
        b = cfg.bot_accounts
        self.bots = np.arange(sim.n, sim.n + b)
        self.bot_signup_day = self.rng.integers(-30, max(1, sim.days // 2), b)
        self.bot_signup_sec = self.rng.integers(0, 86_400, b)
        self.bot_region = self.rng.integers(0, len(REGIONS), b)
        self.bot_acquisition = self.rng.integers(0, len(ACQUISITION_CHANNELS), b)
        self.next_day = 0  # the first day whose bot traffic is not written yet
        self.seq = {"bot_session": 0, "test_order": 0, "outlier": 0, "complaint": 0}
        self.end_us = sim.start_us + sim.days * US_PER_DAY  # the export ends here

    @property
    def accounts(self) -> int:
        """Customers in the export: the simulated ones and the bots' accounts."""
        return self.sim.n + len(self.bots)

    def _next(self, name: str, k: int) -> np.ndarray:
        start = self.seq[name]
        self.seq[name] += k
        return np.arange(start, start + k) + 1

    @staticmethod
    def labels(kind: str, customer_id, at, row_id=None, session_id=None, expected_amount=None) -> dict:
        n = len(customer_id)
        table, rule = KINDS[kind]
        return {
            "table": pa.array([table] * n, pa.string()),
            "kind": pa.array([kind] * n, pa.string()),
            "rule": pa.array([rule] * n, pa.string()),
            "customer_id": customer_id,
            "row_id": row_id if row_id is not None else pa.nulls(n, pa.string()),
            "session_id": session_id if session_id is not None else pa.nulls(n, pa.string()),
            "at": at,
            "expected_amount": expected_amount if expected_amount is not None else pa.nulls(n, pa.float64()),
        }

    # ---- page views -------------------------------------------------------------------------------------
    def short_views(self, export, cust, session, us, through_day: int) -> tuple[list[dict], list[dict]]:
        """A short view before some genuine views (not a session's first): returns (rows, labels)."""
        cfg, rng = self.cfg, self.rng
        if len(cust) < 2 or cfg.short_view_share == 0:
            return [], []
        lo, hi = cfg.short_view_seconds
        same = session[1:] == session[:-1]
        shift = rng.integers(lo, hi + 1, len(same)).astype(np.int64) * 1_000_000
        # The view before keeps at least the generator's own shortest page time: only the new one is short.
        room = (us[1:] - us[:-1]) >= shift + MIN_PAGE_SECONDS * 1_000_000
        pick = same & room & (rng.random(len(same)) < cfg.short_view_share)
        after = np.flatnonzero(pick) + 1
        if not len(after):
            return [], []
        pages = rng.choice(_BROWSE_PAGES, len(after))
        product = np.where(
            pages == PAGE_TYPES.index("product"), rng.integers(0, len(export.product_ids), len(after)), -1
        )
        customer = export._cust(cust[after])
        sessions = _ids("S", session[after] + 1, 10)
        at = _ts(us[after] - shift[pick])
        row = {
            "customer_id": customer,
            "session_id": sessions,
            "viewed_at": at,
            "page_type": pc.take(export.page_types, pa.array(pages)),
            "product_id": pc.take(export.product_ids, pa.array(product, mask=product < 0)),
        }
        return [row], [self.labels("short_view", customer, at, session_id=sessions)]

    def bot_views(self, export, through_day: int) -> tuple[list[dict], list[dict]]:
        """The bots' traffic of the days up to ``through_day`` not written yet: (rows, labels)."""
        cfg, rng = self.cfg, self.rng
        days = np.arange(self.next_day, through_day + 1)
        self.next_day = through_day + 1
        if not len(self.bots) or not len(days):
            return [], []
        grid_bot = np.repeat(np.arange(len(self.bots)), len(days))
        grid_day = np.tile(days, len(self.bots))
        at_work = (grid_day >= self.bot_signup_day[grid_bot]) & (rng.random(len(grid_day)) < cfg.bot_active_share)
        bot, day = grid_bot[at_work], grid_day[at_work]
        if not len(bot):
            return [], []
        lo, hi = cfg.bot_views_per_day
        views = rng.integers(lo, hi + 1, len(bot))
        gap_lo, gap_hi = cfg.bot_gap_seconds
        latest_start = np.maximum(0, 86_399 - views * gap_hi).astype(np.int64)
        start = (rng.random(len(bot)) * latest_start).astype(np.int64)
        owner = np.repeat(np.arange(len(bot)), views)
        gaps = rng.uniform(gap_lo, gap_hi, len(owner))
        first = np.cumsum(views) - views
        elapsed = np.cumsum(gaps) - gaps
        elapsed -= np.repeat(elapsed[first], views)
        sec = np.minimum(start[owner] + elapsed.astype(np.int64), 86_399)
        us = self.sim.start_us + day[owner].astype(np.int64) * US_PER_DAY + sec * 1_000_000
        pages = rng.choice(_BROWSE_PAGES, len(owner))
        product = np.where(
            pages == PAGE_TYPES.index("product"), rng.integers(0, len(export.product_ids), len(owner)), -1
        )
        customer = export._cust(self.bots[bot][owner])
        sessions = pc.take(_ids("SB", self._next("bot_session", len(bot)), 9), pa.array(owner))
        at = _ts(us)
        row = {
            "customer_id": customer,
            "session_id": sessions,
            "viewed_at": at,
            "page_type": pc.take(export.page_types, pa.array(pages)),
            "product_id": pc.take(export.product_ids, pa.array(product, mask=product < 0)),
        }
        return [row], [self.labels("bot", customer, at, session_id=sessions)]

    # ---- orders -----------------------------------------------------------------------------------------
    def orders(self, export, order_ids: pa.Array, cust, us, amount, channel) -> tuple[list[dict], list[dict]]:
        """Test orders, absurd amounts and cancellations of this chunk's orders: (rows, labels)."""
        cfg, rng, n = self.cfg, self.rng, len(cust)
        if n == 0:
            return [], []
        rows, labels = [], []
        channels = pa.array(["web", "store"])
        for kind, share, prefix, seq in (
            ("test_order", cfg.test_order_share, "OT", "test_order"),
            ("amount_outlier", cfg.outlier_order_share, "OX", "outlier"),
        ):
            k = int(rng.binomial(n, share))
            if not k:
                continue
            who = rng.integers(0, n, k)
            at_us = np.minimum(us[who] + rng.integers(60, 3_600, k) * 1_000_000, self.end_us - 1_000_000)
            if kind == "test_order":
                values = rng.choice(np.asarray(cfg.test_amounts, dtype=float), k)
            else:
                lo, hi = np.log(cfg.outlier_amounts)
                values = np.round(np.exp(rng.uniform(lo, hi, k)), 2)
            ids, customer, at = _ids(prefix, self._next(seq, k), 8), export._cust(cust[who]), _ts(at_us)
            rows.append(
                {
                    "order_id": ids,
                    "customer_id": customer,
                    "ordered_at": at,
                    "amount": pa.array(values),
                    "channel": pc.take(channels, pa.array(np.zeros(k, np.int8))),
                }
            )
            labels.append(self.labels(kind, customer, at, row_id=ids))

        lo, hi = cfg.cancel_delay_days
        delay = (rng.uniform(lo, hi, n) * US_PER_DAY).astype(np.int64)
        pick = (rng.random(n) < cfg.cancellation_share) & (us + delay < self.end_us)
        full = rng.random(n) < cfg.full_cancellation_share
        part = np.round(rng.uniform(*cfg.returned_share, n) * amount, 2)
        idx = np.flatnonzero(pick)
        if len(idx):
            full, part = full[idx], np.clip(part[idx], 0.01, None)
            value = np.where(full, amount[idx], np.minimum(part, amount[idx] - 0.01))
            originals = pc.take(order_ids, pa.array(idx))
            prefixes = pa.array(np.where(full, "C", "R"))
            ids = pc.binary_join_element_wise(prefixes, originals, "")
            customer = export._cust(cust[idx])
            rows.append(
                {
                    "order_id": ids,
                    "customer_id": customer,
                    "ordered_at": _ts(us[idx] + delay[idx]),
                    "amount": pa.array(-value),
                    "channel": pc.take(channels, pa.array(channel[idx])),
                }
            )
            labels.append(self.labels("cancellation", customer, _ts(us[idx] + delay[idx]), row_id=ids))
            f = pa.array(full)
            labels.append(
                self.labels("cancelled_order", customer.filter(f), _ts(us[idx][full]), row_id=originals.filter(f))
            )
            p = pa.array(~full)
            labels.append(
                self.labels(
                    "returned_order",
                    customer.filter(p),
                    _ts(us[idx][~full]),
                    row_id=originals.filter(p),
                    expected_amount=pa.array(np.round(amount[idx][~full] - value[~full], 2)),
                )
            )
        return rows, labels

    # ---- complaints -------------------------------------------------------------------------------------
    def complaints(self, export, cust, opened_us, channel, category, severity, resolved_us, unresolved):
        """The same complaint submitted again minutes later under another id: (rows, labels)."""
        cfg, rng, n = self.cfg, self.rng, len(cust)
        if n == 0:
            return [], []
        lo, hi = cfg.duplicate_delay_minutes
        delay = (rng.uniform(lo, hi, n) * 60e6).astype(np.int64)
        pick = (rng.random(n) < cfg.duplicate_complaint_share) & (opened_us + delay < self.end_us)
        idx = np.flatnonzero(pick)
        if not len(idx):
            return [], []
        opened = opened_us[idx] + delay[idx]
        resolved = np.maximum(resolved_us[idx], opened)  # a ticket closes no earlier than it opens
        ids, customer, at = _ids("KD", self._next("complaint", len(idx)), 7), export._cust(cust[idx]), _ts(opened)
        row = {
            "complaint_id": ids,
            "customer_id": customer,
            "opened_at": at,
            "channel": pc.take(pa.array(self.sim.channels[0]), pa.array(channel[idx])),
            "category": pc.take(pa.array(self.sim.categories[0]), pa.array(category[idx])),
            "severity": pa.array(severity[idx].astype(np.int64)),
            "resolved_at": pa.array(resolved, type=pa.int64(), mask=unresolved[idx]).cast(_TS),
        }
        return [row], [self.labels("duplicate_complaint", customer, at, row_id=ids)]

    # ---- customers --------------------------------------------------------------------------------------
    def bot_customers(self, export) -> dict:
        us = self.sim.start_us + self.bot_signup_day.astype(np.int64) * US_PER_DAY + self.bot_signup_sec * 1_000_000
        return {
            "customer_id": export._cust(self.bots),
            "signup_at": _ts(us),
            "region": pc.take(pa.array(REGIONS), pa.array(self.bot_region)),
            "acquisition_channel": pc.take(pa.array(ACQUISITION_CHANNELS), pa.array(self.bot_acquisition)),
        }


# ---- measuring the cleaning ----------------------------------------------------------------------------------
_KEYS = {"orders": ["order_id"], "complaints": ["complaint_id"], "page_views": ["customer_id", "session_id", "viewed_at"]}


def _keys(frame: pd.DataFrame, table: str, labels: bool) -> pd.Series:
    """One string key per row: the id, or customer|session|time for page views."""
    if labels:
        if table == "page_views":
            cols = [frame["customer_id"], frame["session_id"], frame["at"]]
        else:
            cols = [frame["row_id"]]
    else:
        cols = [frame[c] for c in _KEYS[table]]
    text = [pd.Series(c).reset_index(drop=True) for c in cols]
    text = [c.dt.strftime("%Y-%m-%dT%H:%M:%S.%f") if pd.api.types.is_datetime64_any_dtype(c) else c.astype(str) for c in text]
    key = text[0]
    for c in text[1:]:
        key = key + "|" + c
    return key


def score(raw: Path, quarantine: Path) -> pd.DataFrame:
    """Per cleaning rule: injected rows and the share it quarantined, genuine rows and the share it
    quarantined. ``raw``: the generator's folder (with anomalies.parquet); ``quarantine``: the
    quarantine folder of a store the raw files were ingested into."""
    import pyarrow.parquet as pq

    labels = pd.read_parquet(raw / ANOMALIES_FILE)
    rows = []
    for table in ("orders", "page_views", "complaints"):
        path = next((raw / f"{table}.{ext}" for ext in ("parquet", "csv") if (raw / f"{table}.{ext}").is_file()), None)
        if path is None:
            continue
        if path.suffix == ".parquet":
            total = pq.ParquetFile(path).metadata.num_rows
        else:
            import pyarrow.csv as pa_csv

            total = pa_csv.read_csv(path).num_rows
        held = [pd.read_parquet(p) for p in sorted((quarantine / table).glob("*.parquet"))]
        held = pd.concat(held, ignore_index=True) if held else pd.DataFrame(columns=["rule", *_KEYS[table]])
        held_key = _keys(held, table, labels=False)
        mine = labels[labels["table"] == table].reset_index(drop=True)
        label_key = _keys(mine, table, labels=True)
        expected_gone = mine["rule"].notna().to_numpy()
        genuine = total - int(expected_gone.sum())
        anomalous = set(label_key[expected_gone])
        rules = sorted(set(mine["rule"].dropna()) | set(held["rule"].dropna()))
        for rule in rules:
            removed = set(held_key[(held["rule"] == rule).to_numpy()])
            injected = label_key[(mine["rule"] == rule).to_numpy()]
            caught = int(injected.isin(removed).sum())
            wrongly = len(removed - anomalous)
            rows.append(
                {
                    "rule": rule,
                    "table": table,
                    "injected": len(injected),
                    "caught": caught,
                    "caught_share": caught / len(injected) if len(injected) else float("nan"),
                    "genuine": genuine,
                    "genuine_removed": wrongly,
                    "genuine_removed_share": wrongly / genuine if genuine else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Print ``score`` as a table: ``python -m pipelines.synthetic.anomalies RAW QUARANTINE``."""
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=score.__doc__)
    parser.add_argument("raw", type=Path, help="the generator's output folder (with anomalies.parquet)")
    parser.add_argument("quarantine", type=Path, help="the quarantine folder of the store it was ingested into")
    args = parser.parse_args(argv)
    card = score(args.raw, args.quarantine)
    table = Table(title=f"cleaning of {args.raw}")
    for name in ("rule", "table", "injected", "caught", "caught %", "genuine", "genuine removed", "genuine removed %"):
        table.add_column(name, justify="left" if name in ("rule", "table") else "right")
    for r in card.itertuples():
        table.add_row(
            r.rule, r.table, f"{r.injected:,}", f"{r.caught:,}", f"{100 * r.caught_share:.2f}",
            f"{r.genuine:,}", f"{r.genuine_removed:,}", f"{100 * r.genuine_removed_share:.4f}",
        )
    Console().print(table)
    return card


if __name__ == "__main__":
    main()
