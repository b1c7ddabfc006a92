"""The service's configuration: configs/serving.yaml (``ServingConfig``), and which models it serves.

Bands come from each model's spec (configs/models/<name>.yaml, ``core.specs``), never from here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import StrictModel, config_path, load_config

log = logging.getLogger("propensity.serving")

API_KEY_ENV = "PROPENSITY_API_KEY"
# Set by `propensity serve` from configs/serving.yaml; the service reads it because BentoML needs the
# worker count when the service class is decorated.
WORKERS_ENV = "PROPENSITY_SERVING_WORKERS"


class ServingConfig(StrictModel):
    models: list[str] | None = Field(
        None, min_length=1, description="models served; null: every model spec the event store supports"
    )
    alias: str = "champion"
    max_batch_size: int = Field(100, ge=1)
    default_top_k: int = Field(5, ge=0, le=50)
    default_lang: Literal["en", "zh"] = "en"
    api_key: str | None = None
    reload_poll_seconds: float = Field(10.0, gt=0)
    workers: int = Field(2, ge=1, le=64)
    lightgbm_threads: int = Field(1, ge=1)
    ui_recent_calls: int = Field(200, ge=0)
    max_body_bytes: int = Field(1_000_000, ge=1024, description="request bodies above this are a 413")
    allow_no_api_key: bool = Field(
        False, description="true: serve data routes to anyone when no key is configured (otherwise not ready)"
    )

    def resolved_api_key(self) -> str | None:
        """The key from the config, else from PROPENSITY_API_KEY; None means the service refuses data calls
        and is not ready, unless ``allow_no_api_key`` says to run open."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None


def load_serving_config(path: str | Path | None = None) -> ServingConfig:
    return load_config(Path(path) if path else config_path("serving.yaml"), ServingConfig)


# ---------------------------------------------------------------------------------------------- staff page
LabelKind = Literal["ui", "model", "band", "level", "layer", "segment", "stage", "queue", "action",
                    "queue_status", "group", "tag", "feature", "cause", "direction"]


class LabelText(StrictModel):
    """One key's display name per language; a language left out falls back to a humanised key."""

    en: str | None = Field(None, min_length=1)
    zh: str | None = Field(None, min_length=1)


class StaffPageConfig(StrictModel):
    """configs/staff_page.yaml: paging of the staff page's list and the display names it shows."""

    page_size: int = Field(25, ge=1, description="rows per page when the page does not ask")
    max_page_size: int = Field(100, ge=1, description="a larger page_size is a 400")
    labels: dict[LabelKind, dict[str, LabelText]] = Field(
        default_factory=dict, description="kind -> key -> {en, zh}: what the page shows instead of the key"
    )

    @model_validator(mode="after")
    def _page_fits(self) -> StaffPageConfig:
        if self.page_size > self.max_page_size:
            raise ValueError(f"page_size {self.page_size} is above max_page_size {self.max_page_size}")
        return self


def load_staff_page_config(path: str | Path | None = None) -> StaffPageConfig:
    """configs/staff_page.yaml; the code defaults (no labels: humanised keys) when the file is absent."""
    path = Path(path) if path else config_path("staff_page.yaml")
    return load_config(path, StaffPageConfig) if path.is_file() else StaffPageConfig()


def served_models(config: ServingConfig) -> list[str]:
    """The models to serve: the config's list (each must have a spec), or every spec whose ``alias`` exists
    in the registry (a model the data could not support was never trained, so it has none). When the
    registry cannot be asked yet, every spec: the poller loads what appears."""
    specs = _spec_names(config)
    if config.models is not None:
        return specs
    try:
        from serving.registry import check_registry_db
        from training.tracking import client

        check_registry_db()  # one line naming the file, at once, instead of SQLAlchemy's after seconds
        mlflow_client = client()
        have = [m for m in specs if _has_alias(mlflow_client, m, config.alias)]
    except Exception as exc:  # registry not reachable at start-up
        log.warning("registry not reachable (%s): serving every spec: %s", exc, ", ".join(specs))
        return specs
    for name in sorted(set(specs) - set(have)):
        log.info("model %s not served: no '%s' version in the registry", name, config.alias)
    return have or specs


def _has_alias(mlflow_client: Any, name: str, alias: str) -> bool:
    import mlflow

    try:
        mlflow_client.get_model_version_by_alias(name, alias)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def validate_serving_setup() -> ServingConfig:
    """Check every file the workers read at start-up, before any worker starts: serving.yaml, the model
    specs, reasons.yaml, actions.yaml, features.yaml, staff_page.yaml, and that the registry database is readable.

    A bad file raises ConfigError naming the file and the field (`propensity serve` exits 2 with it)
    instead of every worker failing in its start-up, being restarted and failing again. A corrupt
    registry database raises too; a locked one (a training job writing) is only logged: the poller waits.
    """
    from core.specs import load_spec
    from features.settings import load_features_config
    from serving.actions import load_actions_config
    from serving.registry import RegistryUnavailable, check_registry_db
    from training.reasons import load_templates

    config = load_serving_config()
    for name in _spec_names(config):
        load_spec(name)
    load_templates()
    load_actions_config()
    load_features_config()
    load_staff_page_config()
    try:
        check_registry_db()
    except RegistryUnavailable as exc:
        if not exc.transient:
            raise
        log.warning("%s", exc)
    return config


def _spec_names(config: ServingConfig) -> list[str]:
    from core.errors import ConfigError
    from core.specs import model_names

    specs = model_names()
    unknown = [m for m in config.models or [] if m not in specs]
    if unknown:
        raise ConfigError(f"serving.yaml: models: no spec in configs/models/ for {', '.join(unknown)}")
    if not specs:
        raise ConfigError("no model spec in configs/models/: nothing to serve")
    return list(config.models or specs)
