"""SHAP reasons and plain-language sentences, for the service and for batch scoring.

Contributions come from LightGBM's own TreeSHAP (``Booster.predict(X, pred_contrib=True)``): the same
numbers ``shap.TreeExplainer`` gives, without its 5 s import. Row layout: one column per feature, the last
column is the base value, and base + contributions = the model's raw score (log-odds) for that row.

Public API (batch scoring uses these too):
- ``load_templates(path=None) -> ReasonTemplates``  (configs/reasons.yaml)
- ``explain(contributions, features, feature_names, model_name, top_k, lang, templates)``: reasons for
  every row, ranking vectorised in numpy
- ``explain_model(model, features, top_k=5, lang="en", templates=None)``: same from a LoadedModel
- ``band(probabilities, thresholds)``: "high" / "medium" / "low" per probability
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from pipelines.config import StrictModel, config_path, load_config
from pipelines.errors import ConfigError

Lang = Literal["en", "zh"]
LANGS: tuple[str, ...] = ("en", "zh")


# ---------------------------------------------------------------------------------------------- config
class FeatureTemplate(StrictModel):
    driver: dict[str, str] = Field(default_factory=dict, description="model name -> generator driver")
    en: str
    zh: str
    en_missing: str | None = None
    zh_missing: str | None = None
    label: str | None = None


class ReasonTemplates(StrictModel):
    unknown_value: dict[str, str] = Field(default_factory=lambda: {"en": "unknown", "zh": "未知"})
    features: dict[str, FeatureTemplate]

    def driver_of(self, feature: str, model_name: str) -> str:
        entry = self.features.get(feature)
        return entry.driver.get(model_name, "none") if entry else "none"


def load_templates(path: str | Path | None = None) -> ReasonTemplates:
    """Load and check configs/reasons.yaml: every placeholder must be a feature name with a valid spec."""
    path = Path(path) if path is not None else config_path("reasons.yaml")
    templates = load_config(path, ReasonTemplates)
    for feature, entry in templates.features.items():
        for field in ("en", "zh", "en_missing", "zh_missing"):
            text = getattr(entry, field)
            if text is None:
                continue
            try:
                _SentenceFormatter("?").vformat(text, (), _ProbeRow())
            except (ValueError, KeyError, IndexError) as exc:
                raise ConfigError(f"{path}: features.{feature}.{field}: bad template {text!r}: {exc}") from exc
    return templates


class _ProbeRow(dict):
    """Answers every placeholder with 1.0 so a template's format specs can be checked at load time."""

    def __getitem__(self, key: str) -> float:
        return 1.0


# ---------------------------------------------------------------------------------------------- sentences
class _SentenceFormatter(string.Formatter):
    """str.format that renders a missing value (None / NaN) as a word instead of failing on ``:.0f``."""

    def __init__(self, unknown: str):
        self.unknown = unknown

    def format_field(self, value: Any, format_spec: str) -> str:
        if _is_missing(value):
            return self.unknown
        return super().format_field(value, format_spec)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def sentence(feature: str, row: dict[str, Any], lang: str, templates: ReasonTemplates) -> str:
    """The plain-language sentence for ``feature`` of one row (values of other features may appear)."""
    unknown = templates.unknown_value.get(lang, "unknown")
    entry = templates.features.get(feature)
    value = row.get(feature)
    if entry is None:
        shown = unknown if _is_missing(value) else f"{value:g}" if isinstance(value, float) else str(value)
        return f"{feature.replace('_', ' ')}: {shown}"
    template = getattr(entry, lang)
    if _is_missing(value) and getattr(entry, f"{lang}_missing"):
        template = getattr(entry, f"{lang}_missing")
    try:
        return _SentenceFormatter(unknown).vformat(template, (), row)
    except KeyError as exc:
        # A template that names a feature this model does not have: say so rather than fail a request.
        return f"{(entry.label or feature).replace('_', ' ')}: {value} (template needs {exc.args[0]})"


# ---------------------------------------------------------------------------------------------- reasons
@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    contribution: float
    direction: Literal["raises", "lowers"]
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_contributions(contributions: np.ndarray, top_k: int) -> np.ndarray:
    """Column indices of the ``top_k`` largest |contribution| per row (base-value column excluded), ranked.

    Vectorised: argpartition then a sort of only the k kept columns, so cost stays O(rows x features).
    """
    shap_values = np.abs(contributions[:, :-1])
    n_features = shap_values.shape[1]
    k = max(0, min(top_k, n_features))
    if k == 0:
        return np.empty((shap_values.shape[0], 0), dtype=np.int64)
    if k < n_features:
        candidates = np.argpartition(-shap_values, k - 1, axis=1)[:, :k]
    else:
        candidates = np.tile(np.arange(n_features), (shap_values.shape[0], 1))
    order = np.argsort(-np.take_along_axis(shap_values, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def explain(
    contributions: np.ndarray,
    features: pd.DataFrame | Mapping[str, np.ndarray],
    feature_names: list[str],
    model_name: str,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
) -> list[list[Reason]]:
    """Top-k reasons for every row of ``features`` (aligned with ``contributions`` row for row).

    ``features`` is a DataFrame or a mapping of column name -> array (the service's cheaper form).

    ``contributions`` is ``pred_contrib`` output: len(feature_names) + 1 columns, the last the base value.
    Zero contributions (a feature the trees never used for this row) are not reasons and are dropped.
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    columns = (
        {c: features[c].to_numpy() for c in features.columns} if isinstance(features, pd.DataFrame) else features
    )
    n_rows = len(next(iter(columns.values()))) if columns else 0
    if contributions.shape != (n_rows, len(feature_names) + 1):
        raise ValueError(
            f"contributions have shape {contributions.shape}; expected "
            f"({n_rows}, {len(feature_names) + 1}) for {model_name}"
        )
    templates = templates or load_templates()
    top = rank_contributions(contributions, top_k)
    top_values = np.take_along_axis(contributions[:, :-1], top, axis=1)
    names = np.asarray(feature_names)
    out: list[list[Reason]] = []
    for i, (idx, vals) in enumerate(zip(top, top_values, strict=True)):
        # The whole row, so templates can cite any column (e.g. open complaints next to complaints).
        row = {col: _plain(values[i]) for col, values in columns.items()}
        reasons = []
        for feature, contribution in zip(names[idx], vals, strict=True):
            if contribution == 0.0:
                continue
            value = row.get(feature)
            reasons.append(
                Reason(
                    feature=str(feature),
                    value=None if _is_missing(value) else float(value),
                    contribution=float(contribution),
                    direction="raises" if contribution > 0 else "lowers",
                    sentence=sentence(str(feature), row, lang, templates),
                )
            )
        out.append(reasons)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python floats / str; missing -> None (JSON-ready, template-ready)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, np.integer | np.floating | int | float) and not isinstance(value, bool):
        return float(value)
    return value


def explain_model(
    model: Any,
    features: pd.DataFrame,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
) -> list[list[Reason]]:
    """Reasons for every row of ``features`` from a ``training.champion.LoadedModel``.

    ``features`` must hold the model's feature columns (extra columns are fine and may appear in sentences).
    """
    missing = [c for c in model.feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"features for model {model.name} lack columns: {', '.join(missing)}")
    X = features[model.feature_names].to_numpy(dtype=np.float64)
    return explain(model.contributions(X), features, list(model.feature_names), model.name, top_k, lang, templates)


def top_driver_agreement(
    reasons: list[list[Reason]], true_drivers: list[str], model_name: str, templates: ReasonTemplates
) -> float:
    """Share of rows whose top risk-raising reason belongs to the generator's true driver.

    Rows whose true driver is "none" are left out: there is nothing to agree with.
    """
    hits = total = 0
    for row_reasons, truth in zip(reasons, true_drivers, strict=True):
        if truth == "none":
            continue
        total += 1
        raising = [r for r in row_reasons if r.direction == "raises"]
        if raising and templates.driver_of(raising[0].feature, model_name) == truth:
            hits += 1
    return hits / total if total else float("nan")


# ---------------------------------------------------------------------------------------------- bands
BANDS = ("high", "medium", "low")


def band(probabilities: np.ndarray | list[float] | float, thresholds: Any) -> np.ndarray:
    """"high" when p >= thresholds.high, "medium" when p >= thresholds.medium, else "low" (vectorised).

    ``thresholds`` is anything with ``high`` and ``medium`` attributes or keys (serving config ``bands.<model>``).
    """
    high = thresholds["high"] if isinstance(thresholds, dict) else thresholds.high
    medium = thresholds["medium"] if isinstance(thresholds, dict) else thresholds.medium
    p = np.atleast_1d(np.asarray(probabilities, dtype=np.float64))
    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low")).astype(object)
