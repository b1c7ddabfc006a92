"""Feast definitions: entity ``customer``, one feature view per catalogue view (``features.catalog.VIEWS``)
over the build's Parquet snapshots (one source: a file per date), and one feature service per model version.

``propensity features apply`` registers ``make_definitions(...)`` with absolute paths for the project in
use. The module-level objects below exist for the ``feast`` CLI (``feast -c features plan`` run from the
project root), which imports this file and collects the objects it finds; they use paths relative to the
project root. Building them does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from features.catalog import ENTITY, FLOAT, JOIN_KEY, SERVICES, TIMESTAMP_FIELD, VIEWS

DEFAULT_TTL_DAYS = 30


@dataclass(frozen=True)
class Definitions:
    entity: Entity
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]

    def all(self) -> list:
        return [self.entity, *self.views.values(), *self.services.values()]


def source_glob(sources_dir: Path | str) -> str:
    """The snapshots: one Parquet file per date with every view's columns (written by features.build)."""
    return str(Path(sources_dir) / "*.parquet")


def make_definitions(sources_dir: Path | str, ttl_days: int = DEFAULT_TTL_DAYS) -> Definitions:
    customer = Entity(
        name=ENTITY,
        join_keys=[JOIN_KEY],
        value_type=ValueType.STRING,
        description="A customer of the shop, keyed by the event store's customer_id.",
    )
    # One source for every view: a view reads its own columns of each date's file.
    source = FileSource(
        name="customer_snapshots",
        path=source_glob(sources_dir),
        timestamp_field=TIMESTAMP_FIELD,
        description="Per-customer snapshots written by `propensity features build`, one file per date.",
    )
    views: dict[str, FeatureView] = {}
    for spec in VIEWS.values():
        views[spec.name] = FeatureView(
            name=spec.name,
            entities=[customer],
            ttl=timedelta(days=ttl_days),
            schema=[
                Field(name=f.name, dtype=Float64 if f.kind == FLOAT else Int64, description=f.description)
                for f in spec.features
            ],
            source=source,
            online=True,
            description=spec.description,
        )
    services = {
        name: FeatureService(
            name=name,
            features=[views[v] for v in view_names],
            description=f"Features read by the {name.split('_')[0]} model, version {name.rsplit('_v', 1)[1]}.",
        )
        for name, view_names in SERVICES.items()
    }
    return Definitions(entity=customer, views=views, services=services)


# For the feast CLI only (see the module docstring).
_cli = make_definitions(Path("data") / "features")
customer = _cli.entity
customer_recency = _cli.views["customer_recency"]
customer_frequency = _cli.views["customer_frequency"]
customer_browse = _cli.views["customer_browse"]
customer_complaints = _cli.views["customer_complaints"]
customer_cadence = _cli.views["customer_cadence"]
customer_rhythm = _cli.views["customer_rhythm"]
customer_spend_rhythm = _cli.views["customer_spend_rhythm"]
customer_visit_rhythm = _cli.views["customer_visit_rhythm"]
churn_v1 = _cli.services["churn_v1"]
conversion_v1 = _cli.services["conversion_v1"]
churn_v2 = _cli.services["churn_v2"]
value_v1 = _cli.services["value_v1"]
churn_v3 = _cli.services["churn_v3"]
conversion_v2 = _cli.services["conversion_v2"]
