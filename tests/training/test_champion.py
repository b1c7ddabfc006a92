"""Registering a booster and loading it back by alias, as serving does."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.errors import PropensityError
from training.champion import Calibration, load_model_version, register_booster


def tiny_booster(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["days_since_last_order", "orders_90d", "complaints_90d"])
    y = (X["days_since_last_order"] + rng.normal(size=400) > 0).astype(int)
    return lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 15), X


def test_register_and_load_by_alias(project_home):
    booster, X = tiny_booster()
    cal = Calibration(a=0.8, b=-0.3)
    version = register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1", calibration=cal, holdout_auc=0.81,
                               input_example=X.head(3))
    model = load_model_version("churn", alias="challenger")
    assert (model.name, model.version, model.feature_service) == ("churn", version, "churn_v1")
    assert model.feature_names == list(X.columns)
    assert model.holdout_auc == pytest.approx(0.81)
    assert json.loads(model.tags["calibration"]) == {"method": "platt", "a": 0.8, "b": -0.3}
    raw = booster.predict(X.to_numpy(), raw_score=True)
    np.testing.assert_allclose(model.predict_proba(X), 1 / (1 + np.exp(-(0.8 * raw - 0.3))), rtol=1e-12)
    contrib = model.contributions(X.head(20))
    assert contrib.shape == (20, 4)  # features + base value
    np.testing.assert_allclose(contrib.sum(axis=1), raw[:20], rtol=1e-9, atol=1e-9)
    # Column order is taken from the model, not from the caller's frame.
    np.testing.assert_allclose(model.predict_proba(X[X.columns[::-1]]), model.predict_proba(X))


def test_logged_model_has_no_customer_ids_and_allows_missing_values(project_home):
    import mlflow

    booster, X = tiny_booster()
    register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1", input_example=X.head(2))
    model = load_model_version("churn", alias="challenger")
    info = mlflow.models.get_model_info(f"models:/churn/{model.version}")
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == list(X.columns)
    assert all(c["type"] == "double" for c in inputs)
    assert not any("customer" in c["name"] for c in inputs)
    X_nan = X.head(3).copy()
    X_nan.iloc[0, :] = np.nan
    assert np.isfinite(model.predict_proba(X_nan)).all()


def test_missing_alias_and_missing_columns_are_clear_errors(project_home):
    with pytest.raises(PropensityError, match="no registered model 'churn' with alias 'champion'"):
        load_model_version("churn")
    booster, X = tiny_booster()
    register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1", alias="champion")
    model = load_model_version("churn")
    with pytest.raises(PropensityError, match="complaints_90d"):
        model.predict_proba(X.drop(columns=["complaints_90d"]))


def test_boost_from_starts_at_the_features_log_odds_and_explains_it_as_that_feature():
    """A model with ``boost_from``: raw score = log-odds(feature) + trees, its contributions still sum to
    the raw score, and the start's deviation from the fill is the feature's own contribution."""
    from training.champion import TAG_BOOST_FROM, BoostFrom, LoadedModel

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"p_prior": rng.uniform(0.05, 0.95, 500), "other": rng.normal(size=500)})
    X.loc[:9, "p_prior"] = np.nan  # missing: the fill, so no contribution
    logit = np.log(X["p_prior"] / (1 - X["p_prior"]))
    y = (rng.random(500) < 1 / (1 + np.exp(-(logit.fillna(0) + X["other"])))).astype(int)
    start = BoostFrom.fit("p_prior", X["p_prior"].to_numpy())
    init = start.offset(X.to_numpy(), list(X.columns))
    assert start.fill == pytest.approx(logit.mean()) and (init[:10] == start.fill).all()
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(X, y, init_score=init), 10)
    model = LoadedModel("churn", "1", booster, list(X.columns), "churn_v2", Calibration(),
                        tags={TAG_BOOST_FROM: start.to_json()})
    trees = booster.predict(X.to_numpy(), raw_score=True)
    np.testing.assert_allclose(model.raw_score(X), trees + init, rtol=1e-12)
    contrib = model.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), trees + init, rtol=1e-9, atol=1e-9)
    plain = booster.predict(X.to_numpy(), pred_contrib=True)
    np.testing.assert_allclose(contrib[:, 0] - plain[:, 0], init - start.fill, atol=1e-12)
    np.testing.assert_allclose(contrib[:, 1], plain[:, 1])  # the other feature keeps its own part
    assert BoostFrom.from_json(start.to_json()) == start and BoostFrom.from_json(None) is None


def test_a_regression_boosts_from_the_log_amount_and_predicts_through_it():
    """A Tweedie model with ``boost_from``: amount = exp(log(feature) + shift + trees), the same from
    ``predict`` and from its contributions; an old tag without a link reads as log-odds."""
    from training.champion import TAG_BOOST_FROM, TAG_TASK, BoostFrom, LoadedModel

    rng = np.random.default_rng(2)
    X = pd.DataFrame({"expected": rng.gamma(2.0, 50.0, 400), "other": rng.normal(size=400)})
    X.loc[:4, "expected"] = np.nan
    y = rng.poisson(3.0 * np.nan_to_num(X["expected"], nan=100.0) / 50.0) * 50.0
    start = BoostFrom.fit("expected", X["expected"].to_numpy(), link="log", y=y)
    init = start.offset(X.to_numpy(), list(X.columns))
    assert start.shift == pytest.approx(np.log(y[5:].sum() / X["expected"][5:].sum()))
    booster = lgb.train({"objective": "tweedie", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(X, y, init_score=init), 10)
    model = LoadedModel("value", "1", booster, list(X.columns), "value_v1", Calibration(),
                        tags={TAG_BOOST_FROM: start.to_json(), TAG_TASK: "regression"})
    amount = np.exp(booster.predict(X.to_numpy(), raw_score=True) + init)
    np.testing.assert_allclose(model.predict(X), amount, rtol=1e-12)
    np.testing.assert_allclose(model.from_contributions(model.contributions(X)), amount, rtol=1e-9)
    assert BoostFrom.from_json(start.to_json()) == start
    assert BoostFrom.from_json('{"feature": "p", "fill": 0.5}') == BoostFrom("p", 0.5, "logit", 0.0)


def test_never_is_read_as_one_day_past_the_oldest_in_training_and_in_scoring():
    """``tuning.never_as_oldest``: a missing day count ("never viewed a product") is one day past the
    train split's largest, in the training set's model inputs and in the loaded version's matrix alike, so
    a monotone -1 constraint keeps "never" at or below any first time, and the frame keeps its NaN."""
    from training.champion import TAG_NEVER, LoadedModel
    from training.dataset import TrainingSet

    rng = np.random.default_rng(2)
    n = 2_000
    days = rng.uniform(0, 60, n)
    never = rng.random(n) < 0.3
    # In this data "never" buys MORE often than a recent viewer: unconstrained, a model would learn it.
    p = np.where(never, 0.7, 0.6 - days / 200)
    frame = pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)],
                          "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                          "label": (rng.random(n) < p).astype(np.int64),
                          "split": np.where(np.arange(n) < 1500, "train", "test"),
                          "days_since_last_product_view": np.where(never, np.nan, days),
                          "other": rng.normal(size=n)})
    names = ["days_since_last_product_view", "other"]
    ts = TrainingSet("conversion_v1", names, frame).with_never_fill(["days_since_last_product_view"])
    top = frame.loc[frame["split"] == "train", "days_since_last_product_view"].max()
    assert ts.never_fill == {"days_since_last_product_view": np.floor(top) + 1}
    assert ts.frame["days_since_last_product_view"].isna().sum() == never.sum()  # the data keeps "never"
    X = ts.X("train")
    assert X["days_since_last_product_view"].notna().all()

    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "monotone_constraints": [-1, 0]},
                        lgb.Dataset(X, ts.y("train")), 30)
    model = LoadedModel("conversion", "1", booster, names, "conversion_v1", Calibration(),
                        tags={TAG_NEVER: json.dumps(ts.never_fill)})
    raw = frame[names].copy()
    np.testing.assert_array_equal(model.matrix(raw), raw.fillna(ts.never_fill).to_numpy())  # scoring reads as training
    np.testing.assert_array_equal(model.matrix(raw)[:1500], X.to_numpy())
    arrays = raw.to_numpy()
    model.matrix(arrays)
    assert np.isnan(arrays[:, 0]).sum() == never.sum()  # the caller's array is not written into
    # Every "never" row, given a first view at any day seen in training, scores at least as high.
    first = raw[never].copy()
    for day in (0.0, 30.0, float(np.floor(top))):
        first["days_since_last_product_view"] = day
        assert (model.predict_proba(first) >= model.predict_proba(raw[never]) - 1e-12).all(), day
