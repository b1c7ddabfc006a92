"""One training end to end on the session's generated business (real labels, Feast features): MLflow
parent run with nested trials, metrics, plots, lineage, registration as challenger, calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.specs import load_spec
from training.champion import load_model_version

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "recall_top10")


def test_training_logs_parent_run_with_nested_trials(trained_home):
    import mlflow

    _, results = trained_home
    result = results["churn"]
    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    for name in METRICS:
        assert f"test_{name}" in parent.data.metrics and f"validation_{name}" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == 3  # small_config: 3 trials
    assert {c.data.tags["state"] for c in children} <= {"complete", "pruned"}
    assert all("learning_rate" in c.data.params for c in children)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {f"plots/{n}.png" for n in ("shap_summary", "calibration_curve", "cumulative_gain",
                                                    "feature_importance")}
    lineage = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/lineage.json")
    assert lineage["feature_service"] == load_spec("churn").feature_service
    assert len(lineage["training_set_sha256"]) == 64
    assert lineage["test_rows"] == result.test_metrics["rows"]
    assert max(lineage["train_cutoffs"]) < min(lineage["validation_cutoffs"]) < lineage["test_cutoffs"][0]
    assert parent.data.params["feature_service"] == load_spec("churn").feature_service


def test_model_is_registered_as_challenger_with_contract_tags(trained_home):
    from core.specs import load_spec
    from features.retrieval import model_feature_names

    _, results = trained_home
    for name, result in results.items():
        model = load_model_version(name, alias="challenger")
        assert model.version == result.version
        assert model.feature_service == load_spec(name).feature_service
        assert model.feature_names == model_feature_names(model.feature_service)
        # The spec's isotonic calibration, or Platt where validation has too few rows for it.
        spec = load_spec(name).calibration
        enough = result.lineage["validation_rows"] >= spec.isotonic_min_rows
        assert json.loads(model.tags["calibration"])["method"] == (spec.method if enough else "platt")
        assert model.holdout_auc == pytest.approx(result.test_metrics["roc_auc"], abs=1e-6)
        assert model.tags["holdout_cutoff"] == result.lineage["test_cutoffs"][0]


def test_churn_model_beats_chance_and_is_calibrated(trained_home):
    _, results = trained_home
    m = results["churn"].test_metrics
    assert m["roc_auc"] > 0.75
    # Calibrated on validation: the test rows' probabilities match the observed rates closely.
    assert m["ece"] < 0.08
    assert m["brier"] < m["label_rate"] * (1 - m["label_rate"])  # better than predicting the base rate
    assert m["lift_top10"] > 1.0


def test_mean_probability_tracks_label_rate(trained_home):
    from training.promotion import load_holdout

    # Conversion's test split is one cutoff of ~150 rows: its label rate alone has a standard error of ~0.04.
    tolerance = {"churn": 0.05, "conversion": 0.10}
    for name, result in trained_home[1].items():
        model = load_model_version(name, alias="challenger")
        holdout = load_holdout(result.run_id)
        assert len(holdout) == result.test_metrics["rows"]
        p = model.predict_proba(holdout[model.feature_names])
        assert abs(p.mean() - holdout["label"].mean()) < tolerance[name], name
        assert np.all((p > 0) & (p < 1))
        # The logged test metrics are those of the registered model on the logged holdout.
        assert model.holdout_auc == pytest.approx(roc_auc_score(holdout["label"], p), abs=1e-6)


def test_boost_from_must_be_a_probability_input_of_the_service(project_home):
    """The spec's boost_from: fitted on the train split; not an input, or not within [0, 1], is an error
    naming the spec file and the feature."""
    from types import SimpleNamespace

    from core.errors import ConfigError
    from core.specs import load_spec
    from training.labels import TRAIN
    from training.train import boost_from

    frame = pd.DataFrame({"btyd_p_no_order": [0.2, 0.9, np.nan], "days_since_last_order": [3.0, 40.0, 9.0]})
    ts = SimpleNamespace(feature_names=list(frame.columns), X=lambda split: frame if split == TRAIN else None)
    spec = load_spec("churn")
    start = boost_from(spec, ts)
    assert start.feature == "btyd_p_no_order"
    assert start.fill == pytest.approx(np.mean(np.log([0.2 / 0.8, 0.9 / 0.1])))
    assert boost_from(spec.model_copy(update={"boost_from": None}), ts) is None
    with pytest.raises(ConfigError, match=r"churn\.yaml.*'tenure_days' is not an input"):
        boost_from(spec.model_copy(update={"boost_from": "tenure_days"}), ts)
    with pytest.raises(ConfigError, match=r"'days_since_last_order' is not a probability"):
        boost_from(spec.model_copy(update={"boost_from": "days_since_last_order"}), ts)


def test_a_regression_boosts_from_the_log_of_an_amount_at_the_labels_level(project_home):
    """The value spec's boost_from: log(amount) + log(sum of labels / sum of the amount) over the train rows
    where the amount is known (it may count over another horizon); a negative amount is an error."""
    from types import SimpleNamespace

    from core.errors import ConfigError
    from core.specs import load_spec
    from training.labels import TRAIN
    from training.train import boost_from

    frame = pd.DataFrame({"btyd_expected_spend": [10.0, 30.0, np.nan], "spend_365d": [-5.0, 40.0, 0.0]})
    y = pd.Series([40.0, 80.0, 500.0])  # 3x the known amounts; the row without one does not count
    ts = SimpleNamespace(feature_names=list(frame.columns), X=lambda split: frame if split == TRAIN else None,
                         y=lambda split: y if split == TRAIN else None)
    spec = load_spec("value")
    start = boost_from(spec, ts)
    assert (start.feature, start.link) == ("btyd_expected_spend", "log")
    assert start.shift == pytest.approx(np.log(3.0))
    offsets = start.offset(frame.to_numpy(), list(frame.columns))
    assert offsets[:2] == pytest.approx(np.log([30.0, 90.0]))
    assert offsets[2] == pytest.approx(start.fill) and start.fill == pytest.approx(np.log([30.0, 90.0]).mean())
    with pytest.raises(ConfigError, match=r"value\.yaml.*'spend_365d' is not an amount"):
        boost_from(spec.model_copy(update={"boost_from": "spend_365d"}), ts)
