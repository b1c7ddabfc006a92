"""One training end to end on synthetic events: MLflow parent run with nested trials, metrics, plots,
lineage, registration as challenger, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.champion import load_model_version

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "recall_top10")


def test_training_logs_parent_run_with_nested_trials(trained_home):
    import mlflow

    _, _, results = trained_home
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
    assert lineage["feature_service"] == "churn_v1"
    assert len(lineage["training_set_sha256"]) == 64
    assert lineage["test_rows"] == result.test_metrics["rows"]
    assert max(lineage["train_cutoffs"]) < min(lineage["validation_cutoffs"]) < lineage["test_cutoffs"][0]
    assert parent.data.params["feature_service"] == "churn_v1"


def test_model_is_registered_as_challenger_with_contract_tags(trained_home):
    _, source, results = trained_home
    for name, result in results.items():
        model = load_model_version(name, alias="challenger")
        assert model.version == result.version
        assert model.feature_service == f"{name}_v1"
        assert model.feature_names == source.feature_names(model.feature_service)
        assert json.loads(model.tags["calibration"])["method"] == "platt"
        assert model.holdout_auc == pytest.approx(result.test_metrics["roc_auc"], abs=1e-6)
        assert model.tags["holdout_cutoff"] == result.lineage["test_cutoffs"][0]


def test_churn_model_beats_chance_and_is_calibrated(trained_home):
    _, _, results = trained_home
    m = results["churn"].test_metrics
    assert m["roc_auc"] > 0.75
    # Calibrated on validation: the test rows' probabilities match the observed rates closely.
    assert m["ece"] < 0.08
    assert m["brier"] < m["label_rate"] * (1 - m["label_rate"])  # better than predicting the base rate
    assert m["lift_top10"] > 1.0


def test_mean_probability_tracks_label_rate(trained_home):
    from tests.training.conftest import small_config
    from training.train import build_training_set

    _, source, _ = trained_home
    ts = build_training_set(small_config("churn"), source)
    model = load_model_version("churn", alias="challenger")
    p = model.predict_proba(ts.X("test"))
    assert abs(p.mean() - ts.y("test").mean()) < 0.05
    assert np.all((p > 0) & (p < 1))


def test_same_data_gives_same_training_set_hash(events_home):
    from tests.training.conftest import small_config
    from training.train import build_training_set

    _, source = events_home
    a = build_training_set(small_config("churn"), source)
    b = build_training_set(small_config("churn"), source)
    assert a.fingerprint() == b.fingerprint()
    changed = a.frame.copy()
    changed.loc[0, "label"] = 1 - changed.loc[0, "label"]
    a.frame = changed
    assert a.fingerprint() != b.fingerprint()


def test_training_set_has_model_columns_only_as_float(events_home):
    from tests.training.conftest import small_config
    from training.train import build_training_set

    _, source = events_home
    ts = build_training_set(small_config("conversion"), source)
    X = ts.X("train")
    assert list(X.columns) == source.feature_names("conversion_v1")
    assert all(str(t) == "float64" for t in X.dtypes)
    assert "customer_id" not in X.columns
