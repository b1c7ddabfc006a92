"""configs/features.yaml, validated: snapshot scheme, RFM cut points, lifecycle thresholds, online and offline
stores."""

from __future__ import annotations

import datetime as dt
import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config import StrictModel, config_path, load_config

CONFIG_FILE = "features.yaml"
REDIS_URL_ENV = "PROPENSITY_REDIS_URL"


class SnapshotConfig(StrictModel):
    cadence_days: int = Field(7, ge=1, le=31, description="Days between history snapshots.")
    anchor: dt.date | None = Field(
        None, description="Grid dates are anchor + k * cadence_days; null: the data's own clock (see build.grid_anchor)"
    )
    history_days: int = Field(365, ge=0, description="How far before --until a first build backfills.")
    ttl_days: int = Field(30, ge=1, description="Feast TTL: a snapshot older than this is not used.")

    @model_validator(mode="after")
    def _ttl_covers_cadence(self) -> SnapshotConfig:
        if self.ttl_days <= self.cadence_days:
            raise ValueError(
                f"ttl_days ({self.ttl_days}) must exceed cadence_days ({self.cadence_days}), "
                "or dates between two snapshots would get no features"
            )
        return self


def _ascending(values: list[float], name: str) -> list[float]:
    if len(values) != 4 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{name} needs 4 strictly ascending cut points, got {values}")
    return values


class RfmConfig(StrictModel):
    # r_score: 5 when days_since_last_order <= recency_days[0], ..., 1 beyond recency_days[3] or no order.
    recency_days: list[float] = [14, 30, 60, 120]
    # f_score / m_score: 1 + the number of cut points the value reaches (>=).
    frequency_orders_365d: list[float] = [2, 3, 5, 8]
    monetary_spend_365d: list[float] = [50, 150, 400, 1000]
    high_score: int = Field(3, ge=2, le=5, description="A score >= this counts as high in the segment.")
    # Segment names keyed by high (H) / low (L) recency, frequency, monetary.
    segments: dict[Literal["HHH", "LHH", "HLH", "LLH", "HHL", "LHL", "HLL", "LLL"], str] = {
        "HHH": "important_value",
        "LHH": "important_to_retain",
        "HLH": "important_to_develop",
        "LLH": "important_to_win_back",
        "HHL": "general_value",
        "LHL": "general_to_retain",
        "HLL": "general_to_develop",
        "LLL": "general_to_win_back",
    }

    @field_validator("recency_days", "frequency_orders_365d", "monetary_spend_365d")
    @classmethod
    def _check_cuts(cls, v: list[float], info) -> list[float]:
        return _ascending(v, info.field_name)

    @field_validator("segments")
    @classmethod
    def _all_eight(cls, v: dict[str, str]) -> dict[str, str]:
        missing = {"HHH", "LHH", "HLH", "LLH", "HHL", "LHL", "HLL", "LLL"} - set(v)
        if missing:
            raise ValueError(f"segments misses {sorted(missing)}")
        return v


class LifecycleConfig(StrictModel):
    new_max_tenure_days: int = Field(30, ge=0, description="Tenure below this: 'new'.")
    active_max_days_since_order: int = Field(60, ge=1, description="Ordered within this: 'active'.")
    at_risk_max_days_since_order: int = Field(180, ge=1, description="Within this: 'at_risk'; beyond: 'lapsed'.")

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if self.at_risk_max_days_since_order <= self.active_max_days_since_order:
            raise ValueError("at_risk_max_days_since_order must exceed active_max_days_since_order")
        return self


class OnlineStoreConfig(StrictModel):
    # Any kind registered in features.online_store.STORES (sqlite, redis, ...): checked when the store is
    # resolved, as the registry lives above this module.
    type: str = Field("sqlite", pattern=r"^[a-z][a-z0-9_]*$", description="Online store kind: sqlite or redis.")
    redis_url: str | None = Field(None, description="redis://host:port/db; PROPENSITY_REDIS_URL overrides.")


class RayOfflineConfig(StrictModel):
    """Feast's Ray offline store (``type: ray``): a cluster when RAY_ADDRESS is set, else a Ray started on
    this machine (loopback only, no dashboard, no usage stats)."""

    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray; null: every core of this machine")
    min_chunk_rows: int = Field(
        50_000, ge=1, description="entity rows per Ray task at least (a retrieval uses up to one task per CPU)"
    )


class OfflineStoreConfig(StrictModel):
    type: Literal["duckdb", "ray"] = Field(
        "duckdb", description="Historical retrieval: Feast's DuckDB offline store, or Feast's Ray offline store."
    )
    ray: RayOfflineConfig = RayOfflineConfig()


class RhythmConfig(StrictModel):
    """The BG/NBD model behind the customer_rhythm view (features.btyd), fitted on every snapshot's own
    history: each customer's repeat-order days, the days from first to last order and since the first."""

    horizon_days: int = Field(
        60, ge=1, le=3650,
        description="btyd_expected_orders counts the orders expected in this many days after the snapshot; "
        "set it to the horizon the models predict over (the churn label's horizon_days)",
    )
    fit_customers: int = Field(
        20_000, ge=100,
        description="the fit reads at most this many customers (the same ones at every build: ordered by a "
        "hash of the id); four population parameters need no more, and a million take 8 s per snapshot",
    )


class RayBuildConfig(StrictModel):
    """The feature build on Ray (``build.engine: ray``): the cluster at RAY_ADDRESS, else a Ray started on
    this machine (loopback only, no dashboard, no usage stats)."""

    shards: int | None = Field(
        None, ge=1, description="customer shards, one Ray actor each; null: one per CPU of the Ray"
    )
    cpus_per_shard: int = Field(1, ge=1, description="CPUs (DuckDB threads) of each shard's actor")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray; null: every core of this machine")


class BuildConfig(StrictModel):
    engine: Literal["local", "ray"] = Field(
        "local", description="local: one DuckDB process (the fastest on one machine); ray: customer shards "
        "on Ray, one DuckDB each, for more cores or machines than one (features.ray_build)",
    )
    ray: RayBuildConfig = RayBuildConfig()


class FeaturesConfig(StrictModel):
    project: str = Field("propensity", pattern=r"^[a-z][a-z0-9_]*$")
    snapshots: SnapshotConfig = SnapshotConfig()
    rfm: RfmConfig = RfmConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    online_store: OnlineStoreConfig = OnlineStoreConfig()
    offline_store: OfflineStoreConfig = OfflineStoreConfig()
    rhythm: RhythmConfig = RhythmConfig()
    build: BuildConfig = BuildConfig()

    def redis_url(self) -> str | None:
        """The Redis URL in force, or None for SQLite: the environment wins over the YAML."""
        env = os.environ.get(REDIS_URL_ENV)
        if env:
            return env
        if self.online_store.type == "redis":
            return self.online_store.redis_url or "redis://127.0.0.1:6379/0"
        return None


def load_features_config() -> FeaturesConfig:
    """configs/features.yaml of the current project (defaults when the file is absent)."""
    path = config_path(CONFIG_FILE)
    if not path.is_file():
        return FeaturesConfig()
    return load_config(path, FeaturesConfig)
