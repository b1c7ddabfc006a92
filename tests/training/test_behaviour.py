"""Model behaviour on a model trained from synthetic events whose mechanics are known: complaints and a
longer gap since the last order raise churn; deeper browsing raises conversion. Changing one input in the
right direction must never lower the average predicted risk."""

from __future__ import annotations

import pytest

from tests.training.conftest import small_config
from training.champion import load_model_version
from training.train import build_training_set

pytestmark = pytest.mark.behaviour


def holdout(trained_home, model: str):
    _, source, _ = trained_home
    ts = build_training_set(small_config(model), source)
    return ts.X("test"), load_model_version(model, alias="challenger")


@pytest.mark.parametrize("column,steps", [("complaints_90d", [1, 2, 3]), ("days_since_last_order", [15, 30, 60])])
def test_more_complaints_or_longer_gap_never_lowers_churn_risk(trained_home, column, steps):
    X, model = holdout(trained_home, "churn")
    base = model.predict_proba(X).mean()
    previous = base
    for step in steps:
        shifted = X.assign(**{column: X[column].fillna(0) + step})
        mean = model.predict_proba(shifted).mean()
        assert mean >= previous - 1e-9, f"{column} +{step}: mean churn risk fell {previous:.4f} -> {mean:.4f}"
        previous = mean
    assert previous > base  # the feature matters at all


def test_deeper_browsing_never_lowers_conversion(trained_home):
    X, model = holdout(trained_home, "conversion")
    base = model.predict_proba(X).mean()
    previous = base
    for extra in (2, 4, 8):
        deeper = X.assign(max_session_depth_30d=X["max_session_depth_30d"] + extra,
                          cart_views_30d=X["cart_views_30d"] + (extra >= 4))
        mean = model.predict_proba(deeper).mean()
        assert mean >= previous - 1e-9, f"depth +{extra}: mean conversion fell {previous:.4f} -> {mean:.4f}"
        previous = mean
    # No "the feature matters" check here: with the small trees of the search space, 3 trials on 1000
    # synthetic customers may stop after a few trees that never split on browse depth (seen: 3 trees).
    # test_behaviour_generated.py checks that on the generator's data, where the signal is stronger.
    assert previous >= base
