"""Model behaviour on the whole holdout, of the session's models (trained on the generator's data through
the real chain: ingest, feature build, Feast, Optuna, MLflow): more complaints or a longer gap since the
last order never lower the average churn risk; deeper browsing never lowers the average conversion chance.

The generator's mechanics make these true (complaints and long gaps raise its churn hazard; product and
cart pages mark a customer closer to buying), and the models' monotone constraints should keep them so.
These shift single columns; test_behaviour_customers.py adds events to concrete customers instead, so
that every feature moves as it would in the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.champion import load_model_version
from training.promotion import load_holdout

pytestmark = pytest.mark.behaviour


def champion_and_holdout(model: str, with_rhythm_fit: bool = False):
    champion = load_model_version(model, alias="champion")
    holdout = load_holdout(champion.run_id)
    assert len(holdout) > 50
    X = holdout[champion.feature_names]
    if with_rhythm_fit:
        # The BG/NBD parameters of the holdout's snapshot (not model inputs), so a shifted last order
        # moves the BG/NBD readings through the product's own derivation too.
        from core.settings import project_paths
        from features.build import read_snapshot

        day = pd.Timestamp(holdout["event_timestamp"].iloc[0]).date()
        fit = read_snapshot(project_paths().feature_sources, day, "customer_rhythm").iloc[0]
        X = X.assign(**{p: fit[p] for p in ("btyd_r", "btyd_alpha", "btyd_a", "btyd_b")})
    return champion, X


def mean_risk_never_falls(model, X, shift, steps) -> tuple[float, float]:
    base = previous = float(model.predict_proba(X).mean())
    for step in steps:
        mean = float(model.predict_proba(shift(X, step)).mean())
        assert mean >= previous - 1e-9, f"step {step}: mean probability fell {previous:.5f} -> {mean:.5f}"
        previous = mean
    return base, previous


@pytest.mark.parametrize("columns", [("complaints_30d", "complaints_90d"), ("open_complaints",),
                                     ("high_severity_complaints_90d",)])
def test_more_complaints_never_lower_churn_risk(trained_home, columns):
    model, X = champion_and_holdout("churn")
    mean_risk_never_falls(model, X, lambda X, k: X.assign(**{c: X[c].fillna(0) + k for c in columns}), [1, 2, 3])


def last_order_earlier(X: pd.DataFrame, days: float) -> pd.DataFrame:
    """``X`` had each customer's last order been ``days`` earlier: the day count and what
    features.derived derives from it (the RFM recency score, the gap ratio) move together, computed by
    the product's own derivation, and so do the BG/NBD readings when ``X`` carries its fit's parameters.
    Windowed counts stay as they are."""
    from features.derived import SECONDS_PER_DAY, derive_arrays
    from features.settings import load_features_config

    # Half a day more than the day counts say: the orders fell within their day (a day count is floored),
    # which puts the order days where the BG/NBD summary counts them.
    columns = {"last_order_at": -(X["days_since_last_order"].to_numpy() + days + 0.5) * SECONDS_PER_DAY}
    if "days_since_first_order" in X.columns:
        columns["first_order_at"] = -(X["days_since_first_order"].to_numpy() + 0.5) * SECONDS_PER_DAY
    for name in ("orders_365d", "spend_365d", "orders_mean_gap_days", "order_days",
                 "btyd_r", "btyd_alpha", "btyd_a", "btyd_b"):
        if name in X.columns:
            columns[name] = X[name].to_numpy()
    derived = derive_arrays(columns, np.zeros(len(X)), load_features_config())
    moved = [c for c in ("days_since_last_order", "r_score", "gap_ratio", "btyd_p_alive", "btyd_expected_orders",
                                  "btyd_p_no_order") if c in X.columns]
    return X.assign(**{c: derived[c] for c in moved})


def test_longer_gap_never_lowers_churn_risk_and_matters(trained_home):
    model, X = champion_and_holdout("churn", with_rhythm_fit=True)
    assert X["days_since_last_order"].notna().all()  # churn rows are active buyers
    same = last_order_earlier(X, 0)  # the derivation reproduces Feast's
    moved = ["r_score", "btyd_p_alive", "btyd_expected_orders", "btyd_p_no_order"]
    np.testing.assert_allclose(same[moved], X[moved], rtol=1e-6)
    base, last = mean_risk_never_falls(model, X, last_order_earlier, [7, 30, 60, 120])
    assert last > base + 0.02  # the gap is the generator's main churn signal: the model must use it


def test_deeper_browsing_never_lowers_conversion(trained_home):
    model, X = champion_and_holdout("conversion")

    def deeper(X, extra):
        return X.assign(
            max_session_depth_30d=X["max_session_depth_30d"].fillna(0) + extra,
            pages_per_session_7d=X["pages_per_session_7d"].fillna(0) + extra,
            pages_per_session_30d=X["pages_per_session_30d"].fillna(0) + extra,
            product_views_30d=X["product_views_30d"].fillna(0) + extra,
            cart_views_30d=X["cart_views_30d"].fillna(0) + (extra >= 4),
        )

    base, last = mean_risk_never_falls(model, X, deeper, [1, 2, 4, 8])
    assert last > base  # browse depth carries signal in the generator, so it must move the score


@pytest.mark.parametrize("feature", ["tenure_days", "days_since_first_order", "lifetime_orders", "order_days"])
def test_a_customer_beyond_the_training_range_scores_like_the_most_extreme_inside(trained_home, feature):
    """Features that only grow with time: a customer older (or with more orders) than any seen in
    training is scored like the most extreme one inside the range, never pushed further by it."""
    model, X = champion_and_holdout("churn")
    if feature not in model.feature_names:
        pytest.skip(f"{feature} is not an input of {model.feature_service}")
    low, high = model.feature_ranges[feature]
    at_edge = model.predict_proba(X.assign(**{feature: high}))
    beyond = model.predict_proba(X.assign(**{feature: high * 3 + 365}))
    np.testing.assert_allclose(beyond, at_edge, rtol=0, atol=1e-12)
