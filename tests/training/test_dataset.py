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
    from features.build import built_dates, read_snapshot
    from features.catalog import VIEWS

    frame = churn_set.frame
    cutoffs = sorted(frame["event_timestamp"].dt.date.unique())
    assert set(cutoffs) <= set(built_dates(project_paths().feature_sources))
    checked = 0
    for view in ("customer_frequency", "customer_browse", "customer_complaints"):
        names = VIEWS[view].names
        for day in (cutoffs[0], cutoffs[-1]):
            snap = read_snapshot(project_paths().feature_sources, day, view)
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

    config = small_config("conversion")
    ts = build_training_set(config)
    X = ts.X("train")
    assert list(X.columns) == model_feature_names(config.feature_service)
    assert all(str(t) == "float64" for t in X.dtypes)
    assert "customer_id" not in X.columns
    assert len(X) == len(ts.y("train")) and set(np.unique(ts.y("train"))) == {0, 1}


# ---- labels after actions (no Feast: label rows only) ---------------------------------------------------
def test_rows_an_earlier_contact_acts_on_are_left_out_and_no_contacts_change_nothing(tmp_path):
    """weight 0 for a row whose customer was contacted from a list made by its cutoff, less than one
    horizon before it; a contact from a later list (chosen by what the customer did after the cutoff)
    leaves the row in; without a contacts table the rows are exactly those of before."""
    from core.events import EventStore
    from core.specs import ActiveBuyersLabels, Cutoffs, Split
    from training.labels import label_rows

    start = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
    orders = [(f"c{i}", start + pd.Timedelta(days=int(d))) for i in range(40) for d in range(0, 400, 9 + i % 5)]
    frame = pd.DataFrame([(f"o{k}", c, t, 10.0) for k, (c, t) in enumerate(orders)],
                         columns=["order_id", "customer_id", "ordered_at", "amount"])
    labels = ActiveBuyersLabels(kind="active_buyers", horizon_days=60)
    cutoffs, split = Cutoffs(anchor=start.date()), Split(validation_cutoffs=2, train_cutoffs=6)
    plain = EventStore(tmp_path / "plain")
    plain.replace_months({"orders": frame})
    _, before = label_rows(plain, labels, cutoffs, split)

    test_cutoff = before[before["split"] == "test"]["event_timestamp"].iloc[0]
    list_day = test_cutoff - pd.Timedelta(days=14)  # a list two weeks before the test cutoff
    contacts = pd.DataFrame({
        "contact_id": ["k1", "k2", "k3"], "customer_id": ["c1", "c2", "c3"],
        "contacted_at": [list_day + pd.Timedelta(hours=10), test_cutoff + pd.Timedelta(days=7, hours=10),
                         test_cutoff - pd.Timedelta(days=61)],
        "action_rule": ["retention_offer"] * 3,
        "list_as_of": [list_day, test_cutoff + pd.Timedelta(days=7), test_cutoff - pd.Timedelta(days=61, hours=0)],
    })
    contacts["contacted_at"] = contacts["contacted_at"].astype("datetime64[us, UTC]")
    contacts["list_as_of"] = contacts["list_as_of"].astype("datetime64[us, UTC]")
    touched = EventStore(tmp_path / "touched")
    touched.replace_months({"orders": frame, "contacts": contacts},
                           {"families": {"orders": "present", "contacts": "present"}})
    _, after = label_rows(touched, labels, cutoffs, split)

    key = ["customer_id", "event_timestamp"]
    gone = before.merge(after[key], on=key, how="left", indicator=True)
    gone = gone[gone["_merge"] == "left_only"]
    # c1: every cutoff from its list day to one horizon after it; c2 (a later list) and c3 (too long
    # before the test cutoff, but acting on earlier ones) as the rule says.
    c1 = before[(before["customer_id"] == "c1") & (before["event_timestamp"] >= list_day)
                & (before["event_timestamp"] < list_day + pd.Timedelta(days=60))]
    assert len(c1) and set(map(tuple, gone[gone["customer_id"] == "c1"][key].to_numpy())) == set(map(tuple, c1[key].to_numpy()))
    assert not ((gone["customer_id"] == "c2") & (gone["event_timestamp"] <= test_cutoff)).any()
    assert not ((gone["customer_id"] == "c3") & (gone["event_timestamp"] == test_cutoff)).any()
    assert set(gone["customer_id"]) <= {"c1", "c2", "c3"}
    assert len(after) == len(before) - len(gone) and len(gone) > 0
