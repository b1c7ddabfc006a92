"""Ground truth: weekly rows with the fixed driver vocabulary, calibrated against realised outcomes, and
an oracle ranking well above chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.synthetic.truth import CHURN_DRIVERS, CONVERT_DRIVERS


def test_ground_truth_is_weekly_bounded_and_uses_the_vocabulary(sample):
    truth = pd.read_parquet(sample.files["ground_truth"])
    customers = pd.read_parquet(sample.files["customers"]).set_index("customer_id")
    assert truth.p_churn.between(0, 1).all() and truth.p_convert.between(0, 1).all()
    assert set(truth.churn_driver) <= set(CHURN_DRIVERS) and set(truth.convert_driver) <= set(CONVERT_DRIVERS)
    # Every non-trivial driver occurs.
    assert set(truth.churn_driver) == set(CHURN_DRIVERS)
    assert set(truth.convert_driver) == set(CONVERT_DRIVERS)
    as_of = truth.as_of.drop_duplicates().sort_values()
    assert (as_of.dt.weekday == 0).all() and (as_of == as_of.dt.normalize()).all()
    assert as_of.diff().dropna().eq(pd.Timedelta(days=7)).all()
    assert len(as_of) == 28  # 200 days ending 2026-10-31 hold 28 Mondays
    # One row per customer who signed up before as_of, and only those.
    signup = customers.loc[truth.customer_id, "signup_at"].to_numpy()
    assert (signup < truth.as_of.to_numpy()).all()
    last = truth[truth.as_of == as_of.iloc[-1]]
    assert len(last) == (customers.signup_at < as_of.iloc[-1]).sum()
    assert not truth.duplicated(["customer_id", "as_of"]).any()
    # A customer who has churned never orders again: p_churn 1, p_convert 0.
    gone = truth[truth.p_churn >= 1 - 1e-9]
    assert len(gone) > 0 and (gone.p_convert <= 1e-9).all()


@pytest.mark.behaviour
def test_ground_truth_is_calibrated_against_realised_outcomes(labelled):
    # The truth is the simulation's own probability: on average it must match what happened.
    assert len(labelled) > 30_000
    assert abs(labelled.p_churn.mean() - (1 - labelled.order_60d.mean())) < 0.02
    assert abs(labelled.p_convert.mean() - labelled.order_14d.mean()) < 0.02
    # ... and per decile of p_churn, not only overall.
    deciles = pd.qcut(labelled.p_churn, 10, duplicates="drop")
    by_decile = labelled.groupby(deciles, observed=True).agg(
        p=("p_churn", "mean"), realised=("order_60d", "mean")
    )
    assert (by_decile.p - (1 - by_decile.realised)).abs().max() < 0.06


def roc_auc_score(labels, scores) -> float:
    """AUC by the rank-sum (Mann-Whitney) formula; avoids importing scikit-learn for one number."""
    labels = np.asarray(labels, dtype=bool)
    ranks = pd.Series(np.asarray(scores)).rank().to_numpy()
    positives, negatives = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)


@pytest.mark.behaviour
def test_truth_ranks_outcomes_well(labelled):
    # The oracle's ranking is far better than chance: the ceiling later models are measured against.
    assert roc_auc_score(~labelled.order_60d, labelled.p_churn) > 0.75
    assert roc_auc_score(labelled.order_14d, labelled.p_convert) > 0.75
    assert np.isfinite(labelled[["p_churn", "p_convert"]].to_numpy()).all()
