"""Model specs: one YAML per model in configs/models/, one strict schema (``ModelSpec``).

A spec says what the model predicts (task, label kind and horizon), from which feature service and event
families, how it is tuned, gated and banded. Every model goes through the same code path; adding one is
its YAML (plus, only if its label is of a new kind, one label function in training.labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from core.config import StrictModel, config_path, load_config
from core.errors import ConfigError


class ActiveBuyersLabels(StrictModel):
    """Population: customers with >= ``min_orders`` orders in the ``active_window_days`` before the cutoff.
    Label: 1 when the customer places no order in the ``horizon_days`` after it (``positive: no_order``,
    e.g. an attrition model), or at least one (``positive: order``, e.g. "orders again within 30 days")."""

    kind: Literal["active_buyers"]
    active_window_days: int = Field(180, gt=0, description="days before the cutoff that count as active")
    min_orders: int = Field(1, ge=1)
    horizon_days: int = Field(60, gt=0, description="days after the cutoff the label looks at")
    positive: Literal["no_order", "order"] = "no_order"


class BrowsersLabels(StrictModel):
    """Population: customers with >= ``min_page_views`` page views in the ``browse_window_days`` before the
    cutoff and no order in the ``no_order_window_days`` before it. Label: 1 when they order within
    ``horizon_days`` after it (``positive: order``, e.g. a purchase-intent model), or do not (``no_order``)."""

    kind: Literal["browsers"]
    browse_window_days: int = Field(14, gt=0)
    min_page_views: int = Field(1, ge=1)
    no_order_window_days: int = Field(30, ge=0)
    horizon_days: int = Field(14, gt=0)
    positive: Literal["no_order", "order"] = "order"


class FutureSpendLabels(StrictModel):
    """Population: customers with >= ``min_orders`` orders in the ``active_window_days`` before the cutoff
    (as for active_buyers). Label: the amount they spend in the ``horizon_days`` after it (0 when they
    do not order): the target of a value (regression) model."""

    kind: Literal["future_spend"]
    active_window_days: int = Field(365, gt=0)
    min_orders: int = Field(1, ge=1)
    horizon_days: int = Field(180, gt=0)


# One label function per kind in training.labels; a new model with a known kind needs only its YAML.
Labels = Annotated[ActiveBuyersLabels | BrowsersLabels | FutureSpendLabels, Field(discriminator="kind")]
# The event families each label kind reads (besides what the feature service reads).
LABEL_NEEDS: dict[str, tuple[str, ...]] = {
    "active_buyers": ("orders",), "browsers": ("orders", "page_views"), "future_spend": ("orders",),
}
# Columns a label kind reads beyond each table's required ones (optional in the contract).
LABEL_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {"future_spend": {"orders": ("amount",)}}
# The task each label kind is for: a 0/1 outcome or an amount.
LABEL_TASK: dict[str, str] = {"active_buyers": "binary", "browsers": "binary", "future_spend": "regression"}


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
    purge_test: bool = Field(
        True,
        description="with purge, also a gap between validation and test; false puts validation right before "
        "the test cutoff and training a horizon closer to today (train stays purged from validation)",
    )
    adapt: bool = Field(
        True, description="on a short history, use fewer validation cutoffs (down to 1) before giving up"
    )


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


class RayFit(StrictModel):
    """The final fit on Ray Train (``engine: ray``): data-parallel LightGBM over the workers."""

    workers: int = Field(2, ge=1, description="Ray Train workers, each fitting on its shard of the training rows")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (LightGBM threads) per worker")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the Ray started for the fit when RAY_ADDRESS is "
                                 "unset; null: every core of this machine")


class Tuning(StrictModel):
    trials: int = Field(30, ge=0)
    timeout_seconds: float | None = Field(None, gt=0)
    seed: int = 42
    startup_trials: int = Field(8, ge=0, description="random trials before TPE takes over")
    pruner_warmup_rounds: int = Field(30, ge=0, description="boosting rounds before a trial may be pruned")
    pruner_startup_trials: int = Field(5, ge=0)
    report_every_rounds: int = Field(
        10, ge=1, description="rounds between reports to the pruner (each report is a storage write)"
    )
    early_stopping_rounds: int = Field(30, ge=1)
    max_boost_rounds: int = Field(400, ge=1, description="small trees keep exact TreeSHAP cheap")
    num_threads: int = Field(2, ge=1)
    fixed_params: dict[str, str | int | float | bool] = Field(
        default_factory=lambda: {"bagging_freq": 1}, description="bagging_fraction only acts when bagging_freq > 0"
    )
    monotone: dict[str, Literal[-1, 1]] = Field(
        default_factory=dict,
        description="feature -> +1 (never lowers the score) or -1 (never raises it): LightGBM monotone constraints",
    )
    never_as_oldest: list[str] = Field(
        default_factory=list,
        description="day counts whose missing value means 'never' (e.g. days_since_last_product_view): the model "
        "reads it as one day past the training maximum, so a monotone constraint on the feature also covers the "
        "step from never to a first time (LightGBM's constraints do not reach missing values); reasons still "
        "say 'never'",
    )
    search_space: dict[str, Param]
    engine: Literal["local", "ray"] = Field(
        "local", description="where the final fit of the best trial runs: local (this process, the fastest on "
        "one machine) or ray (Ray Train's LightGBM trainer over tuning.ray.workers; the trials stay on Optuna)"
    )
    ray: RayFit = RayFit()


class CalibrationSpec(StrictModel):
    """How a binary model's raw score becomes a probability, fitted on the validation split (rows the
    booster never trained on; early stopping reads them, but only to pick the number of trees)."""

    method: Literal["platt", "isotonic"] = Field(
        "isotonic", description="platt: a sigmoid of the raw score; isotonic: the observed rates, interpolated "
        "between isotonic blocks (strictly increasing, so ranks and AUC stay the raw score's)"
    )
    isotonic_min_rows: int = Field(
        1000, ge=2, description="isotonic needs at least this many validation rows; with fewer, Platt is fitted"
    )


class Promotion(StrictModel):
    metric: Literal["roc_auc", "pr_auc", "normalized_gini", "top_decile_capture"] = Field(
        "roc_auc", description="roc_auc / pr_auc for binary models; normalized_gini / top_decile_capture for regression"
    )
    margin: float = Field(0.002, ge=0, description="challenger must beat the champion by at least this much")


class BandThresholds(StrictModel):
    """probability >= high -> "high", >= medium -> "medium", else "low"; the API and batch scoring share them."""

    # Probabilities for a binary model, amounts for a regression one (cuts resolved from shares).
    high: float = Field(gt=0)
    medium: float = Field(ge=0)

    @model_validator(mode="after")
    def _high_above_medium(self) -> BandThresholds:
        if self.high <= self.medium:
            raise ValueError(f"high ({self.high}) must be above medium ({self.medium})")
        return self


class BandShares(StrictModel):
    """Bands from the score distribution, for a business whose base rates nobody knows in advance: the
    top ``high_top_fraction`` of the training population's scores (the test split, at training time) is
    "high", the next ones up to ``medium_top_fraction`` "medium". The cuts found are stored with the model
    version, so the API and batch scoring use the same numbers."""

    high_top_fraction: float = Field(gt=0, lt=1)
    medium_top_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _medium_wider(self) -> BandShares:
        if self.medium_top_fraction <= self.high_top_fraction:
            raise ValueError("medium_top_fraction must exceed high_top_fraction")
        return self

    def thresholds(self, scores) -> BandThresholds:
        import numpy as np

        values = np.asarray(scores, dtype="float64")
        high = float(np.quantile(values, 1 - self.high_top_fraction))
        medium = float(np.quantile(values, 1 - self.medium_top_fraction))
        # Ties at the cut (a plateau of equal scores) must not collapse the two cuts into one.
        medium = min(medium, np.nextafter(high, 0.0))
        return BandThresholds(high=max(high, 1e-12), medium=max(medium, 0.0))


class Baseline(StrictModel):
    """The simple baseline `propensity evaluate` puts beside the model: one feature, oriented."""

    feature: str = Field(description="e.g. days_since_last_order")
    higher_means_positive: bool = Field(description="True when a larger value makes the label more likely")


class GroundTruth(StrictModel):
    """Columns of the generator's ground_truth.parquet that hold this model's true probability and driver."""

    probability: str
    driver: str


class ModelSpec(StrictModel):
    """One model: what it predicts, from which features and events, how it is tuned, gated and banded.

    ``configs/models/<name>.yaml``; training, promotion, serving, scoring, monitoring, the run pipeline
    and the CLI iterate over ``load_specs()``.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="registered model name; equals the file name")
    description: str = ""
    task: Literal["binary", "regression"] = Field(
        "binary", description="binary: a calibrated probability; regression: an amount (e.g. future spend)"
    )
    feature_service: str
    needs: list[str] = Field(
        default_factory=list,
        description="event families the model needs besides the label's own; it is skipped when one is absent",
    )
    labels: Labels
    bands: BandThresholds | BandShares = Field(
        description="fixed probability cuts {high, medium}, or shares of the score distribution "
        "{high_top_fraction, medium_top_fraction}"
    )
    cutoffs: Cutoffs = Cutoffs()
    split: Split = Split()
    min_data: MinData = MinData()
    tuning: Tuning
    promotion: Promotion = Promotion()
    calibration: CalibrationSpec = Field(
        CalibrationSpec(), description="binary models: how the probability is fitted (regression: unused)"
    )
    shap_sample_rows: int = Field(2000, ge=10, description="rows explained for the SHAP summary plot")
    boost_from: str | None = Field(
        None,
        description="a model input that already predicts the label, for the trees to start from instead of a "
        "constant and learn what it misses: for a binary model a probability of the positive label (e.g. "
        "btyd_p_no_order, BG/NBD's), started from as log-odds; for a regression an amount (e.g. "
        "btyd_expected_spend, BG/NBD x Gamma-Gamma's), started from as its log scaled to the label's level "
        "on the train split. Its part is shown as that feature's contribution",
    )
    baseline: Baseline
    ground_truth: GroundTruth | None = Field(None, description="generated data only: the oracle columns")
    reasons_from: str | None = Field(
        None,
        description="the configs/reasons.yaml model section whose causes and feature-to-cause map this model "
        "uses when reasons.yaml has no section of its own (e.g. churn for another retention model)",
    )
    _source: Path | None = PrivateAttr(None)  # the file the spec was read from (set by the loader)

    @field_validator("needs")
    @classmethod
    def _known_families(cls, needs: list[str]) -> list[str]:
        from core.contract import EVENT_FAMILIES

        unknown = [n for n in needs if n not in EVENT_FAMILIES]
        if unknown:
            raise ValueError(f"unknown event family {unknown}; known: {', '.join(EVENT_FAMILIES)}")
        return needs

    @model_validator(mode="after")
    def _task_fits(self) -> ModelSpec:
        if self.task == "binary" and isinstance(self.bands, BandThresholds) and self.bands.high > 1:
            raise ValueError(f"bands.high {self.bands.high} is not a probability (binary task)")
        if LABEL_TASK[self.labels.kind] != self.task:
            raise ValueError(f"labels.kind {self.labels.kind!r} is a {LABEL_TASK[self.labels.kind]} label; task is {self.task!r}")
        binary_metric = self.promotion.metric in ("roc_auc", "pr_auc")
        if binary_metric != (self.task == "binary"):
            raise ValueError(f"promotion.metric {self.promotion.metric!r} does not fit task {self.task!r}")
        return self

    def required_families(self) -> list[str]:
        """Every event family the model cannot be trained or scored without."""
        return list(dict.fromkeys([*LABEL_NEEDS[self.labels.kind], *self.needs]))

    def missing_families(self, present: Iterable[str]) -> list[str]:
        have = set(present)
        return [f for f in self.required_families() if f not in have]

    @property
    def config_file(self) -> str:
        return str(self._source) if self._source else f"configs/{MODELS_DIR}/{self.name}.yaml"


MODELS_DIR = "models"


def specs_dir() -> Path:
    return config_path(MODELS_DIR)


def load_spec(name: str | None = None, path: str | Path | None = None) -> ModelSpec:
    """``configs/models/<name>.yaml`` (or ``path``) as a ModelSpec; its name must match the file name."""
    if path is None:
        if name is None:
            raise ValueError("give a model name or a spec path")
        path = specs_dir() / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(model_names()) or "none"
            raise ConfigError(f"no model spec {path} (known models: {known})")
    path = Path(path)
    spec = load_config(path, ModelSpec)
    if name is not None and spec.name != name:
        raise ConfigError(f"{path}: field 'name' is {spec.name!r}, expected {name!r}")
    spec._source = path
    return spec


def model_names() -> list[str]:
    """Names of the model specs in configs/models/, sorted."""
    folder = specs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_specs() -> dict[str, ModelSpec]:
    """Every model spec of the project, by name (sorted), each validated."""
    specs = {}
    for name in model_names():
        spec = load_spec(path=specs_dir() / f"{name}.yaml")
        if spec.name != name:
            raise ConfigError(f"{spec.config_file}: field 'name' is {spec.name!r}, expected {name!r} (the file name)")
        specs[name] = spec
    return specs


def split_by_data(specs: dict[str, ModelSpec], present: Iterable[str]) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The specs the data supports, and for each other one why it is skipped (a line, not a failure)."""
    present = list(present)
    usable, skipped = {}, {}
    for name, spec in specs.items():
        missing = spec.missing_families(present)
        if missing:
            skipped[name] = f"needs {', '.join(missing)}, which the event store does not hold"
        else:
            usable[name] = spec
    return usable, skipped


def specs_for_data(store=None) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The specs the project's event store supports, and why each other one is skipped."""
    from core.events import EventStore
    from core.settings import project_paths

    store = store or EventStore(project_paths().events)
    present = [f for f, status in store.families().items() if status != "absent"]
    usable, skipped = split_by_data(load_specs(), present)
    for name, spec in list(usable.items()):
        for table, columns in LABEL_COLUMNS.get(spec.labels.kind, {}).items():
            missing = [c for c in columns if c not in store.columns(table)]
            if missing:
                skipped[name] = f"needs {table}.{', '.join(missing)}, which the event store does not hold"
                usable.pop(name)
    return usable, skipped
