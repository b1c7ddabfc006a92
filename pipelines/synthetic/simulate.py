"""The day-by-day behaviour of the synthetic shop: churn hazard, hidden intent stage, sessions and their
pages, orders, and the complaints orders lead to (docs/generator.md, "One day of the simulation").

The day loop is vectorised over all customers (numpy, no Python loop over customers). Every random draw
comes from one generator in a fixed order: the same seed gives the same shop, byte for byte.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from core.contract import PAGE_TYPES
from pipelines.synthetic.config import NO_SHIFT, GeneratorConfig, ShiftConfig, weights
from pipelines.synthetic.traits import (
    CART,
    IDLE,
    INTERESTED,
    N_PRODUCT_CATEGORIES,
    N_STAGES,
    PRODUCT,
    PRODUCTS_PER_CATEGORY,
    draw_traits,
)
from pipelines.synthetic.truth import NO_CHURN_DRIVER, churn_driver_of

US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Page codes are indices into PAGE_TYPES; a session lists its pages in this funnel order.
_PAGE = {name: i for i, name in enumerate(PAGE_TYPES)}
_SESSION_ORDER = np.array(
    [_PAGE[p] for p in ("home", "category", "other", "product", "help", "cart", "checkout")]
)


@dataclass
class EventSink:
    """Events of the current chunk of days, as numpy tuples, until they are written."""

    page_views: list = field(default_factory=list)
    orders: list = field(default_factory=list)
    complaints: list = field(default_factory=list)


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
        self.traits = draw_traits(self.rng, customers, days, cfg.population)
        self._init_state()
        self.channels = weights(cfg.complaints.channels, "channels")
        self.categories = weights(cfg.complaints.categories, "categories")
        self._calendar: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.session_seq = 0
        self.order_seq = 0
        self.complaint_seq = 0
        self._week_key: tuple | None = None
        self._week_rates: dict[str, np.ndarray] = {}

    def _init_state(self) -> None:
        n, rng, signup_day = self.n, self.rng, self.traits.signup_day
        self.alive = np.ones(n, dtype=bool)
        self.churn_day = np.full(n, -1, dtype=np.int32)
        self.churn_driver = np.full(n, NO_CHURN_DRIVER, dtype=np.int8)
        pre = signup_day < 0
        # In-window signups arrive interested or with a full cart (many sign up at their first checkout).
        self.stage = np.where(rng.random(n) < 0.5, CART, INTERESTED).astype(np.int8)
        self.stage[pre] = IDLE
        # Pre-window customers enter the window alive, with a last order some days before it.
        tenure = -signup_day
        gap0 = np.minimum(tenure, rng.geometric(1 / 40, n))
        self.last_order_day = np.where(pre, -gap0, signup_day).astype(np.int32)
        self.complaint_term = np.zeros(n)  # churn log-hazard from complaints, changed by calendar events
        # Campaigns (config ``campaigns``): per campaign and customer the first day its contact's effect no
        # longer acts on; and the day of the last complaint opened (their conditions). Only with campaigns.
        campaigns = self.cfg.campaigns
        self.effect_mult = np.array([c.effect for c in campaigns], dtype=float)
        self.effect_until = np.full((len(campaigns), n), -1, dtype=np.int32) if campaigns else None
        self.last_complaint_day = np.full(n, np.iinfo(np.int32).min // 2, dtype=np.int32) if campaigns else None
        self._opened: dict[int, list[np.ndarray]] = defaultdict(list)

    def complaint_events(self, day: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(customers, log-hazard change) pairs scheduled for the end of ``day``; read-only."""
        return self._calendar.get(day, [])

    # -- per-day parameters ---------------------------------------------------------------------------
    def shifted(self, day: int) -> bool:
        return self.shift_day is not None and day >= self.shift_day

    def multipliers(self, day: int) -> ShiftConfig:
        return self.cfg.shift if self.shifted(day) else NO_SHIFT

    def monday_of(self, day: int) -> int:
        return day - (day + self.start_weekday) % 7

    def decline(self, day: int, idx: np.ndarray | slice) -> np.ndarray:
        """Log-drop of activity; updated weekly (on Mondays) so that it is known ahead for the truth."""
        week, t = self.monday_of(day), self.traits
        return np.minimum(
            self.cfg.population.decline_cap, t.decline_rate[idx] * np.maximum(0, week - t.decline_start[idx])
        )

    def rates(self, day: int, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Every daily probability of customers ``idx`` on ``day`` that does not depend on the gap or complaints."""
        f, c, mult, t = self.cfg.funnel, self.cfg.churn, self.multipliers(day), self.traits
        decline = self.decline(day, idx)
        activity_now = t.activity[idx] * np.exp(-decline)
        entry = np.minimum(f.entry_rate * t.intent[idx] * activity_now * mult.entry, 0.5)
        visit = np.empty((N_STAGES, len(entry)))
        visit[IDLE] = f.visit[IDLE] * activity_now
        shallow = np.where(t.deep_browser[idx], 1.0, f.shallow_visit_factor)
        visit[INTERESTED] = f.visit[INTERESTED] * shallow
        visit[PRODUCT] = f.visit[PRODUCT]
        visit[CART] = f.visit[CART]
        visit = np.minimum(visit * mult.visit, 0.95)
        purchase = np.minimum(np.array(f.purchase)[:, None] * t.purchase_factor[idx] * mult.purchase, 0.95)
        offline = np.minimum(t.offline_rate[idx] * activity_now, 0.5)
        # Base churn log-hazard: everything except the gap and complaint terms.
        base_eta = (
            math.log(c.base_daily_hazard * mult.churn)
            + c.low_engagement * t.low_engagement[idx]
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

    def effect_factor(self, day: int, idx: np.ndarray, until: np.ndarray | None = None) -> np.ndarray:
        """Churn hazard multiplier of customers ``idx`` on ``day`` from the campaigns' contacts (1 without);
        ``until`` (campaigns x len(idx)) overrides the state, for the truth of a contact not made yet."""
        until = self.effect_until[:, idx] if until is None else until
        factor = np.ones(len(idx))
        for c, mult in enumerate(self.effect_mult):
            if mult != 1.0:
                factor *= np.where(until[c] > day, mult, 1.0)
        return factor

    def gap_term(self, gap: np.ndarray) -> np.ndarray:
        c = self.cfg.churn
        return c.gap_per_30_days / 30.0 * np.minimum(gap, c.gap_cap_days)

    # -- one day ------------------------------------------------------------------------------------
    def step(self, day: int, sink: EventSink) -> None:
        rng, f, signup_day = self.rng, self.cfg.funnel, self.traits.signup_day
        joined = int(np.searchsorted(signup_day, day, side="right"))
        idx = np.flatnonzero(self.alive[:joined])
        existing = idx[signup_day[idx] < day]
        newcomers = idx[signup_day[idx] == day]

        # 1. churn (not on the signup day)
        c = self.cfg.churn
        r = self._rates_of_week(day)
        decline_term = r["decline_term"][existing]
        base_eta = r["base_eta"][existing]
        gap_term = self.gap_term(day - self.last_order_day[existing])
        hazard = np.minimum(np.exp(base_eta + gap_term + self.complaint_term[existing]), c.max_daily_hazard)
        if self.effect_until is not None:
            hazard *= self.effect_factor(day, existing)
        churned = rng.random(len(existing)) < hazard
        if churned.any():
            gone = existing[churned]
            self.alive[gone] = False
            self.churn_day[gone] = day
            self.churn_driver[gone] = churn_driver_of(
                self.complaint_term[gone],
                gap_term[churned],
                decline_term[churned],
                c.low_engagement * self.traits.low_engagement[gone],
                c.driver_threshold,
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
        fixed_start = np.concatenate([np.full(visited.sum(), -1), self.traits.signup_sec[newcomers]])
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
        for cust in self._opened.pop(day, []):
            self.last_complaint_day[cust] = day

    def _sessions(self, day, cust, stage, bought, fixed_start, sink) -> np.ndarray:
        """Emit the page views of one session per visitor; return the order second of the buyers' sessions."""
        rng, k, t = self.rng, len(cust), self.traits
        if k == 0:
            return np.zeros(0, np.int64)
        deep = t.deep_browser[cust]
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

        start = np.clip(t.preferred_hour[cust] * 3600 + rng.normal(0, 7200, k), 0, 80_000).astype(np.int64)
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
            t.favourite_category[page_cust],
            rng.integers(0, N_PRODUCT_CATEGORIES, len(pages)),
        )
        product_id = np.where(is_product, category_of * PRODUCTS_PER_CATEGORY + item, -1)

        session_no = self.session_seq + np.arange(k)
        self.session_seq += k
        sink.page_views.append((page_cust, session_no[session_of_page], day, sec, pages, product_id))
        return np.minimum(last_sec[bought] + rng.integers(20, 120, int(bought.sum())), 86_399)

    def _orders(self, day, cust, sec, channel, sink, order_days=None) -> None:
        """Orders of ``day`` (or of ``order_days`` before the window); each may schedule a complaint."""
        rng, k, t = self.rng, len(cust), self.traits
        if k == 0:
            return
        mult = self.multipliers(day)
        amount = (
            t.value[cust] * (1 - 0.35 * t.price_sensitivity[cust]) * rng.lognormal(0, 0.35, k) * mult.amount
        )
        amount = np.maximum(np.round(amount, 2), 1.0)
        order_no = self.order_seq + np.arange(k)
        self.order_seq += k
        order_days = np.full(k, day) if order_days is None else order_days
        sink.orders.append((order_no, cust, order_days, sec, amount, channel))
        complains = rng.random(k) < np.minimum(t.complaint_prob[cust] * mult.complaint, 0.9)
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
        resolve_day = open_day + np.where(never, 0, resolved_us // US_PER_DAY)
        channel = rng.choice(len(self.channels[0]), k, p=self.channels[1])
        category = rng.choice(len(self.categories[0]), k, p=self.categories[1])
        complaint_no = self.complaint_seq + np.arange(k)
        self.complaint_seq += k
        sink.complaints.append(
            (complaint_no, cust, open_day, open_sec, channel, category, severity, resolved_us)
        )
        if self.last_complaint_day is not None:
            for d in np.unique(open_day):
                self._opened[int(d)].append(cust[open_day == d])
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

    def pre_window_orders(self, sink: EventSink) -> None:
        """The last order before the window of customers who joined earlier, so recency is right on day 0."""
        pre = np.flatnonzero(self.traits.signup_day < 0)
        if len(pre):
            days = self.last_order_day[pre]
            sec = self.rng.integers(9 * 3600, 21 * 3600, len(pre))
            # Same amount and complaint chance as any order; a complaint about it opens inside the window.
            self._orders(0, pre, sec, np.zeros(len(pre), np.int8), sink, order_days=days)
