"""The training set (training/dataset.py) of the session's generated business: real labels, features
from Feast over the feature build's snapshots, float model columns, a stable fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.settings import project_paths
from tests.training.conftest import small_config
from training.labels import SPLITS


@pytest.fixture
def churn_set(trained_home):
    from training.train import build_training_set

    return build_training_set(small_config("churn"))


def test_every_row_reads_the_snapshot_the_feature_build_wrote_at_its_cutoff(churn_set):
    """Cutoffs sit on the snapshot grid, so each row's stored features are exactly that date's snapshot."""
    from features.build import built_dates, snapshot_file
    from features.catalog import VIEWS

    frame = churn_set.frame
    cutoffs = sorted(frame["event_timestamp"].dt.date.unique())
    assert set(cutoffs) <= set(built_dates(project_paths().feature_sources))
    checked = 0
    for view in ("customer_frequency", "customer_browse", "customer_complaints"):
        names = VIEWS[view].names
        for day in (cutoffs[0], cutoffs[-1]):
            snap = pd.read_parquet(snapshot_file(project_paths().feature_sources, view, day))
            rows = frame[frame["event_timestamp"].dt.date == day][["customer_id", *names]]
            joined = rows.merge(snap[["customer_id", *names]], on="customer_id", how="left",
                                suffixes=("", "_snap"), validate="one_to_one")
            for name in names:
                np.testing.assert_allclose(joined[name].to_numpy(np.float64),
                                           joined[f"{name}_snap"].to_numpy(np.float64), rtol=1e-9,
                                           err_msg=f"{view}.{name} at {day}")
            checked += len(joined)
    assert checked > 500


def test_splits_are_labelled_rows_of_the_event_store(churn_set):
    lineage = churn_set.lineage()
    assert {s: lineage[f"{s}_rows"] > 0 for s in SPLITS} == {s: True for s in SPLITS}
    assert max(lineage["train_cutoffs"]) < min(lineage["validation_cutoffs"]) < lineage["test_cutoffs"][0]
    # Both classes in every split, at a plausible churn rate for the generator.
    for split in SPLITS:
        assert 0.1 < lineage[f"{split}_label_rate"] < 0.9
    assert not churn_set.frame.duplicated(["customer_id", "event_timestamp"]).any()


def test_same_data_gives_same_training_set_hash(trained_home, churn_set):
    from training.train import build_training_set

    again = build_training_set(small_config("churn"))
    assert churn_set.fingerprint() == again.fingerprint()
    changed = again.frame.copy()
    changed.loc[0, "label"] = 1 - changed.loc[0, "label"]
    again.frame = changed
    assert churn_set.fingerprint() != again.fingerprint()


def test_training_set_has_model_columns_only_as_float(trained_home):
    from features.retrieval import model_feature_names
    from training.train import build_training_set

    ts = build_training_set(small_config("conversion"))
    X = ts.X("train")
    assert list(X.columns) == model_feature_names("conversion_v1")
    assert all(str(t) == "float64" for t in X.dtypes)
    assert "customer_id" not in X.columns
    assert len(X) == len(ts.y("train")) and set(np.unique(ts.y("train"))) == {0, 1}
