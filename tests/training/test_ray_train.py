"""The final fit on Ray Train (``tuning.engine: ray``): one worker gives the local fit's trees, two workers
a model as good on held-out rows; a real local Ray with 2 CPUs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.specs import RayFit


def _trees(booster) -> str:
    """The model text from the first tree on (the parameters block names the network settings)."""
    text = booster.model_to_string()
    return text[text.index("Tree=0"):text.index("end of trees")]


@pytest.fixture(scope="module")
def data():
    from training.tune import Datasets

    rng = np.random.default_rng(5)
    n = 6000
    X = pd.DataFrame({f"f{j}": rng.normal(size=n) for j in range(6)})
    X.loc[rng.random(n) < 0.1, "f3"] = np.nan
    logit = 1.5 * X["f0"] - X["f1"] + 0.8 * X["f2"] * X["f4"] + np.nan_to_num(X["f3"].to_numpy())
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    cut, end = 4000, 5000
    built = Datasets.build(X.iloc[:cut], y[:cut], X.iloc[cut:end], y[cut:end])
    # Where the trees start from per row (a spec's boost_from), as a second set.
    start = 0.5 * np.nan_to_num(X["f0"].to_numpy())
    started = Datasets.build(X.iloc[:cut], y[:cut], X.iloc[cut:end], y[cut:end], start[:cut], start[cut:end])
    return built, started, X.iloc[end:], y[end:]


def _params():
    return {"objective": "binary", "metric": "auc", "verbosity": -1, "num_threads": 1, "seed": 3,
            "deterministic": True, "force_row_wise": True, "learning_rate": 0.1, "num_leaves": 15,
            "bagging_freq": 1, "bagging_fraction": 0.8}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs, loopback) for both fits; the fit uses a running Ray as it is."""
    import os

    import ray

    from core.local_ray import start_ray

    address = os.environ.pop("RAY_ADDRESS", None)
    try:
        started = start_ray(2)
        yield
        if started:
            ray.shutdown()
    finally:
        if address is not None:
            os.environ["RAY_ADDRESS"] = address


@pytest.mark.slow
def test_ray_train_gives_the_local_fit_on_one_worker_and_a_fit_as_good_on_two(data, local_ray):
    from sklearn.metrics import roc_auc_score

    from training.ray_train import fit_booster_on_ray
    from training.tune import fit_booster

    built, started, X_test, y_test = data
    # One worker, with start scores: the local fit's trees.
    alone = fit_booster(_params(), started, 300, 20)
    alone = alone.model_from_string(alone.model_to_string(num_iteration=alone.best_iteration))
    one = fit_booster_on_ray(_params(), started, 300, 20, RayFit(workers=1, num_cpus=2))
    assert one.num_trees() == alone.num_trees() > 5
    assert _trees(one) == _trees(alone)
    np.testing.assert_array_equal(one.predict(X_test.to_numpy()), alone.predict(X_test.to_numpy()))

    # Two workers: LightGBM's distributed trees, as good on held-out rows.
    local = fit_booster(_params(), built, 300, 20)
    local = local.model_from_string(local.model_to_string(num_iteration=local.best_iteration))

    two = fit_booster_on_ray(_params(), built, 300, 20, RayFit(workers=2, num_cpus=2))
    auc_local = roc_auc_score(y_test, local.predict(X_test.to_numpy()))
    auc_two = roc_auc_score(y_test, two.predict(X_test.to_numpy()))
    assert two.num_trees() > 5 and two.feature_name() == local.feature_name()
    assert auc_two > 0.75 and abs(auc_two - auc_local) < 0.02, (auc_two, auc_local)


def test_the_spec_names_a_wrong_engine():
    from pydantic import ValidationError

    from core.specs import load_spec

    spec = load_spec("churn")
    assert spec.tuning.engine == "local"
    with pytest.raises(ValidationError, match="engine"):
        type(spec.tuning).model_validate({**spec.tuning.model_dump(), "engine": "spark"})
    with pytest.raises(ValidationError, match="worker"):
        RayFit.model_validate({"worker": 2})


def test_train_names_a_wrong_engine(project_home):
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["train", "churn", "--engine", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of local, ray" in result.output
