"""Synthetic behaviour generator: a believable online shop whose every probability is known.

Customers carry latent traits (activity, intent, price sensitivity, value, browsing style, complaint
proneness, an optional activity decline). Each day, for every customer at once (numpy, one loop over days):

1. an alive customer may churn (absorbing: no more orders) with a daily hazard that rises with recent and
   unresolved complaints, long gaps since the last order, declining activity and low engagement;
2. a hidden purchase-intent stage moves (idle -> interested -> product -> cart, or back to idle);
3. the stage sets the chance of a web session and how it looks (page depth, product and cart pages) and
   the chance that the session ends in an order; some customers also order offline (store/phone);
4. an order may schedule a complaint (channel, category, severity, resolution delay, some never resolved)
   that opens a few days later and raises the churn hazard from then on.

Because every future hazard is fixed by today's state along the path "no order yet", P(no order in the
next 60 days) and P(an order in the next 14 days) are computed exactly by a forward recursion over the
four intent stages (``_truth_block``), not estimated. See docs/generator.md for the mechanism, the
parameters (configs/generate.yaml) and the stated base-rate ranges.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import Field

from core.config import StrictModel, load_config
from core.contract import PAGE_TYPES
from core.errors import ConfigError, PropensityError

log = logging.getLogger("propensity.generate")

DEFAULT_END = date(2026, 10, 31)
CHURN_HORIZON_DAYS = 60  # p_churn = P(no order in the 60 days after as_of)
CONVERT_HORIZON_DAYS = 14  # p_convert = P(an order in the 14 days after as_of)
CHURN_DRIVERS = ("complaints", "inactivity", "declining_activity", "low_engagement", "none")
CONVERT_DRIVERS = ("browse_depth", "product_interest", "cart_intent", "recent_visit", "none")
TABLE_FILES = ("customers", "orders", "page_views", "complaints")
GROUND_TRUTH_FILE = "ground_truth.parquet"

# Hidden purchase-intent stages.
IDLE, INTERESTED, PRODUCT, CART = 0, 1, 2, 3
N_STAGES = 4

REGIONS = ("north", "south", "east", "west", "central")
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "email")
COMPLAINT_CHANNELS = ("email", "phone", "chat", "web_form")
COMPLAINT_CATEGORIES = ("delivery", "product_quality", "billing", "refund", "service")
N_PRODUCT_CATEGORIES = 40
PRODUCTS_PER_CATEGORY = 50

# Page codes are indices into PAGE_TYPES; a session lists its pages in this funnel order.
_PAGE = {name: i for i, name in enumerate(PAGE_TYPES)}
_SESSION_ORDER = np.array(
    [_PAGE[p] for p in ("home", "category", "other", "product", "help", "cart", "checkout")]
)
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---- configuration -----------------------------------------------------------------------------------
class PopulationConfig(StrictModel):
    pre_window_share: float = Field(
        0.4, ge=0, le=1, description="share of customers who signed up before the window"
    )
    pre_window_max_days: int = Field(540, ge=1, description="oldest signup before the window, in days")
    activity_sigma: float = Field(0.6, gt=0, description="log-sd of the activity trait (median 1)")
    intent_sigma: float = Field(0.4, gt=0, description="log-sd of the intent trait (median 1)")
    value_median: float = Field(55.0, gt=0, description="median order value before price sensitivity")
    value_sigma: float = Field(0.5, gt=0)
    deep_browser_share: float = Field(
        0.5, ge=0, le=1, description="share who browse deep (others: short, frequent visits)"
    )
    offline_share: float = Field(0.3, ge=0, le=1, description="share who also order offline (store, phone)")
    offline_daily_rate: float = Field(0.006, ge=0, le=0.5)
    decliner_share: float = Field(
        0.3, ge=0, le=1, description="share whose activity starts to decline at some date"
    )
    decline_days_min: float = Field(40, gt=0, description="fastest decline: activity falls by e every N days")
    decline_days_max: float = Field(150, gt=0)
    decline_cap: float = Field(2.5, gt=0, description="largest log-drop of activity")
    complaint_prob_median: float = Field(
        0.06, ge=0, le=1, description="median chance that an order leads to a complaint"
    )


class FunnelConfig(StrictModel):
    entry_rate: float = Field(
        0.07, gt=0, le=1, description="daily idle -> interested chance at activity = intent = 1"
    )
    interested_to_product: float = Field(0.2, ge=0, le=1)
    interested_to_idle: float = Field(0.12, ge=0, le=1)
    product_to_cart: float = Field(0.35, ge=0, le=1)
    product_to_idle: float = Field(0.08, ge=0, le=1)
    cart_to_idle: float = Field(0.12, ge=0, le=1)
    visit: tuple[float, float, float, float] = Field(
        (0.012, 0.2, 0.35, 0.5), description="daily visit chance by stage (idle scaled by activity)"
    )
    shallow_visit_factor: float = Field(
        1.6, gt=0, description="short-visit browsers come back more often while interested"
    )
    purchase: tuple[float, float, float, float] = Field(
        (0.02, 0.04, 0.12, 0.6), description="chance a visit ends in an order, by stage"
    )
    churned_visit: float = Field(
        0.003, ge=0, le=1, description="daily visit chance of a churned customer (never buys)"
    )


class ChurnConfig(StrictModel):
    base_daily_hazard: float = Field(1 / 1000, gt=0, lt=1)
    low_engagement: float = Field(
        0.8, ge=0, description="log-hazard per unit of log(1/activity) below the median"
    )
    gap_per_30_days: float = Field(0.25, ge=0, description="log-hazard per 30 days since the last order")
    gap_cap_days: int = Field(240, ge=1)
    declining_activity: float = Field(0.9, ge=0, description="log-hazard per unit of log-drop in activity")
    complaint_30d: float = Field(
        1.0, ge=0, description="log-hazard per severity point opened in the last 30 days"
    )
    complaint_90d: float = Field(0.4, ge=0, description="... opened 30-90 days ago")
    open_complaint: float = Field(0.8, ge=0, description="log-hazard per severity point still unresolved")
    max_daily_hazard: float = Field(0.25, gt=0, le=1)
    driver_threshold: float = Field(
        0.4, ge=0, description="a factor is a driver only when it adds at least this log-hazard"
    )


class ComplaintConfig(StrictModel):
    open_delay_mean_days: float = Field(
        4.0, ge=1, description="days from the order to the complaint (geometric)"
    )
    channels: dict[str, float] = Field(
        default_factory=lambda: {"email": 0.35, "phone": 0.25, "chat": 0.25, "web_form": 0.15}
    )
    categories: dict[str, float] = Field(
        default_factory=lambda: {
            "delivery": 0.35,
            "product_quality": 0.25,
            "billing": 0.15,
            "refund": 0.15,
            "service": 0.10,
        }
    )
    severity: tuple[float, float, float] = Field((0.5, 0.35, 0.15), description="chance of severity 1, 2, 3")
    resolution_median_days: float = Field(2.0, gt=0, description="median days to resolve, times the severity")
    never_resolved: tuple[float, float, float] = Field((0.04, 0.08, 0.15), description="by severity")


class ShiftConfig(StrictModel):
    """Multipliers applied from --shift-at on (a behaviour change for drift detection)."""

    entry: float = Field(0.75, gt=0)
    visit: float = Field(0.85, gt=0)
    purchase: float = Field(0.9, gt=0)
    complaint: float = Field(2.0, gt=0)
    amount: float = Field(0.85, gt=0)
    churn: float = Field(1.3, gt=0)


class GeneratorConfig(StrictModel):
    population: PopulationConfig = PopulationConfig()
    funnel: FunnelConfig = FunnelConfig()
    churn: ChurnConfig = ChurnConfig()
    complaints: ComplaintConfig = ComplaintConfig()
    shift: ShiftConfig = ShiftConfig()
    truth_threads: int = Field(2, ge=1, le=64, description="threads for the ground-truth recursion")


def load_generator_config(path: str | Path | None = None) -> GeneratorConfig:
    """configs/generate.yaml (or ``path``); built-in defaults when the project has none."""
    from core.config import config_path

    if path is None:
        default = config_path("generate.yaml")
        if not default.is_file():
            return GeneratorConfig()
        path = default
    return load_config(path, GeneratorConfig)


# ---- report --------------------------------------------------------------------------------------------
@dataclass
class GenerateReport:
    out: Path
    files: dict[str, Path]
    rows: dict[str, int]
    customers: int
    days: int
    seed: int
    start: date
    end: date
    shift_at: date | None
    seconds: float
    mean_p_churn: float
    mean_p_convert: float
    churned_share: float

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v:,}" for k, v in self.rows.items())
        return (
            f"{self.customers:,} customers x {self.days} days ({self.start} .. {self.end}, seed {self.seed}) "
            f"in {self.seconds:.1f} s -> {self.out}: {rows}; ground truth mean p_churn {self.mean_p_churn:.3f}, "
            f"mean p_convert {self.mean_p_convert:.3f}; churned by the end {self.churned_share:.1%}"
        )


# ---- helpers ---------------------------------------------------------------------------------------------
def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded string ids ('C0000042') built in Arrow: formatting millions of ids in Python is slow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.timestamp("us", tz="UTC"))


def _probabilities(mapping: dict[str, float], name: str) -> tuple[tuple[str, ...], np.ndarray]:
    keys = tuple(mapping)
    p = np.array([mapping[k] for k in keys], dtype=float)
    if not keys or (p < 0).any() or p.sum() <= 0:
        raise ConfigError(f"generate config: complaints.{name} needs positive weights")
    return keys, p / p.sum()


_DICTIONARY_COLUMNS = {"page_type", "product_id", "channel", "category", "region", "acquisition_channel"}
_DICTIONARY_COLUMNS |= {"churn_driver", "convert_driver", "as_of", "severity"}


class _TableWriter:
    """Writes one table in chunks (a row group per chunk) so memory stays bounded at any size."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.path, self.schema, self.fmt, self.rows = path, schema, fmt, 0
        if fmt == "parquet":
            # Dictionary-encode only repetitive columns: unique ids gain nothing and cost write time.
            low_cardinality = [n for n in schema.names if n in _DICTIONARY_COLUMNS]
            self._writer = pq.ParquetWriter(
                path, schema, compression="snappy", use_dictionary=low_cardinality
            )
        else:
            self._writer = pa_csv.CSVWriter(path, schema)

    def write(self, columns: dict[str, pa.Array]) -> None:
        table = pa.table(columns, schema=self.schema)
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()


_TS = pa.timestamp("us", tz="UTC")
SCHEMAS = {
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_at", _TS),
            ("region", pa.string()),
            ("acquisition_channel", pa.string()),
        ]
    ),
    "orders": pa.schema(
        [
            ("order_id", pa.string()),
            ("customer_id", pa.string()),
            ("ordered_at", _TS),
            ("amount", pa.float64()),
            ("channel", pa.string()),
        ]
    ),
    "page_views": pa.schema(
        [
            ("customer_id", pa.string()),
            ("session_id", pa.string()),
            ("viewed_at", _TS),
            ("page_type", pa.string()),
            ("product_id", pa.string()),
        ]
    ),
    "complaints": pa.schema(
        [
            ("complaint_id", pa.string()),
            ("customer_id", pa.string()),
            ("opened_at", _TS),
            ("channel", pa.string()),
            ("category", pa.string()),
            ("severity", pa.int64()),
            ("resolved_at", _TS),
        ]
    ),
    "ground_truth": pa.schema(
        [
            ("customer_id", pa.string()),
            ("as_of", _TS),
            ("p_churn", pa.float64()),
            ("p_convert", pa.float64()),
            ("churn_driver", pa.string()),
            ("convert_driver", pa.string()),
        ]
    ),
}


# ---- the simulation ------------------------------------------------------------------------------------
class Simulation:
    """State and daily step of the synthetic shop. Day 0 is the first day of the window."""

    def __init__(
        self, customers: int, days: int, seed: int, end: date, cfg: GeneratorConfig, shift_at: date | None
    ):
        self.n, self.days, self.cfg = customers, days, cfg
        self.rng = np.random.default_rng(seed)
        self.start = end - timedelta(days=days - 1)
        self.start_us = (
            int(
                (
                    datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC) - _EPOCH
                ).total_seconds()
            )
            * 1_000_000
        )
        self.shift_day = (shift_at - self.start).days if shift_at is not None else None
        self.start_weekday = self.start.weekday()  # 0 = Monday
        self.id_width = max(7, len(str(customers)))
        self._draw_population()
        self._init_state()
        self._channels = _probabilities(cfg.complaints.channels, "channels")
        self._categories = _probabilities(cfg.complaints.categories, "categories")
        self._calendar: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.session_seq = 0
        self.order_seq = 0
        self.complaint_seq = 0
        self._week_key: tuple | None = None
        self._week_rates: dict[str, np.ndarray] = {}

    # -- population ---------------------------------------------------------------------------------
    def _draw_population(self) -> None:
        p, rng, n = self.cfg.population, self.rng, self.n
        pre = rng.random(n) < p.pre_window_share
        signup_day = np.where(
            pre, -rng.integers(1, p.pre_window_max_days + 1, n), rng.integers(0, self.days, n)
        )
        order = np.argsort(
            signup_day, kind="stable"
        )  # ids follow signup order: joined customers are a prefix
        self.signup_day = signup_day[order].astype(np.int32)
        self.signup_sec = rng.integers(6 * 3600, 23 * 3600, n)
        self.activity = rng.lognormal(0.0, p.activity_sigma, n)
        self.intent = rng.lognormal(0.0, p.intent_sigma, n)
        self.price_sensitivity = rng.beta(2.0, 3.0, n)
        self.value = rng.lognormal(math.log(p.value_median), p.value_sigma, n)
        self.deep_browser = rng.random(n) < p.deep_browser_share
        self.offline_rate = np.where(
            rng.random(n) < p.offline_share, p.offline_daily_rate * rng.lognormal(0, 0.5, n), 0.0
        )
        decliner = rng.random(n) < p.decliner_share
        self.decline_start = np.where(
            decliner, self.signup_day + rng.integers(30, 500, n), np.iinfo(np.int32).max // 2
        )
        self.decline_rate = np.where(
            decliner, 1.0 / rng.uniform(p.decline_days_min, p.decline_days_max, n), 0.0
        )
        self.complaint_prob = np.clip(p.complaint_prob_median * rng.lognormal(0, 0.7, n), 0, 0.6)
        self.preferred_hour = rng.choice(np.array([9.0, 13.0, 20.0]), n, p=[0.3, 0.3, 0.4])
        self.favourite_category = rng.integers(0, N_PRODUCT_CATEGORIES, n)
        self.region = rng.integers(0, len(REGIONS), n)
        # Price-sensitive customers come more often through paid search; a weak, realistic link.
        paid = rng.random(n) < 0.15 + 0.4 * self.price_sensitivity
        self.acquisition = np.where(paid, 1, rng.choice(np.array([0, 2, 3, 4]), n, p=[0.5, 0.2, 0.15, 0.15]))
        # Below-median activity raises the churn hazard (low engagement); constant per customer.
        self.low_engagement = np.maximum(0.0, -np.log(self.activity))
        # Price sensitivity lowers the chance a visit ends in an order and the order value.
        self.purchase_factor = (1.2 - 0.6 * self.price_sensitivity) * self.intent**0.3

    def _init_state(self) -> None:
        n, rng = self.n, self.rng
        self.alive = np.ones(n, dtype=bool)
        self.churn_day = np.full(n, -1, dtype=np.int32)
        self.churn_driver = np.full(n, len(CHURN_DRIVERS) - 1, dtype=np.int8)
        pre = self.signup_day < 0
        # In-window signups arrive interested or with a full cart (many sign up at their first checkout).
        self.stage = np.where(rng.random(n) < 0.5, CART, INTERESTED).astype(np.int8)
        self.stage[pre] = IDLE
        # Pre-window customers enter the window alive, with a last order some days before it.
        tenure = -self.signup_day
        gap0 = np.minimum(tenure, rng.geometric(1 / 40, n))
        self.last_order_day = np.where(pre, -gap0, self.signup_day).astype(np.int32)
        self.complaint_term = np.zeros(n)  # churn log-hazard from complaints, changed by calendar events

    # -- per-day parameters ---------------------------------------------------------------------------
    def shifted(self, day: int) -> bool:
        return self.shift_day is not None and day >= self.shift_day

    def multipliers(self, day: int) -> ShiftConfig:
        return self.cfg.shift if self.shifted(day) else _NO_SHIFT

    def monday_of(self, day: int) -> int:
        return day - (day + self.start_weekday) % 7

    def decline(self, day: int, idx: np.ndarray | slice) -> np.ndarray:
        """Log-drop of activity; updated weekly (on Mondays) so that it is known ahead for the truth."""
        week = self.monday_of(day)
        return np.minimum(
            self.cfg.population.decline_cap,
            self.decline_rate[idx] * np.maximum(0, week - self.decline_start[idx]),
        )

    def rates(self, day: int, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Every daily probability of customers ``idx`` on ``day`` that does not depend on the gap or complaints."""
        f, c, mult = self.cfg.funnel, self.cfg.churn, self.multipliers(day)
        decline = self.decline(day, idx)
        activity_now = self.activity[idx] * np.exp(-decline)
        entry = np.minimum(f.entry_rate * self.intent[idx] * activity_now * mult.entry, 0.5)
        visit = np.empty((N_STAGES, len(entry)))
        visit[IDLE] = f.visit[IDLE] * activity_now
        shallow = np.where(self.deep_browser[idx], 1.0, f.shallow_visit_factor)
        visit[INTERESTED] = f.visit[INTERESTED] * shallow
        visit[PRODUCT] = f.visit[PRODUCT]
        visit[CART] = f.visit[CART]
        visit = np.minimum(visit * mult.visit, 0.95)
        purchase = np.minimum(np.array(f.purchase)[:, None] * self.purchase_factor[idx] * mult.purchase, 0.95)
        offline = np.minimum(self.offline_rate[idx] * activity_now, 0.5)
        # Base churn log-hazard: everything except the gap and complaint terms.
        base_eta = (
            math.log(c.base_daily_hazard * mult.churn)
            + c.low_engagement * self.low_engagement[idx]
            + c.declining_activity * decline
        )
        return {
            "entry": entry,
            "visit": visit,
            "purchase": purchase,
            "offline": offline,
            "base_eta": base_eta,
            "decline_term": c.declining_activity * decline,
        }

    def _rates_of_week(self, day: int) -> dict[str, np.ndarray]:
        """``rates`` of every customer, cached: they change only on Mondays and at the shift date."""
        key = (self.monday_of(day), self.shifted(day))
        if self._week_key != key:
            self._week_key = key
            self._week_rates = self.rates(day, slice(None))
        return self._week_rates

    def gap_term(self, gap: np.ndarray) -> np.ndarray:
        c = self.cfg.churn
        return c.gap_per_30_days / 30.0 * np.minimum(gap, c.gap_cap_days)

    def driver_of(self, complaints, inactivity, declining, low) -> np.ndarray:
        """Index into CHURN_DRIVERS of the largest log-hazard term, 'none' when none reaches the threshold."""
        terms = np.stack([complaints, inactivity, declining, low])
        best = terms.argmax(axis=0).astype(np.int8)
        best[terms.max(axis=0) < self.cfg.churn.driver_threshold] = len(CHURN_DRIVERS) - 1
        return best

    # -- one day ------------------------------------------------------------------------------------
    def step(self, day: int, sink: _EventSink) -> None:
        rng, f = self.rng, self.cfg.funnel
        joined = int(np.searchsorted(self.signup_day, day, side="right"))
        idx = np.flatnonzero(self.alive[:joined])
        existing = idx[self.signup_day[idx] < day]
        newcomers = idx[self.signup_day[idx] == day]

        # 1. churn (not on the signup day)
        c = self.cfg.churn
        r = self._rates_of_week(day)
        decline_term = r["decline_term"][existing]
        base_eta = r["base_eta"][existing]
        gap_term = self.gap_term(day - self.last_order_day[existing])
        hazard = np.minimum(np.exp(base_eta + gap_term + self.complaint_term[existing]), c.max_daily_hazard)
        churned = rng.random(len(existing)) < hazard
        if churned.any():
            gone = existing[churned]
            self.alive[gone] = False
            self.churn_day[gone] = day
            self.churn_driver[gone] = self.driver_of(
                self.complaint_term[gone],
                gap_term[churned],
                decline_term[churned],
                c.low_engagement * self.low_engagement[gone],
            )
            existing = existing[~churned]

        # 2. hidden intent stage moves
        stage = self.stage[existing]
        u = rng.random(len(existing))
        new_stage = stage.copy()
        new_stage[(stage == IDLE) & (u < r["entry"][existing])] = INTERESTED
        m = stage == INTERESTED
        new_stage[m & (u < f.interested_to_product)] = PRODUCT
        new_stage[
            m & (u >= f.interested_to_product) & (u < f.interested_to_product + f.interested_to_idle)
        ] = IDLE
        m = stage == PRODUCT
        new_stage[m & (u < f.product_to_cart)] = CART
        new_stage[m & (u >= f.product_to_cart) & (u < f.product_to_cart + f.product_to_idle)] = IDLE
        new_stage[(stage == CART) & (u < f.cart_to_idle)] = IDLE
        self.stage[existing] = new_stage

        # 3. visits and orders (newcomers always visit: they sign up in a session)
        visit_p = r["visit"][new_stage, existing]
        purchase_p = r["purchase"][new_stage, existing]
        visited = rng.random(len(existing)) < visit_p
        bought_online = visited & (rng.random(len(existing)) < purchase_p)
        bought_offline = (rng.random(len(existing)) < r["offline"][existing]) & ~bought_online
        if len(newcomers):
            new_stage_n = self.stage[newcomers]
            pn = r["purchase"][new_stage_n, newcomers]
            bought_new = rng.random(len(newcomers)) < pn
        else:
            new_stage_n, bought_new = np.zeros(0, np.int8), np.zeros(0, bool)

        visitors = np.concatenate([existing[visited], newcomers])
        v_stage = np.concatenate([new_stage[visited], new_stage_n])
        v_bought = np.concatenate([bought_online[visited], bought_new])
        fixed_start = np.concatenate([np.full(visited.sum(), -1), self.signup_sec[newcomers]])
        # Churned customers still drop by now and then, never to buy.
        dead = np.flatnonzero(~self.alive[:joined])
        dead = dead[rng.random(len(dead)) < f.churned_visit]
        visitors = np.concatenate([visitors, dead])
        v_stage = np.concatenate([v_stage, np.zeros(len(dead), np.int8)])
        v_bought = np.concatenate([v_bought, np.zeros(len(dead), bool)])
        fixed_start = np.concatenate([fixed_start, np.full(len(dead), -1)])
        order_sec_online = self._sessions(day, visitors, v_stage, v_bought, fixed_start, sink)

        online_buyers = visitors[v_bought]
        offline_buyers = existing[bought_offline]
        offline_sec = rng.integers(9 * 3600, 19 * 3600, len(offline_buyers))
        buyers = np.concatenate([online_buyers, offline_buyers])
        order_sec = np.concatenate([order_sec_online, offline_sec])
        channel = np.concatenate(
            [np.zeros(len(online_buyers), np.int8), np.ones(len(offline_buyers), np.int8)]
        )
        self._orders(day, buyers, order_sec, channel, sink)
        self.stage[buyers] = IDLE
        self.last_order_day[buyers] = day

        # 4. end of day: complaint events scheduled for today change the churn hazard from tomorrow
        for cust, delta in self._calendar.pop(day, []):
            np.add.at(self.complaint_term, cust, delta)

    def _sessions(self, day, cust, stage, bought, fixed_start, sink) -> np.ndarray:
        """Emit the page views of one session per visitor; return the order second of the buyers' sessions."""
        rng, k = self.rng, len(cust)
        if k == 0:
            return np.zeros(0, np.int64)
        deep = self.deep_browser[cust]
        entry = rng.choice(3, k, p=[0.55, 0.3, 0.15])  # home, category, other
        home = (entry == 0).astype(np.int64)
        category = (entry == 1) + rng.poisson(
            np.select(
                [stage == IDLE, stage == INTERESTED, stage == PRODUCT],
                [0.2, np.where(deep, 2.5, 0.2), 0.5],
                0.2,
            )
        )
        other = (entry == 2) + rng.poisson(np.where((stage == INTERESTED) & deep, 0.6, 0.1))
        product = rng.poisson(
            np.select(
                [stage == IDLE, stage == INTERESTED, stage == PRODUCT],
                [0.2, np.where(deep, 0.6, 0.1), 1.5],
                0.3,
            )
        )
        product += (stage == PRODUCT) | (stage == CART)
        open_complaint = self.complaint_term[cust] > 0
        help_ = rng.random(k) < np.where(open_complaint, 0.5, 0.03)
        cart = ((stage == CART) | bought).astype(np.int64) + (rng.random(k) < 0.1) * (stage == CART)
        checkout = (bought | ((stage == CART) & (rng.random(k) < 0.4))).astype(np.int64)
        counts = np.stack([home, category, other, product, help_.astype(np.int64), cart, checkout], axis=1)
        depth = counts.sum(axis=1)
        pages = np.repeat(np.tile(_SESSION_ORDER, k), counts.ravel())
        session_of_page = np.repeat(np.arange(k), depth)

        start = np.clip(self.preferred_hour[cust] * 3600 + rng.normal(0, 7200, k), 0, 80_000).astype(np.int64)
        start = np.where(fixed_start >= 0, fixed_start, start)
        dwell = rng.exponential(45.0, len(pages)).astype(np.int64) + 5
        first = np.cumsum(depth) - depth
        elapsed = np.cumsum(dwell) - dwell
        elapsed -= np.repeat(elapsed[first], depth)  # seconds since the session's first page
        sec = np.minimum(start[session_of_page] + elapsed, 86_399)
        last_sec = sec[first + depth - 1]

        # Product pages: mostly the customer's favourite category, a handful of items when focused.
        is_product = pages == _PAGE["product"]
        page_cust = cust[session_of_page]
        focused = stage[session_of_page] >= PRODUCT
        item = np.where(
            focused, rng.integers(0, 6, len(pages)), rng.integers(0, PRODUCTS_PER_CATEGORY, len(pages))
        )
        in_favourite = focused | (rng.random(len(pages)) < 0.6)
        category_of = np.where(
            in_favourite,
            self.favourite_category[page_cust],
            rng.integers(0, N_PRODUCT_CATEGORIES, len(pages)),
        )
        product_id = np.where(is_product, category_of * PRODUCTS_PER_CATEGORY + item, -1)

        session_no = self.session_seq + np.arange(k)
        self.session_seq += k
        sink.page_views.append((page_cust, session_no[session_of_page], day, sec, pages, product_id))
        return np.minimum(last_sec[bought] + rng.integers(20, 120, int(bought.sum())), 86_399)

    def _orders(self, day, cust, sec, channel, sink, order_days=None) -> None:
        """Orders of ``day`` (or of ``order_days`` before the window); each may schedule a complaint."""
        rng, k = self.rng, len(cust)
        if k == 0:
            return
        mult = self.multipliers(day)
        amount = (
            self.value[cust]
            * (1 - 0.35 * self.price_sensitivity[cust])
            * rng.lognormal(0, 0.35, k)
            * mult.amount
        )
        amount = np.maximum(np.round(amount, 2), 1.0)
        order_no = self.order_seq + np.arange(k)
        self.order_seq += k
        order_days = np.full(k, day) if order_days is None else order_days
        sink.orders.append((order_no, cust, order_days, sec, amount, channel))
        complains = rng.random(k) < np.minimum(self.complaint_prob[cust] * mult.complaint, 0.9)
        self._schedule_complaints(day, cust[complains], sink)

    def _schedule_complaints(self, day, cust, sink) -> None:
        rng, k, cc = self.rng, len(cust), self.cfg.complaints
        if k == 0:
            return
        c = self.cfg.churn
        open_day = day + rng.geometric(1 / cc.open_delay_mean_days, k)
        open_sec = rng.integers(8 * 3600, 20 * 3600, k)
        severity = rng.choice(np.array([1, 2, 3]), k, p=np.array(cc.severity) / sum(cc.severity))
        never = rng.random(k) < np.array(cc.never_resolved)[severity - 1]
        resolve_hours = rng.lognormal(np.log(cc.resolution_median_days * 24 * severity), 0.8, k)
        resolved_us = np.where(never, -1, (open_sec + (resolve_hours * 3600).astype(np.int64)) * 1_000_000)
        resolve_day = open_day + np.where(never, 0, resolved_us // _US_PER_DAY)
        channel = rng.choice(len(self._channels[0]), k, p=self._channels[1])
        category = rng.choice(len(self._categories[0]), k, p=self._categories[1])
        complaint_no = self.complaint_seq + np.arange(k)
        self.complaint_seq += k
        sink.complaints.append(
            (complaint_no, cust, open_day, open_sec, channel, category, severity, resolved_us)
        )
        sev = severity.astype(float)
        # Churn log-hazard changes, applied at the end of each day (see step 4).
        self._schedule(open_day, cust, (c.complaint_30d + c.open_complaint) * sev)
        self._schedule(open_day + 30, cust, (c.complaint_90d - c.complaint_30d) * sev)
        self._schedule(open_day + 90, cust, -c.complaint_90d * sev)
        self._schedule(resolve_day[~never], cust[~never], -c.open_complaint * sev[~never])

    def _schedule(self, days: np.ndarray, cust: np.ndarray, delta: np.ndarray) -> None:
        for d in np.unique(days):
            m = days == d
            self._calendar[int(d)].append((cust[m], delta[m]))

    # -- ground truth ------------------------------------------------------------------------------
    def truth(self, day: int, block: int = 16_384, pool: ThreadPoolExecutor | None = None):
        """Exact p_churn, p_convert and drivers at the start of ``day`` for every customer who joined before it."""
        n = int(np.searchsorted(self.signup_day, day, side="left"))
        p_churn = np.ones(n)
        p_convert = np.zeros(n)
        churn_driver = self.churn_driver[:n].copy()
        convert_driver = np.full(n, len(CONVERT_DRIVERS) - 1, dtype=np.int8)
        idx = np.flatnonzero(self.alive[:n])
        if len(idx):
            # Complaint hazard changes already scheduled inside the window (from orders placed before today).
            pos = np.full(self.n, -1, dtype=np.int64)
            pos[idx] = np.arange(len(idx))
            events = []
            for d in range(CHURN_HORIZON_DAYS):
                for cust, delta in self._calendar.get(day + d, []):
                    p = pos[cust]
                    keep = p >= 0
                    events.append((p[keep], np.full(keep.sum(), d), delta[keep]))
            ev_pos = np.concatenate([e[0] for e in events]) if events else np.zeros(0, np.int64)
            ev_day = np.concatenate([e[1] for e in events]) if events else np.zeros(0, np.int64)
            ev_delta = np.concatenate([e[2] for e in events]) if events else np.zeros(0)
            order = np.argsort(ev_pos, kind="stable")
            ev_pos, ev_day, ev_delta = ev_pos[order], ev_day[order], ev_delta[order]

            starts = list(range(0, len(idx), block))
            results = {}

            def run(s: int) -> None:
                sub = idx[s : s + block]
                lo, hi = np.searchsorted(ev_pos, [s, s + len(sub)])
                results[s] = self._truth_block(day, sub, ev_pos[lo:hi] - s, ev_day[lo:hi], ev_delta[lo:hi])

            if pool is not None and len(starts) > 1:
                list(pool.map(run, starts))
            else:
                for s in starts:
                    run(s)
            for s in starts:
                sl = slice(s, s + block)
                pc_, pv_, cd_ = results[s]
                p_churn[idx[sl]] = pc_
                p_convert[idx[sl]] = pv_
                churn_driver[idx[sl]] = cd_
            stage = self.stage[idx]
            conv = np.select(
                [stage == INTERESTED, stage == PRODUCT, stage == CART],
                [np.where(self.deep_browser[idx], 0, 3), 1, 2],
                len(CONVERT_DRIVERS) - 1,
            )
            convert_driver[idx] = conv
        return p_churn, p_convert, churn_driver, convert_driver

    def _truth_block(self, day, sub, ev_pos, ev_day, ev_delta):
        """Forward recursion over the 60 days after ``day`` along the no-order path, for customers ``sub``.

        ``mass[s]`` is P(alive, in stage s, no order yet). Each day mirrors ``step``: churn hazard, stage move,
        then the chance of an order (web visit that buys, or offline). Everything it uses is fixed by the
        state at ``day``: the gap grows by one a day, activity changes on Mondays, complaint changes are
        already in the calendar. float32 keeps the block in cache; the error is ~1e-6.
        """
        f, c = self.cfg.funnel, self.cfg.churn
        k = len(sub)
        f32 = np.float32
        gap0 = (day - self.last_order_day[sub]).astype(f32)
        comp = self.complaint_term[sub].astype(f32)
        comp_events = np.zeros((CHURN_HORIZON_DAYS, k), dtype=f32)
        if len(ev_pos):
            np.add.at(comp_events, (ev_day, ev_pos), ev_delta.astype(f32))
        mass = np.zeros((N_STAGES, k), dtype=f32)
        mass[self.stage[sub], np.arange(k)] = 1.0
        ordered = np.zeros(k, dtype=f32)
        p_convert = None
        acc_comp = np.zeros(k, dtype=f32)
        acc_gap = np.zeros(k, dtype=f32)
        acc_decline = np.zeros(k, dtype=f32)
        gap_scale = f32(c.gap_per_30_days / 30.0)
        gap_cap = f32(c.gap_cap_days)
        # Stage moves other than idle -> interested are the same for everyone: one small matrix.
        move = np.array(
            [
                [1, f.interested_to_idle, f.product_to_idle, f.cart_to_idle],
                [0, 1 - f.interested_to_product - f.interested_to_idle, 0, 0],
                [0, f.interested_to_product, 1 - f.product_to_cart - f.product_to_idle, 0],
                [0, 0, f.product_to_cart, 1 - f.cart_to_idle],
            ],
            dtype=f32,
        )
        key = None
        tmp = np.empty(k, dtype=f32)
        for d in range(CHURN_HORIZON_DAYS):
            u = day + d
            new_key = (self.monday_of(u), self.shifted(u))
            if new_key != key:  # activity changes on Mondays, multipliers at the shift date
                key = new_key
                r = self.rates(u, sub)
                entry = r["entry"].astype(f32)
                p_order = 1 - (1 - r["visit"] * r["purchase"]) * (1 - r["offline"])
                p_order = p_order.astype(f32)
                p_stay = (1 - p_order).astype(f32)
                base_eta = r["base_eta"].astype(f32)
                decline_term = r["decline_term"].astype(f32)
            # churn hazard of the day
            np.add(gap0, f32(d), out=tmp)
            np.minimum(tmp, gap_cap, out=tmp)
            tmp *= gap_scale
            acc_gap += tmp
            acc_comp += comp
            acc_decline += decline_term
            tmp += base_eta
            tmp += comp
            np.exp(tmp, out=tmp)
            np.minimum(tmp, f32(c.max_daily_hazard), out=tmp)
            np.subtract(f32(1.0), tmp, out=tmp)
            mass *= tmp
            # stage moves
            entered = mass[IDLE] * entry
            mass = move @ mass
            mass[IDLE] -= entered
            mass[INTERESTED] += entered
            # an order today ends the no-order path
            ordered += np.einsum("sk,sk->k", mass, p_order)
            mass *= p_stay
            comp += comp_events[d]
            if d + 1 == CONVERT_HORIZON_DAYS:
                p_convert = ordered.copy()
        horizon = f32(CHURN_HORIZON_DAYS)
        driver = self.driver_of(
            acc_comp / horizon,
            acc_gap / horizon,
            acc_decline / horizon,
            c.low_engagement * self.low_engagement[sub],
        )
        p_churn = np.clip(1.0 - ordered.astype(np.float64), 0.0, 1.0)
        return p_churn, np.clip(p_convert.astype(np.float64), 0.0, 1.0), driver


_NO_SHIFT = ShiftConfig(entry=1, visit=1, purchase=1, complaint=1, amount=1, churn=1)


@dataclass
class _EventSink:
    """Events of the current chunk of days, as numpy tuples, until they are written."""

    page_views: list = field(default_factory=list)
    orders: list = field(default_factory=list)
    complaints: list = field(default_factory=list)


# ---- writing -------------------------------------------------------------------------------------------
class _Output:
    def __init__(self, sim: Simulation, folder: Path, fmt: str):
        self.sim, self.fmt = sim, fmt
        ext = "parquet" if fmt == "parquet" else "csv"
        self.paths = {name: folder / f"{name}.{ext}" for name in TABLE_FILES}
        self.paths["ground_truth"] = folder / GROUND_TRUTH_FILE
        self.writers = {
            name: _TableWriter(self.paths[name], SCHEMAS[name], fmt)
            for name in ("orders", "page_views", "complaints")
        }
        self.truth_writer = _TableWriter(self.paths["ground_truth"], SCHEMAS["ground_truth"], "parquet")
        self.customer_ids = _ids("C", np.arange(1, sim.n + 1), sim.id_width)
        self.page_types = pa.array(PAGE_TYPES)
        products = np.arange(N_PRODUCT_CATEGORIES * PRODUCTS_PER_CATEGORY)
        self.product_ids = _ids("P", products + 1, 5)
        self.last_day = sim.days - 1

    def _us(self, day, sec) -> np.ndarray:
        return (
            self.sim.start_us
            + np.asarray(day, np.int64) * _US_PER_DAY
            + np.asarray(sec, np.int64) * 1_000_000
        )

    def _cust(self, cust) -> pa.Array:
        return pc.take(self.customer_ids, pa.array(np.asarray(cust, np.int64)))

    def flush(self, sink: _EventSink) -> None:
        if sink.page_views:
            cust = np.concatenate([p[0] for p in sink.page_views])
            session = np.concatenate([p[1] for p in sink.page_views])
            day = np.concatenate([np.full(len(p[0]), p[2]) for p in sink.page_views])
            sec = np.concatenate([p[3] for p in sink.page_views])
            pages = np.concatenate([p[4] for p in sink.page_views])
            product = np.concatenate([p[5] for p in sink.page_views])
            self.writers["page_views"].write(
                {
                    "customer_id": self._cust(cust),
                    "session_id": _ids("S", session + 1, 10),
                    "viewed_at": _timestamps(self._us(day, sec)),
                    "page_type": pc.take(self.page_types, pa.array(pages)),
                    "product_id": pc.take(self.product_ids, pa.array(product, mask=product < 0)),
                }
            )
        if sink.orders:
            order_no = np.concatenate([o[0] for o in sink.orders])
            cust = np.concatenate([o[1] for o in sink.orders])
            day = np.concatenate([o[2] for o in sink.orders])
            sec = np.concatenate([o[3] for o in sink.orders])
            us = self._us(day, sec)
            sort = np.argsort(us, kind="stable")
            self.writers["orders"].write(
                {
                    "order_id": _ids("O", order_no[sort] + 1, 9),
                    "customer_id": self._cust(cust[sort]),
                    "ordered_at": _timestamps(us[sort]),
                    "amount": pa.array(np.concatenate([o[4] for o in sink.orders])[sort]),
                    "channel": pc.take(
                        pa.array(["web", "store"]),
                        pa.array(np.concatenate([o[5] for o in sink.orders])[sort]),
                    ),
                }
            )
        if sink.complaints:
            cols = [np.concatenate([c[i] for c in sink.complaints]) for i in range(8)]
            number, cust, open_day, open_sec, channel, category, severity, resolved_us = cols
            # Only complaints opened inside the window exist in the export; later resolutions are unknown.
            inside = open_day <= self.last_day
            opened_us = self._us(open_day, open_sec)
            resolved_abs = self._us(open_day, 0) + resolved_us
            export_end_us = self._us(self.last_day + 1, 0)
            unresolved = (resolved_us < 0) | (resolved_abs >= export_end_us)
            m = inside
            self.writers["complaints"].write(
                {
                    "complaint_id": _ids("K", number[m] + 1, 8),
                    "customer_id": self._cust(cust[m]),
                    "opened_at": _timestamps(opened_us[m]),
                    "channel": pc.take(pa.array(self.sim._channels[0]), pa.array(channel[m])),
                    "category": pc.take(pa.array(self.sim._categories[0]), pa.array(category[m])),
                    "severity": pa.array(severity[m].astype(np.int64)),
                    "resolved_at": pa.array(resolved_abs[m], type=pa.int64(), mask=unresolved[m]).cast(_TS),
                }
            )
        sink.page_views.clear()
        sink.orders.clear()
        sink.complaints.clear()

    def write_truth(self, day: int, p_churn, p_convert, churn_driver, convert_driver) -> None:
        n = len(p_churn)
        self.truth_writer.write(
            {
                "customer_id": self.customer_ids.slice(0, n),
                "as_of": _timestamps(np.full(n, self._us(day, 0))),
                "p_churn": pa.array(p_churn),
                "p_convert": pa.array(p_convert),
                "churn_driver": pc.take(pa.array(CHURN_DRIVERS), pa.array(churn_driver)),
                "convert_driver": pc.take(pa.array(CONVERT_DRIVERS), pa.array(convert_driver)),
            }
        )

    def write_customers(self) -> int:
        sim = self.sim
        us = self._us(sim.signup_day, sim.signup_sec)
        writer = _TableWriter(self.paths["customers"], SCHEMAS["customers"], self.fmt)
        writer.write(
            {
                "customer_id": self.customer_ids,
                "signup_at": _timestamps(us),
                "region": pc.take(pa.array(REGIONS), pa.array(sim.region)),
                "acquisition_channel": pc.take(pa.array(ACQUISITION_CHANNELS), pa.array(sim.acquisition)),
            }
        )
        writer.close()
        return writer.rows

    def write_pre_window_orders(self, sink: _EventSink) -> None:
        """The last order before the window of customers who joined earlier, so recency is right on day 0."""
        sim = self.sim
        pre = np.flatnonzero(sim.signup_day < 0)
        if len(pre):
            days = sim.last_order_day[pre]
            sec = sim.rng.integers(9 * 3600, 21 * 3600, len(pre))
            # Same amount and complaint chance as any order; a complaint about it opens inside the window.
            sim._orders(0, pre, sec, np.zeros(len(pre), np.int8), sink, order_days=days)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.truth_writer.close()


def _parse_date(value: str | date | None, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise PropensityError(f"--{name}: expected a date like 2026-10-31, got {value!r}") from exc


def generate(
    customers: int,
    days: int,
    seed: int,
    out: str | Path,
    end: str | date = DEFAULT_END,
    shift_at: str | date | None = None,
    fmt: Literal["parquet", "csv"] = "parquet",
    config: GeneratorConfig | None = None,
    progress: bool = True,
) -> GenerateReport:
    """Simulate ``customers`` over the ``days`` ending on ``end`` and write the raw tables and ground truth.

    Files are written into a temporary folder inside ``out`` and renamed into place at the end, so a failed
    run leaves earlier output untouched.
    """
    if customers < 1:
        raise PropensityError(f"--customers must be at least 1, got {customers}")
    if days < 1:
        raise PropensityError(f"--days must be at least 1, got {days}")
    if fmt not in ("parquet", "csv"):
        raise PropensityError(f"--format must be parquet or csv, got {fmt!r}")
    end_date = _parse_date(end, "end")
    shift_date = _parse_date(shift_at, "shift-at")
    cfg = config or GeneratorConfig()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".generate-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        sim = Simulation(customers, days, seed, end_date, cfg, shift_date)
        if shift_date is not None and not (sim.start <= shift_date <= end_date):
            raise PropensityError(
                f"--shift-at {shift_date} is outside the simulated window {sim.start} .. {end_date}"
            )
        output = _Output(sim, staging, fmt)
        sink = _EventSink()
        output.write_pre_window_orders(sink)
        truth_sum = np.zeros(2)
        truth_rows = 0
        with ThreadPoolExecutor(max_workers=cfg.truth_threads) as pool, _progress(progress) as bar:
            task = bar.add_task("simulating days", total=days) if bar else None
            for day in range(days):
                if (day + sim.start_weekday) % 7 == 0:  # Mondays: ground truth as of midnight
                    pch, pcv, cd, vd = sim.truth(day, pool=pool)
                    output.write_truth(day, pch, pcv, cd, vd)
                    truth_sum += (pch.sum(), pcv.sum())
                    truth_rows += len(pch)
                sim.step(day, sink)
                month_ends = (sim.start + timedelta(days=day + 1)).day == 1
                if month_ends or day == days - 1:
                    output.flush(sink)
                if bar:
                    bar.advance(task)
        rows = {"customers": output.write_customers()}
        output.close()
        rows.update({name: output.writers[name].rows for name in ("orders", "page_views", "complaints")})
        rows["ground_truth"] = output.truth_writer.rows
        files = {}
        for name, path in output.paths.items():
            final = out / path.name
            os.replace(path, final)
            files[name] = final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    joined = sim.signup_day <= days - 1
    report = GenerateReport(
        out=out,
        files=files,
        rows=rows,
        customers=customers,
        days=days,
        seed=seed,
        start=sim.start,
        end=end_date,
        shift_at=shift_date,
        seconds=time.perf_counter() - started,
        mean_p_churn=float(truth_sum[0] / max(truth_rows, 1)),
        mean_p_convert=float(truth_sum[1] / max(truth_rows, 1)),
        churned_share=float((~sim.alive[joined]).mean()),
    )
    return report


class _progress:
    """A rich progress bar over days, or nothing (tests, benchmarks)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
