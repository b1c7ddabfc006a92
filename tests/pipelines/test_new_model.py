"""The model extension point (slow): a third model added as one YAML file in configs/models/, no code
change, is trained, promoted, served and scored by the same chain as the shipped ones."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tests.conftest import new_project

pytestmark = pytest.mark.slow

NEW = "repeat_30d"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    home, mp = new_project(tmp_path_factory.mktemp("new-model"))
    configs = home / "configs"
    # "Orders again within 30 days": the churn spec's population and features, the other outcome.
    spec = yaml.safe_load((configs / "models" / "churn.yaml").read_text())
    spec.update(name=NEW, description="an active customer orders again within 30 days", ground_truth=None,
                baseline={"feature": "days_since_last_order", "higher_means_positive": False})
    spec["labels"].update(horizon_days=30, positive="order")
    spec["tuning"]["monotone"] = {"days_since_last_order": -1}
    spec["reasons_from"] = "churn"  # the same features, so the same causes (configs/reasons.yaml)
    (configs / "models" / f"{NEW}.yaml").write_text(yaml.safe_dump(spec))
    from pipelines.run import run

    state = run("tiny")
    yield state
    mp.undo()


def test_the_new_model_is_trained_and_promoted(chain):
    trained = chain.stages[f"train_{NEW}"]
    assert trained["status"] == "done" and trained["facts"]["version"] == "1"
    assert 0.5 < trained["facts"]["test_auc"] <= 1.0
    assert chain.stages["promote"]["facts"][NEW]["decision"] == "promoted"


def test_the_new_model_is_scored_next_to_the_others(chain):
    from core.settings import project_paths

    scores = pd.read_parquet(project_paths().latest_scores)
    for model in ("churn", "conversion", NEW):
        assert scores[f"{model}_probability"].between(0, 1).all()
        assert set(scores[f"{model}_band"]) <= {"high", "medium", "low"}
    # Orders again soon and churns are opposite outcomes of one population: their scores disagree.
    corr = scores[["churn_probability", f"{NEW}_probability"]].corr().iloc[0, 1]
    assert corr < 0


def test_the_new_model_is_served(chain):
    from core.settings import project_paths
    from serving.config import load_serving_config, served_models
    from serving.predictor import Predictor
    from serving.registry import ModelRegistry
    from serving.requests import PredictRequest

    config = load_serving_config()
    names = served_models(config)
    assert NEW in names
    registry = ModelRegistry(names)
    registry.load()
    scores = pd.read_parquet(project_paths().latest_scores)
    customer = str(scores["customer_id"].iloc[0])
    answer = Predictor(config, registry).predict(PredictRequest(customer_ids=[customer], models=[NEW]))
    result = answer["results"][0]
    assert result["found"] and 0 <= result[NEW]["probability"] <= 1
    assert answer["model_versions"][NEW] == "1"
