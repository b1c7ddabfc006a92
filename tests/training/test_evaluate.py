"""`propensity evaluate` on a tiny generated project: model AUC against the generator's oracle on the same
rows, next to the baselines; exact features at the ground truth's date; a clear error without ground truth."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from core.errors import DataError
from core.settings import project_paths
from pipelines.cli import app


def test_evaluate_prints_and_writes_oracle_ratio_and_baselines(trained_home):
    from features.build import built_dates

    before = built_dates(project_paths().feature_sources)
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 0, result.output
    assert "oracle AUC" in result.output and "RFM AUC" in result.output

    report = json.loads((project_paths().reports / "evaluation.json").read_text())
    assert [r["model"] for r in report] == ["churn", "conversion"]
    gt_dates = set(pd.read_parquet(project_paths().raw / "ground_truth.parquet")["as_of"].dt.strftime("%Y-%m-%d"))
    for r in report:
        assert r["as_of"] in gt_dates  # compared on a date the oracle is defined for
        assert r["rows"] > 50 and 0 < r["label_rate"] < 1
        assert r["oracle_ratio"] == pytest.approx(r["model_auc"] / r["oracle_auc"])
        # Even a 2-trial model on tiny data learns something, and the oracle beats chance clearly.
        assert r["oracle_auc"] > 0.7 and r["model_auc"] > 0.6
        assert 0.5 < r["recency_auc"] < 1 and 0 < r["rfm_auc"] < 1
        # Top causes of flagged customers checked against the generator's true driver, beside the
        # supervised ceiling (a classifier of the driver from the same features, cross-validated).
        assert 0 <= r["flagged"] <= r["rows"]
        if r["flagged"]:
            assert 0 <= r["driver_agreement"] <= 1 and 0 <= r["driver_agreement_snapshot"] <= 1
            expected = {"churn": "largest_cause_rise", "conversion": "shap_z_event"}[r["model"]]
            assert r["driver_method"] in (expected, "shap_sum")  # shap_sum: too few snapshots for a history
            if r["driver_ceiling"] == r["driver_ceiling"]:  # NaN when a driver class is too rare to fold
                assert 0 < r["driver_ceiling"] <= 1
                assert r["driver_ceiling_ratio"] == pytest.approx(r["driver_agreement"] / r["driver_ceiling"])
    assert "true driver" in result.output
    # The snapshot at the Monday was built in a scratch folder, not added to the project's feature store.
    assert built_dates(project_paths().feature_sources) == before


def test_feature_ceiling_is_trained_on_true_probabilities_and_split_into_ratios(trained_home):
    """`evaluate --ceiling`: the model's learner on the generator's true probabilities, from earlier
    ground-truth dates only (at least a horizon before the evaluated one), scored on the same rows."""
    from core.specs import load_spec
    from training.ceiling import ceiling_training_rows
    from training.evaluate import evaluate_model, read_ground_truth

    result = evaluate_model("churn", ceiling=True)
    assert 0.5 < result.ceiling_auc <= 1 and result.ceiling_rows > result.rows
    assert result.model_to_ceiling == pytest.approx(result.model_auc / result.ceiling_auc)
    assert result.ceiling_to_oracle == pytest.approx(result.ceiling_auc / result.oracle_auc)
    # On true probabilities the ceiling learns at least about as well as the model does from 0/1 labels.
    assert result.ceiling_auc > result.model_auc - 0.05

    from core.events import EventStore

    spec = load_spec("churn")
    gt = read_ground_truth(columns=(spec.ground_truth.probability,))
    as_of = pd.Timestamp(result.as_of, tz="UTC")
    rows = ceiling_training_rows(spec, gt, as_of, 0, EventStore(project_paths().events))
    assert (rows["event_timestamp"] + pd.Timedelta(days=spec.labels.horizon_days) <= as_of).all()
    assert rows["soft_label"].between(0, 1).all() and rows["soft_label"].nunique() > 10
    capped = ceiling_training_rows(spec, gt, as_of, 100, EventStore(project_paths().events))
    assert 100 <= len(capped) < len(rows) and capped["event_timestamp"].min() > rows["event_timestamp"].min()


def test_snapshot_built_for_a_date_equals_feast_retrieval(trained_home):
    """The scratch snapshot evaluate builds off the grid (features.exact) gives exactly what Feast returns
    on the grid."""
    from features.build import built_dates, snapshot_file
    from features.exact import built_for
    from training.dataset import FeastFeatureSource

    day = built_dates(project_paths().feature_sources)[-3]
    ids = pd.read_parquet(snapshot_file(project_paths().feature_sources, day), columns=["customer_id"])["customer_id"]
    entity = pd.DataFrame({"customer_id": ids.head(300).astype(str).to_numpy(),
                           "event_timestamp": pd.Timestamp(day, tz="UTC")})
    entity["event_timestamp"] = entity["event_timestamp"].astype("datetime64[us, UTC]")
    feast = FeastFeatureSource()
    names = feast.feature_names("churn_v1")
    built = built_for(entity, "churn_v1", day)[names].reset_index(drop=True)
    via_feast = feast.historical(entity, "churn_v1")[names]
    pd.testing.assert_frame_equal(built.astype("float64"), via_feast.astype("float64"), check_exact=False, rtol=1e-9)


def test_evaluate_without_ground_truth_is_a_clear_error(project_home):
    result = CliRunner().invoke(app, ["evaluate", "churn"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    message = str(result.exception)
    assert "ground_truth.parquet" in message and "propensity generate" in message


def test_ground_truth_without_its_columns_names_them(project_home):
    from training.evaluate import read_ground_truth

    path = project_home / "gt.parquet"
    pd.DataFrame({"customer_id": ["c1"], "as_of": [pd.Timestamp("2026-01-05", tz="UTC")]}).to_parquet(path)
    with pytest.raises(DataError, match=r"missing column\(s\) churn_driver, p_churn"):
        read_ground_truth(path, columns=("p_churn", "churn_driver"))
