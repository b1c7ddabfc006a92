"""SHAP reasons and plain-language sentences, for the service and for batch scoring.

Contributions come from LightGBM's own TreeSHAP (``Booster.predict(X, pred_contrib=True)``): the same
numbers ``shap.TreeExplainer`` gives, without its 5 s import. Row layout: one column per feature, the last
column is the base value, and base + contributions = the model's raw score (log-odds) for that row.

Public API (batch scoring uses these too):
- ``load_templates(path=None) -> ReasonTemplates``  (configs/reasons.yaml)
- ``explain(contributions, features, feature_names, model_name, top_k, lang, templates)``: reasons for
  every row, ranking vectorised in numpy
- ``explain_model(model, features, top_k=5, lang="en", templates=None)``: same from a LoadedModel
- ``explain_table(contributions, features, feature_names, model_name, top_k, lang, templates)``: the batch
  form: per row the joined sentences and the reasons as JSON, formatted per (feature, template) group with
  array operations (no Python call per reason)
- ``band(probabilities, thresholds)``: "high" / "medium" / "low" per probability
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring  # json.dumps(str, ensure_ascii=False), in C
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from core.config import StrictModel, config_path, load_config
from core.errors import ConfigError

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
        # Spelled out: dataclasses.asdict deep-copies every field, a quarter of the reasons' cost.
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": self.contribution,
            "direction": self.direction,
            "sentence": self.sentence,
        }


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


def _ranked_cells(contributions, features, feature_names, model_name, top_k, lang, templates):
    """Checks shared by ``explain`` and ``explain_table``; returns the feature columns as arrays, the
    templates, and each row's top-k feature indices with their contributions."""
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
    return columns, templates, top, top_values


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
    columns, templates, top, top_values = _ranked_cells(
        contributions, features, feature_names, model_name, top_k, lang, templates
    )
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


# ---------------------------------------------------------------------------------------------- batch form
def explain_table(
    contributions: np.ndarray,
    features: pd.DataFrame | Mapping[str, np.ndarray],
    feature_names: list[str],
    model_name: str,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch scoring's reasons: per row ``"; "``-joined sentences and a JSON list of reason objects.

    Same reasons, sentences and JSON as ``explain`` + ``json.dumps([{"model": ..., **r.to_dict()}])``, but
    built column-wise: the top-k cells are grouped by (feature, template) and each group's sentences are
    made with array operations, so the cost per reason is a few array passes instead of Python calls.
    Returns two object arrays of strings, one element per row ("" and "[]" for a row with no reason).
    """
    columns, templates, top, top_values = _ranked_cells(
        contributions, features, feature_names, model_name, top_k, lang, templates
    )
    n_ranks = top.shape[1]
    # Zero contributions sort last, so the kept cells of a row are a prefix of its ranks.
    kept = top_values != 0.0
    sentences = np.full(top.shape, "", dtype=object)
    values_json = np.full(top.shape, "null", dtype=object)
    numeric = _NumericColumns(columns)
    unknown = templates.unknown_value.get(lang, "unknown")
    for f_index, feature in enumerate(feature_names):
        cells = np.flatnonzero((top == f_index).ravel() & kept.ravel())
        if cells.size == 0:
            continue
        rows = cells // max(n_ranks, 1)
        own = numeric.get(feature, rows)
        missing = _missing_mask(own)
        values_json.ravel()[cells] = _json_numbers(own, missing)
        entry = templates.features.get(feature)
        if entry is None:
            sentences.ravel()[cells] = _generic_sentences(feature, own, missing, unknown)
            continue
        template = getattr(entry, lang)
        missing_template = getattr(entry, f"{lang}_missing")
        variants = [(missing, missing_template), (~missing, template)] if missing_template else [
            (np.ones(cells.size, dtype=bool), template)]
        for where, text in variants:
            if where.any():
                sentences.ravel()[cells[where]] = _format_template(
                    text, rows[where], numeric, unknown, feature, entry.label, own[where])
    # JSON per kept cell, then per row; str.format mapped over columns runs in C, one call per string.
    model_json = encode_basestring(model_name).replace("{", "{{").replace("}", "}}")
    cell_format = '{{"model": ' + model_json + ', "feature": {}, "value": {}, "contribution": {}, ' \
        '"direction": {}, "sentence": {}}}'
    flat_kept = kept.ravel()
    kept_values = top_values.ravel()[flat_kept]
    cell_json = np.full(top.shape, "", dtype=object)
    cell_json.ravel()[flat_kept] = list(map(
        cell_format.format,
        np.asarray([encode_basestring(f) for f in feature_names], dtype=object)[top.ravel()[flat_kept]],
        values_json.ravel()[flat_kept],
        map(float.__repr__, kept_values.tolist()),
        np.where(kept_values > 0, '"raises"', '"lowers"').astype(object),
        map(encode_basestring, sentences.ravel()[flat_kept]),
    ))
    joined = np.full(len(top), "", dtype=object)
    as_json = np.full(len(top), "[]", dtype=object)
    n_kept = kept.sum(axis=1)
    for count in range(1, n_ranks + 1):
        rows = np.flatnonzero(n_kept == count)
        if rows.size:
            joined[rows] = list(map("; ".join(["{}"] * count).format, *sentences[rows, :count].T))
            row_format = "[" + ", ".join(["{}"] * count) + "]"
            as_json[rows] = list(map(row_format.format, *cell_json[rows, :count].T))
    return joined, as_json


class _NumericColumns:
    """Feature columns as float64 (missing -> NaN) where they are numeric, converted once and on demand."""

    def __init__(self, columns: Mapping[str, np.ndarray]):
        self.columns = columns
        self.cache: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def get(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name not in self.cache:
            values = self.columns.get(name)
            if values is None:
                self.cache[name] = np.full(len(next(iter(self.columns.values()))), np.nan)
            else:
                converted = pd.to_numeric(pd.Series(values), errors="coerce")
                # Text columns (a segment name) stay as they are; numbers become float64 like ``_plain``.
                numeric_ok = converted.notna().sum() == pd.Series(values).notna().sum()
                self.cache[name] = converted.to_numpy(dtype=np.float64, na_value=np.nan) if numeric_ok \
                    else np.asarray(values, dtype=object)
        return self.cache[name][rows]


def _missing_mask(values: np.ndarray) -> np.ndarray:
    return np.isnan(values) if values.dtype.kind == "f" else pd.isna(values)


def _format_values(values: np.ndarray, spec: str, unknown: str) -> np.ndarray:
    """``format(value, spec)`` for every element, computed once per distinct value; missing -> ``unknown``."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    shown = np.array([format(v, spec) for v in np.asarray(uniques).tolist()] + [unknown], dtype=object)
    return shown[codes]  # code -1 (missing) picks the trailing "unknown"


def _format_template(text: str, rows: np.ndarray, numeric: _NumericColumns, unknown: str, feature: str,
                     label: str | None, own: np.ndarray) -> np.ndarray:
    """One template over many rows: literal parts are broadcast, each placeholder formatted column-wise."""
    parts = list(string.Formatter().parse(text))
    absent = next((name for _, name, _, _ in parts if name and name not in numeric), None)
    if absent is not None:  # same fallback as ``sentence``: say what is wrong rather than fail
        shown = _format_values(own, "", "None")
        return (f"{(label or feature).replace('_', ' ')}: " + shown + f" (template needs {absent})").astype(object)
    positional, columns = "", []
    for literal, name, spec, convert_flag in parts:
        positional += literal.replace("{", "{{").replace("}", "}}")  # parse() unescaped them
        if name is not None:
            values = numeric.get(name, rows)
            if convert_flag:
                convert = {"r": repr, "s": str, "a": ascii}[convert_flag]
                values = np.array([convert(v) for v in values.tolist()], dtype=object)
            positional += "{}"
            columns.append(_format_values(values, spec or "", unknown))
    if not columns:
        return np.full(rows.size, positional.format(), dtype=object)
    return np.array(list(map(positional.format, *columns)), dtype=object)


def _generic_sentences(feature: str, own: np.ndarray, missing: np.ndarray, unknown: str) -> np.ndarray:
    shown = _format_values(own, "g" if own.dtype.kind == "f" else "", unknown)
    return (f"{feature.replace('_', ' ')}: " + shown).astype(object)


def _json_numbers(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """JSON text of each value as ``json.dumps`` writes a float (missing -> null), one repr per distinct value."""
    if values.dtype.kind != "f":
        values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    shown = np.array([float.__repr__(v) for v in uniques.tolist()] + ["null"], dtype=object)
    return shown[codes]


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
