"""Latent traits: drawn in a fixed order from the seed, customer numbers follow signup order."""

from __future__ import annotations

import numpy as np

from pipelines.synthetic.config import PopulationConfig
from pipelines.synthetic.traits import draw_traits


def test_traits_follow_the_seed_and_signup_order():
    p = PopulationConfig()
    a = draw_traits(np.random.default_rng(5), 2000, 100, p)
    b = draw_traits(np.random.default_rng(5), 2000, 100, p)
    assert all(np.array_equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    # Customers who joined by a day are a prefix of the customer numbers (the day loop relies on it).
    assert (np.diff(a.signup_day) >= 0).all()
    assert a.signup_day.min() >= -p.pre_window_max_days and a.signup_day.max() < 100
    assert abs((a.signup_day < 0).mean() - p.pre_window_share) < 0.05
    assert 0.9 < np.median(a.activity) < 1.1  # lognormal with median 1
    assert ((a.price_sensitivity > 0) & (a.price_sensitivity < 1)).all()
