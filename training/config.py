"""The training config: one YAML per model in configs/ (churn.yaml, conversion.yaml), one strict schema.

Both models go through the same code path; only the label definition, the feature service and the
numbers differ.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipelines.config import StrictModel, config_path, load_config


class ChurnLabels(StrictModel):
    """Among customers with >= min_orders orders in the active window before the cutoff: churned when
    they place no order in the horizon after it."""

    kind: Literal["churn"]
    active_window_days: int = Field(180, gt=0, description="days before the cutoff that count as active")
    min_orders: int = Field(1, ge=1)
    horizon_days: int = Field(60, gt=0, description="no order in this many days after the cutoff = churned")


class ConversionLabels(StrictModel):
    """Among customers who browsed in the browse window and placed no order in the no-order window before
    the cutoff: converted when they order within the horizon after it."""

    kind: Literal["conversion"]
    browse_window_days: int = Field(14, gt=0)
    min_page_views: int = Field(1, ge=1)
    no_order_window_days: int = Field(30, ge=0)
    horizon_days: int = Field(14, gt=0)


Labels = Annotated[ChurnLabels | ConversionLabels, Field(discriminator="kind")]


class Cutoffs(StrictModel):
    """Rolling cutoffs at UTC midnight, every ``every_days`` days, stepping back from the anchor."""

    every_days: int = Field(7, gt=0)
    anchor: date | None = Field(None, description="a cutoff date the grid passes through; default: the day the data ends")
    data_end: date | None = Field(None, description="treat events up to this day as the data; default: the last event")


class Split(StrictModel):
    """Time split: test = the latest cutoff whose labels have matured; validation = the cutoffs before it;
    train = the cutoffs before those. With ``purge`` a label window never reaches into a later split."""

    validation_cutoffs: int = Field(3, ge=1)
    train_cutoffs: int = Field(16, ge=1)
    purge: bool = True


class MinData(StrictModel):
    """Training stops with a message when a split has fewer rows or positives than this."""

    train_rows: int = Field(500, ge=1)
    train_positives: int = Field(50, ge=1)
    validation_rows: int = Field(200, ge=1)
    validation_positives: int = Field(20, ge=1)
    test_rows: int = Field(200, ge=1)
    test_positives: int = Field(20, ge=1)


class Param(StrictModel):
    """One dimension of the search space."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameter needs 'choices'")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("numeric parameter needs 'low' <= 'high'")
        return self


class Tuning(StrictModel):
    trials: int = Field(30, ge=0)
    timeout_seconds: float | None = Field(None, gt=0)
    seed: int = 42
    startup_trials: int = Field(8, ge=0, description="random trials before TPE takes over")
    pruner_warmup_rounds: int = Field(50, ge=0, description="boosting rounds before a trial may be pruned")
    pruner_startup_trials: int = Field(5, ge=0)
    report_every_rounds: int = Field(
        10, ge=1, description="rounds between reports to the pruner (each report is a storage write)"
    )
    early_stopping_rounds: int = Field(50, ge=1)
    max_boost_rounds: int = Field(2000, ge=1)
    num_threads: int = Field(2, ge=1)
    fixed_params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    monotone: dict[str, Literal[-1, 1]] = Field(
        default_factory=dict,
        description="feature -> +1 (never lowers the score) or -1 (never raises it): LightGBM monotone constraints",
    )
    search_space: dict[str, Param]


class Promotion(StrictModel):
    metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    margin: float = Field(0.002, ge=0, description="challenger must beat the champion by at least this much")


class TrainingConfig(StrictModel):
    model: str = Field(description="registered model name (churn, conversion)")
    feature_service: str
    labels: Labels
    cutoffs: Cutoffs = Cutoffs()
    split: Split = Split()
    min_data: MinData = MinData()
    tuning: Tuning
    promotion: Promotion = Promotion()
    shap_sample_rows: int = Field(2000, ge=10, description="rows explained for the SHAP summary plot")


def load_training_config(model: str | None = None, path: str | Path | None = None) -> TrainingConfig:
    """Load ``configs/<model>.yaml`` (or ``path``) into a TrainingConfig."""
    if path is None:
        if model is None:
            raise ValueError("give a model name or a config path")
        path = config_path(f"{model}.yaml")
    cfg = load_config(path, TrainingConfig)
    if model is not None and cfg.model != model:
        from pipelines.errors import ConfigError

        raise ConfigError(f"{path}: field 'model' is {cfg.model!r}, expected {model!r}")
    return cfg
