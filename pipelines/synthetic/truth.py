"""Ground truth per customer and week: exact P(no order in 60 days), P(an order in 14 days) and the drivers.

Along the path "no order yet" every future hazard is already fixed by the state at ``as_of`` (the gap grows
by one a day, activity changes on Mondays by a known schedule, complaint effects are in the calendar, the
shift date is known), so a forward recursion over the four hidden stages gives the probabilities exactly;
nothing is estimated. docs/generator.md, "Ground truth".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from pipelines.synthetic.traits import CART, IDLE, INTERESTED, N_STAGES, PRODUCT

if TYPE_CHECKING:
    from pipelines.synthetic.simulate import Simulation

CHURN_HORIZON_DAYS = 60  # p_churn = P(no order in the 60 days after as_of)
CONVERT_HORIZON_DAYS = 14  # p_convert = P(an order in the 14 days after as_of)
# Fixed vocabulary (docs/internals.md); the index of a name is what the simulation stores.
CHURN_DRIVERS = ("complaints", "inactivity", "declining_activity", "low_engagement", "none")
CONVERT_DRIVERS = ("browse_depth", "product_interest", "cart_intent", "recent_visit", "none")
NO_CHURN_DRIVER = len(CHURN_DRIVERS) - 1
NO_CONVERT_DRIVER = len(CONVERT_DRIVERS) - 1


def churn_driver_of(complaints, inactivity, declining, low, threshold: float) -> np.ndarray:
    """Index into CHURN_DRIVERS of the largest log-hazard term, 'none' when none reaches ``threshold``."""
    terms = np.stack([complaints, inactivity, declining, low])
    best = terms.argmax(axis=0).astype(np.int8)
    best[terms.max(axis=0) < threshold] = NO_CHURN_DRIVER
    return best


def week_truth(sim: Simulation, day: int, block: int = 16_384, pool: ThreadPoolExecutor | None = None):
    """Exact p_churn, p_convert and drivers at the start of ``day`` of every customer who joined before."""
    n = int(np.searchsorted(sim.traits.signup_day, day, side="left"))
    p_churn = np.ones(n)
    p_convert = np.zeros(n)
    churn_driver = sim.churn_driver[:n].copy()
    convert_driver = np.full(n, NO_CONVERT_DRIVER, dtype=np.int8)
    idx = np.flatnonzero(sim.alive[:n])
    if len(idx):
        pc_, pv_, cd_ = _truth_of(sim, day, idx, block, pool)
        p_churn[idx], p_convert[idx], churn_driver[idx] = pc_, pv_, cd_
        stage = sim.stage[idx]
        # Interested: browse_depth for deep browsers, recent_visit for short frequent visits.
        conv = np.select(
            [stage == INTERESTED, stage == PRODUCT, stage == CART],
            [np.where(sim.traits.deep_browser[idx], 0, 3), 1, 2],
            NO_CONVERT_DRIVER,
        )
        convert_driver[idx] = conv
    return p_churn, p_convert, churn_driver, convert_driver


def contact_truth(sim: Simulation, day: int, customers: np.ndarray, until: np.ndarray) -> np.ndarray:
    """Exact p_churn at the start of ``day`` of ``customers`` (numbers) had the campaigns' effects lasted
    until ``until`` (campaigns x customers): the truth of a contact before it is made. Churned: 1."""
    out = np.ones(len(customers))
    alive = sim.alive[customers]
    if alive.any():
        out[alive] = _truth_of(sim, day, customers[alive], until=until[:, alive])[0]
    return out


def _truth_of(sim: Simulation, day: int, idx: np.ndarray, block: int = 16_384,
              pool: ThreadPoolExecutor | None = None, until: np.ndarray | None = None):
    """p_churn, p_convert and the churn driver of alive customers ``idx`` (ascending) at the start of ``day``."""
    # Complaint hazard changes already scheduled inside the window (from orders placed before today).
    pos = np.full(sim.n, -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx))
    events = []
    for d in range(CHURN_HORIZON_DAYS):
        for cust, delta in sim.complaint_events(day + d):
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
        sub_until = None if until is None else until[:, s : s + block]
        results[s] = _truth_block(sim, day, sub, ev_pos[lo:hi] - s, ev_day[lo:hi], ev_delta[lo:hi], sub_until)

    if pool is not None and len(starts) > 1:
        list(pool.map(run, starts))
    else:
        for s in starts:
            run(s)
    parts = [results[s] for s in starts]
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))


def _truth_block(sim: Simulation, day, sub, ev_pos, ev_day, ev_delta, until=None):
    """Forward recursion over the 60 days after ``day`` along the no-order path, for customers ``sub``.

    ``mass[s]`` is P(alive, in stage s, no order yet). Each day mirrors ``Simulation.step``: churn hazard,
    stage move, then the chance of an order (web visit that buys, or offline). Everything it uses is fixed
    by the state at ``day``: the gap grows by one a day, activity changes on Mondays, complaint changes are
    already in the calendar. float32 keeps the block in cache; the error is ~1e-6.
    """
    f, c = sim.cfg.funnel, sim.cfg.churn
    k = len(sub)
    f32 = np.float32
    gap0 = (day - sim.last_order_day[sub]).astype(f32)
    comp = sim.complaint_term[sub].astype(f32)
    comp_events = np.zeros((CHURN_HORIZON_DAYS, k), dtype=f32)
    if len(ev_pos):
        np.add.at(comp_events, (ev_day, ev_pos), ev_delta.astype(f32))
    mass = np.zeros((N_STAGES, k), dtype=f32)
    mass[sim.stage[sub], np.arange(k)] = 1.0
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
        new_key = (sim.monday_of(u), sim.shifted(u))
        if new_key != key:  # activity changes on Mondays, multipliers at the shift date
            key = new_key
            r = sim.rates(u, sub)
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
        if sim.effect_until is not None:  # the campaigns' contacts, as in Simulation.step
            tmp *= sim.effect_factor(u, sub, until).astype(f32)
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
    driver = churn_driver_of(
        acc_comp / horizon,
        acc_gap / horizon,
        acc_decline / horizon,
        c.low_engagement * sim.traits.low_engagement[sub],
        c.driver_threshold,
    )
    p_churn = np.clip(1.0 - ordered.astype(np.float64), 0.0, 1.0)
    return p_churn, np.clip(p_convert.astype(np.float64), 0.0, 1.0), driver
