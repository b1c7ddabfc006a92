"""The champion gate: a worse model never becomes champion; rollback; the audit log."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.errors import PropensityError
from training.champion import Calibration, load_model_version, register_booster
from training.promotion import history, promote, rollback

FEATURES = ["days_since_last_order", "orders_90d", "complaints_90d"]


def make_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    X["label"] = (X["days_since_last_order"] + 0.5 * X["complaints_90d"] + rng.normal(size=n) > 0).astype(int)
    return X


def register_trained(quality: str) -> str:
    """Train on informative ('good'), weak ('weak': one feature) or shuffled ('bad') labels; log a holdout
    the way train_model does and register as challenger."""
    import mlflow

    from training.tracking import ensure_experiment

    train, holdout = make_rows(2000, 1), make_rows(800, 2)
    X, y = train[FEATURES], train["label"].to_numpy()
    if quality == "bad":
        y = np.random.default_rng(3).permutation(y)
    if quality == "weak":
        X = X.assign(days_since_last_order=0.0)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 30)
    with mlflow.start_run(experiment_id=ensure_experiment("churn")):
        path = "holdout.parquet"
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            holdout.to_parquet(Path(tmp) / path, index=False)
            mlflow.log_artifact(str(Path(tmp) / path), "holdout")
        return register_booster(booster, "churn", feature_service="churn_v1", calibration=Calibration(),
                                extra_tags={"holdout_cutoff": "2026-08-30"})


def champion_version() -> str:
    return load_model_version("churn", alias="champion").version


def test_gate_rollback_and_history(project_home, monkeypatch):
    monkeypatch.setenv("PROPENSITY_USER", "tester")
    weak = register_trained("weak")
    first = promote("churn", margin=0.002, metric="roc_auc")
    assert first.promoted and first.reason == "no champion yet" and champion_version() == weak

    bad = register_trained("bad")
    rejected = promote("churn", margin=0.002, metric="roc_auc")
    assert not rejected.promoted and rejected.decision == "rejected"
    assert rejected.challenger_score < rejected.champion_score
    assert champion_version() == weak  # a worse model never becomes champion
    assert load_model_version("churn", alias="challenger").version == bad

    good = register_trained("good")
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


def test_margin_blocks_a_slightly_better_model(project_home):
    register_trained("weak")
    promote("churn", margin=0.0, metric="roc_auc")
    register_trained("good")
    decision = promote("churn", margin=0.9, metric="roc_auc")
    assert decision.decision == "rejected" and decision.challenger_score > decision.champion_score
    assert history("churn")[-1]["margin"] == 0.9


def test_promote_without_challenger_is_a_clear_error(project_home):
    with pytest.raises(PropensityError, match="no 'challenger' version"):
        promote("churn", margin=0.0, metric="roc_auc")


def test_champion_on_another_feature_service_blocks_the_gate_unless_forced(project_home, monkeypatch):
    """A champion that reads features the challenger's holdout lacks cannot be scored on the same rows:
    promote stops with an error naming the features; --force promotes and the audit log says so."""
    import mlflow

    from training.promotion import IncomparableModels
    from training.tracking import ensure_experiment

    monkeypatch.setenv("PROPENSITY_USER", "tester")
    # The champion: trained on one more feature than the challenger's holdout has.
    rows = make_rows(1500, 4).assign(orders_365d=lambda d: d["orders_90d"] * 3)
    wide = [*FEATURES, "orders_365d"]
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(rows[wide], rows["label"]), 20)
    with mlflow.start_run(experiment_id=ensure_experiment("churn")):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            rows.to_parquet(Path(tmp) / "holdout.parquet", index=False)
            mlflow.log_artifact(str(Path(tmp) / "holdout.parquet"), "holdout")
        old = register_booster(booster, "churn", feature_service="churn_v0", calibration=Calibration())
    assert promote("churn", margin=0.0, metric="roc_auc").promoted

    new = register_trained("good")  # holdout without orders_365d
    with pytest.raises(IncomparableModels, match=r"needs feature\(s\) orders_365d.*--force"):
        promote("churn", margin=0.0, metric="roc_auc")
    assert champion_version() == old  # nothing moved
    assert [e["decision"] for e in history("churn")] == ["promoted"]

    forced = promote("churn", margin=0.0, metric="roc_auc", force=True)
    assert forced.promoted and forced.champion_score is None and "forced by tester" in forced.reason
    assert champion_version() == new
    assert history("churn")[-1]["reason"] == forced.reason
