"""Latent customer traits: drawn once per customer, never written to the exports, they drive everything the
simulation does (docs/generator.md, "Customers and their latent traits")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.config import PopulationConfig

REGIONS = ("north", "south", "east", "west", "central")
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "email")
N_PRODUCT_CATEGORIES = 40
PRODUCTS_PER_CATEGORY = 50

# Hidden purchase-intent stages: latent like the traits, but they move day by day (simulate.py).
IDLE, INTERESTED, PRODUCT, CART = 0, 1, 2, 3
N_STAGES = 4


@dataclass(frozen=True)
class Traits:
    """One array per trait, indexed by customer number (ids follow signup order)."""

    signup_day: np.ndarray  # days from the window start, negative before it; sorted
    signup_sec: np.ndarray
    activity: np.ndarray
    intent: np.ndarray
    price_sensitivity: np.ndarray
    value: np.ndarray
    deep_browser: np.ndarray
    offline_rate: np.ndarray
    decline_start: np.ndarray
    decline_rate: np.ndarray
    complaint_prob: np.ndarray
    preferred_hour: np.ndarray
    favourite_category: np.ndarray
    region: np.ndarray
    acquisition: np.ndarray
    low_engagement: np.ndarray
    purchase_factor: np.ndarray


def draw_traits(rng: np.random.Generator, n: int, days: int, p: PopulationConfig) -> Traits:
    """Draw the population. The order of the draws is part of the output: changing it changes every file."""
    pre = rng.random(n) < p.pre_window_share
    signup_day = np.where(pre, -rng.integers(1, p.pre_window_max_days + 1, n), rng.integers(0, days, n))
    order = np.argsort(signup_day, kind="stable")  # ids follow signup order: joined customers are a prefix
    signup_day = signup_day[order].astype(np.int32)
    signup_sec = rng.integers(6 * 3600, 23 * 3600, n)
    activity = rng.lognormal(0.0, p.activity_sigma, n)
    intent = rng.lognormal(0.0, p.intent_sigma, n)
    price_sensitivity = rng.beta(2.0, 3.0, n)
    value = rng.lognormal(math.log(p.value_median), p.value_sigma, n)
    deep_browser = rng.random(n) < p.deep_browser_share
    offline_rate = np.where(
        rng.random(n) < p.offline_share, p.offline_daily_rate * rng.lognormal(0, 0.5, n), 0.0
    )
    decliner = rng.random(n) < p.decliner_share
    decline_start = np.where(decliner, signup_day + rng.integers(30, 500, n), np.iinfo(np.int32).max // 2)
    decline_rate = np.where(decliner, 1.0 / rng.uniform(p.decline_days_min, p.decline_days_max, n), 0.0)
    complaint_prob = np.clip(p.complaint_prob_median * rng.lognormal(0, 0.7, n), 0, 0.6)
    preferred_hour = rng.choice(np.array([9.0, 13.0, 20.0]), n, p=[0.3, 0.3, 0.4])
    favourite_category = rng.integers(0, N_PRODUCT_CATEGORIES, n)
    region = rng.integers(0, len(REGIONS), n)
    # Price-sensitive customers come more often through paid search; a weak, realistic link.
    paid = rng.random(n) < 0.15 + 0.4 * price_sensitivity
    acquisition = np.where(paid, 1, rng.choice(np.array([0, 2, 3, 4]), n, p=[0.5, 0.2, 0.15, 0.15]))
    return Traits(
        signup_day=signup_day,
        signup_sec=signup_sec,
        activity=activity,
        intent=intent,
        price_sensitivity=price_sensitivity,
        value=value,
        deep_browser=deep_browser,
        offline_rate=offline_rate,
        decline_start=decline_start,
        decline_rate=decline_rate,
        complaint_prob=complaint_prob,
        preferred_hour=preferred_hour,
        favourite_category=favourite_category,
        region=region,
        acquisition=acquisition,
        # Below-median activity raises the churn hazard (low engagement); constant per customer.
        low_engagement=np.maximum(0.0, -np.log(activity)),
        # Price sensitivity lowers the chance a visit ends in an order and the order value.
        purchase_factor=(1.2 - 0.6 * price_sensitivity) * intent**0.3,
    )
