"""Features exact for a date off the snapshot grid (features.exact): equal, feature by feature, to a
fresh build at that date, while Feast's point-in-time join alone would read the older snapshot."""

from __future__ import annotations

import shutil

import pandas as pd

from core.settings import ProjectPaths
from features.build import build_features, built_dates, read_snapshot
from features.catalog import DERIVED_NUMERIC, DERIVED_STRING, service_raw_features, service_views
from features.derived import add_derived
from features.exact import exact_historical_features, missing_dates
from features.retrieval import historical_features
from features.settings import FeaturesConfig, SnapshotConfig
from tests.features.conftest import END
from tests.features.test_retrieval import assert_frames_match

SERVICE = "churn_v1"
COLUMNS = [*service_raw_features(SERVICE), *DERIVED_NUMERIC, *DERIVED_STRING]


def fresh_build_at(home, day: pd.Timestamp, ids: list[str]) -> pd.DataFrame:
    """The features a project whose only build is at ``day`` would serve: the reference."""
    scratch = ProjectPaths(home / "fresh")
    scratch.data.mkdir(parents=True)
    shutil.copytree(home / "data" / "events", scratch.events)
    build_features(day.date(), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=0)), paths=scratch)
    out = pd.DataFrame({"customer_id": ids, "event_timestamp": day})
    for view in service_views(SERVICE):
        snap = read_snapshot(scratch.feature_sources, day.date(), view)
        out = out.merge(snap.drop(columns=["event_timestamp"]), on="customer_id", how="left")
    return add_derived(out, out["event_timestamp"])


def test_a_date_between_snapshots_equals_a_fresh_build_at_that_date(project_home, random_store):
    build_features(END.date(), config=FeaturesConfig(snapshots=SnapshotConfig(history_days=60, cadence_days=7)))
    grid = built_dates(project_home / "data" / "features")
    between = pd.Timestamp(grid[-3], tz="UTC") + pd.Timedelta(days=3)  # three days after a snapshot
    assert between.date() not in grid
    ids = sorted(random_store["orders"]["customer_id"].unique())[:25]
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": between})
    assert missing_dates(entity) == [between.date()]

    exact = exact_historical_features(entity, SERVICE)
    reference = fresh_build_at(project_home, between, ids)
    assert_frames_match(exact.reset_index(drop=True), reference, COLUMNS)

    # Feast alone reads the snapshot three days older: the windows differ for someone (what exact fixes).
    stale = historical_features(entity, SERVICE)
    windows = [c for c in service_raw_features(SERVICE) if c.endswith(("_7d", "_30d"))]
    assert (stale[windows].fillna(-1).to_numpy() != reference[windows].fillna(-1).to_numpy()).any()
