"""A tiny business for the training tests, made by the project's own chain: the synthetic generator
(``pipelines.synthetic``) -> ingest into the event store -> the real feature build. Training sets then
come from the real labels and Feast retrieval (``training.train.build_training_set``).

``features_with_events`` answers "what would this customer's features be with these extra events?" by
the same route: it adds the events to a copy of the event store and runs the feature build's own SQL for
one date (``features.exact.built_for``), so every feature moves consistently with the new events.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.contract import TABLES
from core.events import EventStore, month_keys, to_canonical_timestamps
from core.settings import REPO_ROOT, ProjectPaths

# Small enough to build in a few seconds, big enough that both models meet small_config's min_data
# with room to spare (conversion's one-cutoff test split has ~100-200 rows).
BUSINESS = {"customers": 1000, "days": 300, "seed": 7}
COPIED = ("raw", "events", "features")  # the Feast registry holds absolute paths: re-applied per home


def point_env_at(mp: pytest.MonkeyPatch, home: Path) -> None:
    """The environment of ``project_home`` (tests/conftest.py), for a project home made elsewhere."""
    mp.setenv("PROPENSITY_HOME", str(home))
    mp.setenv("PROPENSITY_CONFIGS", str(REPO_ROOT / "configs"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    mp.setenv("BENTOML_HOME", str(home / "bentoml_home"))
    mp.delenv("PROPENSITY_REDIS_URL", raising=False)


def make_business(home: Path, **size) -> None:
    """Generate, ingest and build feature snapshots in ``home`` (the environment must point at it)."""
    from features.build import build_features
    from pipelines.ingest import ingest
    from pipelines.synthetic import generate

    raw = ProjectPaths(home).raw
    generate(out=raw, progress=False, **{**BUSINESS, **size})
    ingest(orders=raw / "orders.parquet", customers=raw / "customers.parquet",
           page_views=raw / "page_views.parquet", complaints=raw / "complaints.parquet")
    build_features()


def copy_business(src: Path, dst: Path) -> None:
    """The raw exports, event store and feature snapshots of ``src`` into the project home ``dst``."""
    for part in COPIED:
        if (ProjectPaths(src).data / part).is_dir():
            shutil.copytree(ProjectPaths(src).data / part, ProjectPaths(dst).data / part)


def add_events(store: EventStore, table: str, rows: pd.DataFrame) -> None:
    """Append ``rows`` to ``table``: each touched month partition is rewritten with its old rows plus
    the new ones (``replace_months`` wants the full content of a month)."""
    spec = TABLES[table]
    months = set(month_keys(pd.to_datetime(rows[spec.time_column], utc=True)))
    old = store.read_months(table, months)
    new = to_canonical_timestamps(rows, spec)
    store.replace_months({table: pd.concat([to_canonical_timestamps(old, spec), new], ignore_index=True)})


def features_with_events(home: Path, scratch: Path, extra: dict[str, pd.DataFrame], customers: list[str],
                         cutoff: pd.Timestamp, service: str) -> pd.DataFrame:
    """Features of ``customers`` at ``cutoff`` (a UTC midnight) had the project in ``home`` also seen the
    ``extra`` events: the event store is copied to ``scratch``, the events added, and one snapshot built
    with the feature build's own SQL. One row per customer, in order, indexed by customer_id."""
    from features.exact import built_for

    store = EventStore(ProjectPaths(scratch).events)
    shutil.copytree(ProjectPaths(home).events, store.root)
    for table, rows in extra.items():
        add_events(store, table, rows)
    entity = pd.DataFrame({"customer_id": customers,
                           "event_timestamp": pd.Series([cutoff] * len(customers)).astype("datetime64[us, UTC]")})
    day: dt.date = cutoff.date()
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, scratch)
        out = built_for(entity, service, day)
    return out.set_index("customer_id")
