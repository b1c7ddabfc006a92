"""The champion gate: a worse model never becomes champion; rollback; the audit log.

The models are LightGBM boosters of known relative quality, fitted on the churn training set of the
session's generated business (real labels, Feast features) and logged with its test split as holdout, the
way train_model does: 'good' uses every feature, 'weak' only days since the last order, 'bad' learns
shuffled labels."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.errors import PropensityError
from tests.training.business import point_env_at
from tests.training.conftest import small_config
from training.champion import Calibration, load_model_version, register_booster
from training.labels import TEST, TRAIN
from training.promotion import history, promote, rollback

WEAK_FEATURE = "days_since_last_order"


@pytest.fixture(scope="module")
def rows(_trained_session):
    """The churn training set of the session business (read once; each test registers into its own
    fresh project home)."""
    from training.train import build_training_set

    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, _trained_session[0])
        return build_training_set(small_config("churn"))


def fit(X: pd.DataFrame, y: np.ndarray, rounds: int = 30) -> lgb.Booster:
    return lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), rounds)


def log_holdout(holdout: pd.DataFrame) -> None:
    """The holdout artifact of the active run, as train_model logs it."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        holdout.to_parquet(Path(tmp) / "holdout.parquet", index=False)
        mlflow.log_artifact(str(Path(tmp) / "holdout.parquet"), "holdout")


def register_trained(ts, quality: str, drop: tuple[str, ...] = ()) -> str:
    """Fit a 'good', 'weak' or 'bad' booster on the train split (without the ``drop`` features), log the
    test split as holdout and register the model as challenger."""
    import mlflow

    from training.tracking import ensure_experiment

    features = [f for f in ts.feature_names if f not in drop]
    X, y = ts.X(TRAIN)[features], ts.y(TRAIN)
    if quality == "bad":
        y = np.random.default_rng(3).permutation(y)
    if quality == "weak":
        X = X.assign(**{c: 0.0 for c in features if c != WEAK_FEATURE})
    booster = fit(X, y)
    holdout = ts.part(TEST)[["event_timestamp", "label", *features]].reset_index(drop=True)
    with mlflow.start_run(experiment_id=ensure_experiment("churn")):
        log_holdout(holdout)
        return register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1", calibration=Calibration(),
                                extra_tags={"holdout_cutoff": str(holdout["event_timestamp"].iloc[0].date())})


def champion_version() -> str:
    return load_model_version("churn", alias="champion").version


def test_gate_rollback_and_history(project_home, rows, monkeypatch):
    monkeypatch.setenv("PROPENSITY_USER", "tester")
    weak = register_trained(rows, "weak")
    first = promote("churn", margin=0.002, metric="roc_auc")
    assert first.promoted and first.reason == "no champion yet" and champion_version() == weak

    bad = register_trained(rows, "bad")
    rejected = promote("churn", margin=0.002, metric="roc_auc")
    assert not rejected.promoted and rejected.decision == "rejected"
    assert rejected.challenger_score < rejected.champion_score
    assert champion_version() == weak  # a worse model never becomes champion
    assert load_model_version("churn", alias="challenger").version == bad

    good = register_trained(rows, "good")
    won = promote("churn", margin=0.002, metric="roc_auc")
    assert won.promoted and won.challenger_score >= won.champion_score + 0.002
    assert champion_version() == good

    # A huge margin blocks even a better model.
    assert promote("churn", margin=0.5, metric="roc_auc").decision == "unchanged"  # already champion

    back = rollback("churn")
    assert (back.champion_version, back.challenger_version) == (good, weak)
    assert champion_version() == weak
    with pytest.raises(PropensityError, match="no previous champion"):
        rollback("churn")

    log = history("churn")
    assert [e["decision"] for e in log] == ["promoted", "rejected", "promoted", "unchanged", "rolled_back"]
    assert all(e["who"] == "tester" and e["when"] for e in log)
    assert log[1]["challenger_score"] == pytest.approx(rejected.challenger_score)
    assert log[1]["champion_score"] == pytest.approx(rejected.champion_score)


def test_margin_blocks_a_slightly_better_model(project_home, rows):
    register_trained(rows, "weak")
    promote("churn", margin=0.0, metric="roc_auc")
    register_trained(rows, "good")
    decision = promote("churn", margin=0.9, metric="roc_auc")
    assert decision.decision == "rejected" and decision.challenger_score > decision.champion_score
    assert history("churn")[-1]["margin"] == 0.9


def test_promote_without_challenger_is_a_clear_error(project_home):
    with pytest.raises(PropensityError, match="no 'challenger' version"):
        promote("churn", margin=0.0, metric="roc_auc")


def test_champion_on_another_feature_service_blocks_the_gate_unless_forced(project_home, rows, monkeypatch):
    """A champion that reads features the challenger's holdout lacks cannot be scored on the same rows:
    promote stops with an error naming the features; --force promotes and the audit log says so."""
    import mlflow

    from training.promotion import IncomparableModels
    from training.tracking import ensure_experiment

    monkeypatch.setenv("PROPENSITY_USER", "tester")
    # The champion: every feature, on another feature service.
    booster = fit(rows.X(TRAIN), rows.y(TRAIN), 20)
    with mlflow.start_run(experiment_id=ensure_experiment("churn")):
        log_holdout(rows.part(TEST)[["event_timestamp", "label", *rows.feature_names]].reset_index(drop=True))
        old = register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v0", calibration=Calibration())
    assert promote("churn", margin=0.0, metric="roc_auc").promoted

    new = register_trained(rows, "good", drop=("orders_365d",))  # holdout without orders_365d
    with pytest.raises(IncomparableModels, match=r"needs feature\(s\) orders_365d.*--force"):
        promote("churn", margin=0.0, metric="roc_auc")
    assert champion_version() == old  # nothing moved
    assert [e["decision"] for e in history("churn")] == ["promoted"]

    forced = promote("churn", margin=0.0, metric="roc_auc", force=True)
    assert forced.promoted and forced.champion_score is None and "forced by tester" in forced.reason
    assert champion_version() == new
    assert history("churn")[-1]["reason"] == forced.reason
