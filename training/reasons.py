"""Reasons by cause, in plain language, for the service, batch scoring and evaluation.

Contributions come from LightGBM's own TreeSHAP (``Booster.predict(X, pred_contrib=True)``): the same
numbers ``shap.TreeExplainer`` gives, without its 5 s import. Row layout: one column per feature, the last
column is the base value, and base + contributions = the model's raw score (log-odds) for that row.

Every model feature belongs to one cause (``configs/reasons.yaml``, ``features.<f>.cause.<model>``): the
contributions of a cause's features are summed, the causes are ranked, and each is shown as a headline
with its one or two strongest facts ("Complaints (raises the churn risk): 3 complaints in the last 30
days, 1 still open; last complaint 12 days ago"). Three rankings (docs/training.md, "Reasons by cause"):

- ``snapshot``: today's features only (the API's hot path: one pred_contrib call);
- ``history``: the customer's own weekly past (``History``): the week the risk rose most, and the cause
  whose contribution rose most that week; its date goes into the top cause's line ("risk rose from 40%
  to 95% in the week to 3 May 2026"). Needs past snapshots, so batch scoring and evaluate use it;
- ``population``: against the scored population (``CauseScale``): ``shap_z``, and ``shap_z_event``, which
  adds the surprisal of a fresh event in the cause over the customer's last days (``History.events``).

The CRM text names only causes that raise the score, and in each only facts that raise it; the signed
detail (every cause, raising or lowering, and its facts with their contributions) is in the JSON.

Public API:
- ``load_templates(path=None) -> ReasonTemplates``  (configs/reasons.yaml, checked)
- ``explain(contributions, features, feature_names, model_name, top_k, lang, templates, history=None)``:
  ``Reason`` objects (one per cause) for every row
- ``explain_model(model, features, top_k=5, lang="en", templates=None, history=None)``: same from a
  LoadedModel
- ``explain_table(...)``: the batch form: per row the CRM text and the reasons as JSON
- ``history_of(model, past, dates)``: a ``History`` from past feature frames
- ``top_cause(...)``, ``top_driver_agreement(...)``: the top raising cause, checked against a truth
- ``band(probabilities, thresholds)``: "high" / "medium" / "low" per probability
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from core.config import StrictModel, config_path, load_config
from core.errors import ConfigError

Lang = Literal["en", "zh"]
LANGS: tuple[str, ...] = ("en", "zh")
NO_CAUSE = "none"  # the top cause of a row where no cause raises the score
HISTORY_METHODS = ("largest_cause_rise", "largest_jump", "change_since_lowest")
POPULATION_METHODS = ("shap_z", "shap_z_event")
METHODS = ("shap_sum", *POPULATION_METHODS, *HISTORY_METHODS)


# ---------------------------------------------------------------------------------------------- config
class FeatureTemplate(StrictModel):
    cause: dict[str, str] = Field(description="model name -> the cause this feature belongs to")
    en: str
    zh: str
    en_missing: str | None = None
    zh_missing: str | None = None
    label: str | None = None


class LanguageText(StrictModel):
    unknown: str = Field(description="a missing value in a fact")
    line: str = Field(description="a cause line: {headline}, {direction}, {evidence}")
    evidence_sep: str
    cause_sep: str
    rose: str = Field(description="when the risk rose: {before}, {after}, {date}")
    date_format: str = Field(description="strftime format of {date}")
    singular: dict[str, str] = Field(default_factory=dict, description="plural noun after 1 -> singular")


class Words(StrictModel):
    en: str
    zh: str


class ModelCauses(StrictModel):
    raises: Words = Field(description="direction words of a cause that raises the score")
    lowers: Words
    nothing_raises: Words = Field(description="the CRM text of a row where no cause raises the score")
    causes: dict[str, Words] = Field(description="cause name -> headline")


class Ranking(StrictModel):
    snapshot: Literal["shap_sum"] = Field(description="ranking from today's features alone (the API)")
    history: Literal["largest_cause_rise", "largest_jump", "change_since_lowest"] = Field(
        description="ranking from the customer's weekly past, for the models in history_models")
    history_models: list[str] = Field(description="models ranked by their history when it is at hand")
    history_weeks: int = Field(ge=1, le=104, description="weekly snapshots before today the history reads")
    population: Literal["shap_z", "shap_z_event"] = Field(
        description="ranking against the scored population, for the models in population_models")
    population_models: list[str] = Field(description="models ranked against the population when at hand")
    event_days: int = Field(ge=1, le=28, description="daily snapshots before today that shap_z_event reads "
                                                     "for fresh events")
    evidence: int = Field(ge=1, le=3, description="facts shown per cause")
    scale_rows: int = Field(20_000, ge=100, description="customers of the test split whose spread (and daily "
                                                         "events) make the scale stored with a trained model")


class Ceiling(StrictModel):
    """The supervised ceiling `propensity evaluate` puts beside the agreement: a LightGBM multiclass
    classifier of the true driver from the same features, cross-validated."""

    folds: int = Field(ge=2, le=20)
    rounds: int = Field(ge=10, le=5000)
    learning_rate: float = Field(gt=0, le=1)
    num_leaves: int = Field(ge=2, le=1024)
    seed: int


class ReasonTemplates(StrictModel):
    languages: dict[str, LanguageText]
    ranking: Ranking
    ceiling: Ceiling
    models: dict[str, ModelCauses]
    features: dict[str, FeatureTemplate]
    _maps: dict = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr("configs/reasons.yaml")

    def cause_of(self, feature: str, model_name: str) -> str | None:
        entry = self.features.get(feature)
        return entry.cause.get(model_name) if entry else None

    def cause_map(self, model_name: str, feature_names: Sequence[str]) -> CauseMap:
        """The causes of ``model_name`` and the cause of each of its features (cached). A model without
        a ``models:`` entry or a feature without a cause is an error that names it."""
        key = (model_name, tuple(feature_names))
        if key not in self._maps:
            self._maps[key] = _build_cause_map(self, model_name, list(feature_names))
        return self._maps[key]


@dataclass(frozen=True)
class CauseMap:
    model: str
    causes: tuple[str, ...]
    of_feature: np.ndarray  # cause index per feature
    onehot: np.ndarray  # features x causes, 1 where the feature belongs to the cause
    cites: np.ndarray  # features x features: the fact of feature i already cites feature j


def _build_cause_map(templates: ReasonTemplates, model_name: str, feature_names: list[str]) -> CauseMap:
    source = templates._source
    if model_name not in templates.models:
        raise ConfigError(f"{source}: no models.{model_name} section: the causes of model {model_name!r} "
                          f"are not declared (known: {', '.join(sorted(templates.models))}); add one, or set "
                          f"reasons_from: <one of them> in the model's spec")
    causes = tuple(templates.models[model_name].causes)
    lacking = [f for f in feature_names if templates.cause_of(f, model_name) is None]
    if lacking:
        raise ConfigError(f"{source}: feature(s) {', '.join(lacking)} of model {model_name!r} have no cause: "
                          f"add features.<feature>.cause.{model_name} (one of {', '.join(causes)})")
    of_feature = np.array([causes.index(templates.cause_of(f, model_name)) for f in feature_names], dtype=np.int64)
    onehot = np.zeros((len(feature_names), len(causes)))
    onehot[np.arange(len(feature_names)), of_feature] = 1.0
    cites = np.zeros((len(feature_names), len(feature_names)), dtype=bool)
    position = {f: i for i, f in enumerate(feature_names)}
    for i, f in enumerate(feature_names):
        entry = templates.features[f]
        for text in (entry.en, entry.zh):
            for _, name, _, _ in string.Formatter().parse(text):
                if name in position and name != f:
                    cites[i, position[name]] = True
    return CauseMap(model_name, causes, of_feature, onehot, cites)


def load_templates(path: str | Path | None = None) -> ReasonTemplates:
    """Load and check configs/reasons.yaml: every placeholder must be a feature name with a valid spec,
    every language's texts must have their placeholders, and every cause a feature names must be declared."""
    path = Path(path) if path is not None else config_path("reasons.yaml")
    templates = load_config(path, ReasonTemplates)
    templates._source = str(path)
    _borrow_sections(templates)
    for lang in LANGS:
        if lang not in templates.languages:
            raise ConfigError(f"{path}: languages.{lang} is missing (every language needs its texts)")
    for lang, text in templates.languages.items():
        for name, needs in (("line", {"headline", "direction", "evidence"}), ("rose", {"before", "after", "date"})):
            got = {n for _, n, _, _ in string.Formatter().parse(getattr(text, name)) if n}
            if got != needs:
                raise ConfigError(f"{path}: languages.{lang}.{name}: needs exactly the placeholders "
                                  f"{', '.join(sorted(needs))}; has {', '.join(sorted(got)) or 'none'}")
    for feature, entry in templates.features.items():
        for model_name, cause in entry.cause.items():
            if model_name not in templates.models:
                raise ConfigError(f"{path}: features.{feature}.cause names model {model_name!r}, which has no "
                                  f"models.{model_name} section")
            if cause not in templates.models[model_name].causes:
                raise ConfigError(f"{path}: features.{feature}.cause.{model_name}: unknown cause {cause!r} "
                                  f"(models.{model_name}.causes: {', '.join(templates.models[model_name].causes)})")
        for fld in ("en", "zh", "en_missing", "zh_missing"):
            text = getattr(entry, fld)
            if text is None:
                continue
            try:
                _SentenceFormatter("?").vformat(text, (), _ProbeRow())
            except (ValueError, KeyError, IndexError) as exc:
                raise ConfigError(f"{path}: features.{feature}.{fld}: bad template {text!r}: {exc}") from exc
    return templates


def _borrow_sections(templates: ReasonTemplates) -> None:
    """A model spec with no section of its own in reasons.yaml but ``reasons_from: <model>`` gets that
    model's causes and feature-to-cause map, so a new model stays one YAML file."""
    from core.specs import load_specs

    for name, spec in load_specs().items():
        source = spec.reasons_from
        if name in templates.models or source is None:
            continue
        if source not in templates.models:
            raise ConfigError(f"{spec.config_file}: reasons_from {source!r} has no models.{source} section in "
                              f"{templates._source} (known: {', '.join(sorted(templates.models))})")
        templates.models[name] = templates.models[source]
        for entry in templates.features.values():
            if source in entry.cause:
                entry.cause[name] = entry.cause[source]


class _ProbeRow(dict):
    """Answers every placeholder with 1.0 so a template's format specs can be checked at load time."""

    def __getitem__(self, key: str) -> float:
        return 1.0


# ---------------------------------------------------------------------------------------------- facts
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
    """The plain-language fact for ``feature`` of one row (values of other features may appear)."""
    text = templates.languages[lang]
    entry = templates.features.get(feature)
    value = row.get(feature)
    if entry is None:
        shown = text.unknown if _is_missing(value) else f"{value:g}" if isinstance(value, float) else str(value)
        return f"{feature.replace('_', ' ')}: {shown}"
    template = getattr(entry, lang)
    if _is_missing(value) and getattr(entry, f"{lang}_missing"):
        template = getattr(entry, f"{lang}_missing")
    try:
        out = _SentenceFormatter(text.unknown).vformat(template, (), row)
    except KeyError as exc:
        # A template that names a feature this model does not have: say so rather than fail a request.
        return f"{(entry.label or feature).replace('_', ' ')}: {value} (template needs {exc.args[0]})"
    return str(_singular(np.array([out], dtype=object), text.singular)[0])


def _singular(sentences: np.ndarray, singular: Mapping[str, str]) -> np.ndarray:
    """"1 complaints" -> "1 complaint": a plural noun right after the number 1 (not 1.5, not 21)."""
    if not singular or sentences.size == 0:
        return sentences
    nouns = sorted(singular, key=len, reverse=True)  # "product pages" before "pages"
    pattern = re.compile(r"(?<![\d.,])1 (" + "|".join(re.escape(n) for n in nouns) + r")\b")
    out = sentences.copy()
    for i in np.flatnonzero(["1 " in s for s in sentences.tolist()]):  # the regex only where it can match
        out[i] = pattern.sub(lambda m: "1 " + singular[m.group(1)], out[i])
    return out


def _format_date(day: pd.Timestamp, text: LanguageText) -> str:
    return day.strftime(text.date_format)


# ---------------------------------------------------------------------------------------------- history
@dataclass(frozen=True)
class History:
    """The explained customers' own weekly past, row-aligned with the explained rows: per date (oldest
    first, today last) the raw score, the probability and each cause's summed contribution."""

    dates: list[pd.Timestamp]
    raw: np.ndarray  # dates x rows, log-odds
    probabilities: np.ndarray  # dates x rows
    cause_sums: np.ndarray  # dates x rows x causes
    present: np.ndarray  # dates x rows: the customer had any feature at that date (had joined)
    causes: tuple[str, ...]
    # (dates - 1) x rows x causes: between date t-1 and t a feature of the cause changed its value and
    # its own contribution rose (an event that raised the score, not an interaction's echo); None: unknown.
    events: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> History:
        """The same history for a subset of rows (a boolean mask or indices), e.g. the flagged ones."""
        return History(self.dates, self.raw[:, rows], self.probabilities[:, rows], self.cause_sums[:, rows],
                       self.present[:, rows], self.causes, None if self.events is None else self.events[:, rows])


def history_of(model: Any, frames: Sequence[pd.DataFrame], dates: Sequence[Any],
               templates: ReasonTemplates | None = None) -> History:
    """A ``History`` from the features of the same customers (same row order) at ``dates`` (oldest first;
    the last is today). One pred_contrib call per date; only cause sums are kept (memory: dates x rows x
    causes)."""
    if len(frames) != len(dates) or len(frames) < 2:
        raise ValueError(f"history_of: {len(frames)} feature frames for {len(dates)} dates (need >= 2, equal)")
    templates = templates or load_templates()
    cmap = templates.cause_map(model.name, model.feature_names)
    raws, probs, sums, present, events = [], [], [], [], []
    before: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for frame in frames:
        X = model.matrix(frame)
        contrib = model.contributions(X)
        raws.append(contrib.sum(axis=1))
        probs.append(model.from_contributions(contrib) if hasattr(model, "from_contributions")
                     else model.predict_proba(X))
        sums.append(contrib[:, :-1] @ cmap.onehot)
        present.append(np.isfinite(X).any(axis=1))
        if before is not None:
            events.append(_cause_events(before, (X, contrib[:, :-1], present[-1]), cmap))
        before = (X, contrib[:, :-1], present[-1])
    return History([pd.Timestamp(d) for d in dates], np.stack(raws), np.stack(probs), np.stack(sums),
                   np.stack(present), cmap.causes, np.stack(events))


def _cause_events(before, after, cmap: CauseMap) -> np.ndarray:
    """Rows x causes: some feature of the cause changed its value between two snapshots and its own
    contribution rose. Requiring the value to move keeps out TreeSHAP's echoes (a feature's share shifts
    when another feature changes); a customer absent from either snapshot has no event."""
    (x0, c0, p0), (x1, c1, p1) = before, after
    moved = ~((x0 == x1) | (np.isnan(x0) & np.isnan(x1)))
    raised = moved & (c1 > c0) & (p0 & p1)[:, None]
    return (raised.astype(np.float64) @ cmap.onehot) > 0


@dataclass(frozen=True)
class CauseScale:
    """Mean and spread of each cause's summed contribution over a reference population (the scored
    customers): ``shap_z`` ranks a cause by how unusual it is for this customer, not by its size."""

    causes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    # Share of the population with a fresh event per cause over ``event_steps`` daily steps (shap_z_event).
    event_rate: np.ndarray | None = None
    event_steps: int = 0


def cause_scale(contributions: np.ndarray | None, model_name: str, feature_names: Sequence[str],
                templates: ReasonTemplates | None = None, history: History | None = None) -> CauseScale:
    """A ``CauseScale`` from the contributions of a reference population (pred_contrib rows); with that
    population's ``history`` (same rows) also how common a fresh event of each cause is in it. Without
    ``contributions`` the history's last date (today) gives the summed contributions."""
    templates = templates or load_templates()
    cmap = templates.cause_map(model_name, feature_names)
    if contributions is None:
        if history is None:
            raise ValueError("cause_scale needs the population's contributions or its history")
        sums = history.cause_sums[-1]
    else:
        sums = contributions[:, :-1] @ cmap.onehot
    if history is None or history.events is None:
        return CauseScale(cmap.causes, sums.mean(axis=0), sums.std(axis=0))
    if history.events.shape[1:] != sums.shape:
        raise ValueError(f"cause_scale: history covers {history.events.shape[1:]} rows x causes; the population "
                         f"has {sums.shape}")
    fresh = history.events.any(axis=0)
    # Add-one smoothing: a cause no one in the reference had an event in still gets a finite surprisal.
    rate = (fresh.sum(axis=0) + 1.0) / (len(fresh) + 2.0)
    return CauseScale(cmap.causes, sums.mean(axis=0), sums.std(axis=0), rate, history.events.shape[0])


def ranking_method(templates: ReasonTemplates, model_name: str, history: History | None,
                   scale: CauseScale | None) -> str:
    """The ranking used for a model given what is at hand (configs/reasons.yaml ``ranking``)."""
    r = templates.ranking
    if history is not None and model_name in r.history_models:
        return r.history
    if scale is not None and model_name in r.population_models:
        if r.population == "shap_z_event" and (history is None or history.events is None
                                               or scale.event_rate is None):
            return "shap_z"  # no daily past at hand (the API): the population part alone
        return r.population
    return r.snapshot


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


def _rank_scores(sums: np.ndarray, method: str, history: History | None,
                 scale: CauseScale | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row and cause the ranking score, and per row and cause the index into ``history.dates`` of the
    week its contribution rose (-1: not known). ``sums`` are today's summed contributions per cause."""
    rose = np.full(sums.shape, -1, dtype=np.int64)
    if method == "shap_sum":
        return sums, rose
    if method in POPULATION_METHODS:
        if scale is None or scale.mean.shape != (sums.shape[1],):
            raise ValueError(f"{method} needs a CauseScale of the same causes")
        z = (sums - scale.mean) / np.where(scale.std > 0, scale.std, 1.0)
        if method == "shap_z":
            return z, rose
        return z + _event_surprisal(sums, history, scale), rose
    if history is None:
        raise ValueError(f"ranking {method!r} needs the customers' History")
    if history.cause_sums.shape[1:] != sums.shape:
        raise ValueError(f"history covers {history.cause_sums.shape[1:]} rows x causes; the rows explained "
                         f"have {sums.shape}")
    past = history.cause_sums
    both = (history.present[1:] & history.present[:-1])[:, :, None]
    if method == "largest_cause_rise":
        # Each cause's largest week-on-week rise over the customer's past: an event that raised the risk
        # months ago (a complaint before the customer went quiet) still counts after its features faded.
        rises = np.where(both, np.diff(past, axis=0), -np.inf)
        week = rises.argmax(axis=0)
        score = np.take_along_axis(rises, week[None], axis=0)[0]
        return score, np.where(score > 0, week + 1, -1)
    if method == "largest_jump":
        # The week the raw score rose most, and how much each cause rose that week.
        jumps = np.diff(history.raw, axis=0)
        jumps[~both[:, :, 0]] = -np.inf
        week = jumps.argmax(axis=0)
        rows = np.arange(len(sums))
        rise = jumps[week, rows]
        score = past[week + 1, rows] - past[week, rows]
        rose[:] = np.where(rise > 0, week + 1, -1)[:, None]
        return np.where((rise > 0)[:, None], score, sums), rose
    if method == "change_since_lowest":
        raw = np.where(history.present, history.raw, np.inf)
        low = raw.argmin(axis=0)
        return sums - past[low, np.arange(len(sums))], rose
    raise ValueError(f"unknown ranking method {method!r} ({', '.join(METHODS)})")


def _event_surprisal(sums: np.ndarray, history: History | None, scale: CauseScale) -> np.ndarray:
    """Per row and cause -log(share of the population with a fresh event of the cause) where the customer
    had one in the daily past, else 0: a cart viewed yesterday, rare among all customers, says more about
    this customer than a visit, which nearly everyone made; added to the cause's z, both in units of
    "how unusual"."""
    if history is None or history.events is None or scale.event_rate is None:
        raise ValueError("shap_z_event needs the customers' daily History and a CauseScale with event rates")
    if history.events.shape[1:] != sums.shape:
        raise ValueError(f"history covers {history.events.shape[1:]} rows x causes; the rows explained "
                         f"have {sums.shape}")
    if history.events.shape[0] != scale.event_steps:
        raise ValueError(f"history has {history.events.shape[0]} daily steps, the population's event rates "
                         f"{scale.event_steps}: both must cover the same days")
    return np.where(history.events.any(axis=0), -np.log(scale.event_rate), 0.0)


@dataclass
class _Ranked:
    cmap: CauseMap
    sums: np.ndarray  # rows x causes: today's summed contribution per cause
    order: np.ndarray  # rows x causes: cause indices, raising causes first (by the ranking), then lowering
    n_raising: np.ndarray  # rows: how many causes of ``order`` raise the score
    n_kept: np.ndarray  # rows: raising + lowering (a cause with a zero sum is no reason)
    evidence: np.ndarray  # rows x causes (order positions) x facts: feature index, -1 for none
    rose: np.ndarray  # rows: index into history.dates of the week the risk rose (-1: none)
    method: str
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)


def _rank(contributions, features, feature_names, model_name, lang, templates, history, scale=None) -> tuple[_Ranked, ReasonTemplates]:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    if features is None:  # ranking only (top_causes): no sentence reads a column
        columns, n_rows = {}, len(contributions)
    else:
        columns = _FrameColumns(features) if isinstance(features, pd.DataFrame) else features
        n_rows = len(next(iter(columns.values()))) if columns else 0
    if contributions.shape != (n_rows, len(feature_names) + 1):
        raise ValueError(
            f"contributions have shape {contributions.shape}; expected "
            f"({n_rows}, {len(feature_names) + 1}) for {model_name}"
        )
    templates = templates or load_templates()
    cmap = templates.cause_map(model_name, feature_names)
    shap_values = contributions[:, :-1]
    sums = shap_values @ cmap.onehot
    method = ranking_method(templates, model_name, history, scale)
    score, rose_by_cause = _rank_scores(sums, method, history, scale)
    raising = sums > 0
    key = np.where(raising, score, -np.inf)
    # A row whose history names no raising cause that rose falls back to today's contributions.
    fallback = ~(key.max(axis=1, initial=-np.inf) > 0) if method in HISTORY_METHODS else np.zeros(len(sums), bool)
    key[fallback] = np.where(raising[fallback], sums[fallback], -np.inf)
    # Raising causes by the ranking (ties: larger contribution), then lowering ones, most lowering first.
    primary = np.where(raising, -key, np.where(sums < 0, np.inf, np.nan))
    order = np.lexsort((np.where(raising, -sums, sums), np.where(np.isnan(primary), np.inf, primary),
                        np.where(raising, 0, np.where(sums < 0, 1, 2))), axis=1)
    n_raising = raising.sum(axis=1)
    n_kept = n_raising + (sums < 0).sum(axis=1)
    evidence = _evidence(shap_values, sums, order, cmap, templates.ranking.evidence)
    # The date the risk rose, for the top cause only, and only where the history ranked it.
    rose = np.where(fallback, -1, rose_by_cause[np.arange(len(sums)), order[:, 0]]) if len(sums) else \
        np.empty(0, dtype=np.int64)
    return _Ranked(cmap, sums, order, n_raising, n_kept, evidence, rose, method, columns), templates


def _evidence(shap_values: np.ndarray, sums: np.ndarray, order: np.ndarray, cmap: CauseMap, k: int) -> np.ndarray:
    """The ``k`` strongest facts of each cause, in the cause's own direction: for a raising cause its
    features with the largest positive contributions, for a lowering one the most negative. A fact whose
    feature an earlier fact's sentence already cites is skipped (no "1 still open; 1 still open")."""
    n, n_causes = sums.shape
    out = np.full((n, n_causes, k), -1, dtype=np.int64)
    sign = np.sign(sums)[:, cmap.of_feature]  # per row and feature: its cause's direction
    strength = shap_values * sign  # > 0: the feature pushes the way its cause does
    position = np.argsort(order, axis=1)  # cause index -> its place in ``order``
    rows = np.arange(n)
    for c in range(n_causes):
        members = np.flatnonzero(cmap.of_feature == c)
        if members.size == 0:
            continue
        vals = strength[:, members].copy()
        vals[vals <= 0] = -np.inf
        blocked = np.zeros_like(vals, dtype=bool)
        for slot in range(k):
            masked = np.where(blocked, -np.inf, vals)
            pick = masked.argmax(axis=1)
            ok = np.isfinite(masked[rows, pick])
            out[rows[ok], position[ok, c], slot] = members[pick[ok]]
            blocked[rows, pick] = True
            blocked |= cmap.cites[members[pick]][:, members] & ok[:, None]
    return out


def _fact_sentences(ranked: _Ranked, feature_names: list[str], lang: str, templates: ReasonTemplates) -> np.ndarray:
    """The sentence of every evidence cell (rows x causes x facts; "" where none), column-wise per feature."""
    text = templates.languages[lang]
    cells = ranked.evidence
    sentences = np.full(cells.shape, "", dtype=object)
    flat = cells.ravel()
    numeric = _NumericColumns(ranked.columns)
    per_row = cells.shape[1] * cells.shape[2]
    for f_index, feature in enumerate(feature_names):
        where = np.flatnonzero(flat == f_index)
        if where.size == 0:
            continue
        rows = where // max(per_row, 1)
        own = numeric.get(feature, rows)
        missing = _missing_mask(own)
        entry = templates.features.get(feature)
        if entry is None:
            sentences.ravel()[where] = _generic_sentences(feature, own, missing, text.unknown)
            continue
        template, missing_template = getattr(entry, lang), getattr(entry, f"{lang}_missing")
        variants = [(missing, missing_template), (~missing, template)] if missing_template else [
            (np.ones(where.size, dtype=bool), template)]
        for mask, body in variants:
            if mask.any():
                sentences.ravel()[where[mask]] = _format_template(
                    body, rows[mask], numeric, text.unknown, feature, entry.label, own[mask])
    filled = flat >= 0
    sentences.ravel()[filled] = _singular(sentences.ravel()[filled], text.singular)
    return sentences


def _percent(p: float) -> str:
    return f"{p:.0%}"


@dataclass(slots=True)
class Evidence:
    feature: str
    value: float | None
    contribution: float
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution,
                "sentence": self.sentence}


@dataclass(slots=True)
class Reason:
    """One cause of one row's score. ``feature`` / ``value`` are its strongest fact, ``contribution`` the
    cause's summed SHAP value (log-odds), ``sentence`` the whole cause line as the CRM shows it."""

    feature: str
    value: float | None
    contribution: float
    direction: Literal["raises", "lowers"]
    sentence: str
    cause: str = ""
    headline: str = ""
    evidence: tuple[Evidence, ...] = ()
    rose: dict[str, Any] | None = None  # {"date": "YYYY-MM-DD", "before": p, "after": p} when known

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies every field.
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": self.contribution,
            "direction": self.direction,
            "sentence": self.sentence,
            "cause": self.cause,
            "headline": self.headline,
            "evidence": [e.to_dict() for e in self.evidence],
            "rose": self.rose,
        }


_NO_EVIDENCE = Evidence("", None, 0.0, "")


def _reasons(contributions, features, feature_names, model_name, top_k, lang, templates, history,
             scale=None) -> list[list[Reason]]:
    ranked, templates = _rank(contributions, features, feature_names, model_name, lang, templates, history, scale)
    facts = _fact_sentences(ranked, list(feature_names), lang, templates)
    text = templates.languages[lang]
    spec = templates.models[model_name]
    headlines = [getattr(spec.causes[c], lang) for c in ranked.cmap.causes]
    direction_words = {"raises": getattr(spec.raises, lang), "lowers": getattr(spec.lowers, lang)}
    numeric = _NumericColumns(ranked.columns)
    every = np.arange(len(ranked.sums))
    names = list(dict.fromkeys(feature_names))
    values = {f: _plain_floats(numeric.get(f, every)) for f in names}
    # Plain Python lists from here on: the loop below runs once per row and cause (hundreds of thousands
    # in batch scoring), and indexing a list costs a fraction of indexing a numpy array element by element.
    shap_values = contributions[:, :-1].tolist()
    sums, order, evidence_idx = ranked.sums.tolist(), ranked.order.tolist(), ranked.evidence.tolist()
    n_kept, rose_at, fact_text = ranked.n_kept.tolist(), ranked.rose.tolist(), facts.tolist()
    causes = ranked.cmap.causes
    line, sep = text.line, text.evidence_sep
    raises_word, lowers_word = direction_words["raises"], direction_words["lowers"]
    out: list[list[Reason]] = []
    for i in range(len(sums)):
        row: list[Reason] = []
        row_sums, row_order, row_evidence, row_facts = sums[i], order[i], evidence_idx[i], fact_text[i]
        for pos in range(n_kept[i]):
            c = row_order[pos]
            total = row_sums[c]
            direction = "raises" if total > 0 else "lowers"
            evidence = []
            for slot, f in enumerate(row_evidence[pos]):
                if f < 0:
                    continue
                name = feature_names[f]
                evidence.append(Evidence(name, values[name][i], shap_values[i][f], row_facts[pos][slot]))
            parts = [e.sentence for e in evidence]
            rose = None
            if pos == 0 and direction == "raises" and history is not None and rose_at[i] >= 0:
                w = int(rose_at[i])
                before, after = float(history.probabilities[w - 1, i]), float(history.probabilities[w, i])
                rose = {"date": f"{history.dates[w]:%Y-%m-%d}", "before": before, "after": after}
                parts.append(text.rose.format(before=_percent(before), after=_percent(after),
                                              date=_format_date(history.dates[w], text)))
            sentence = line.format(headline=headlines[c], direction=raises_word if total > 0 else lowers_word,
                                   evidence=sep.join(parts))
            first = evidence[0] if evidence else _NO_EVIDENCE
            row.append(Reason(first.feature, first.value, float(total), direction, sentence, causes[c],
                              headlines[c], tuple(evidence), rose))
        out.append(row[:top_k] if top_k is not None else row)
    return out


def _plain_floats(values: np.ndarray) -> list[float | None]:
    """A column as Python floats, None where missing or not a number (JSON-ready, cheap per element)."""
    if values.dtype.kind != "f":
        values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return [None if v != v else v for v in values.tolist()]


# ---------------------------------------------------------------------------------------------- public
def explain(
    contributions: np.ndarray,
    features: pd.DataFrame | Mapping[str, np.ndarray],
    feature_names: list[str],
    model_name: str,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
    history: History | None = None,
    scale: CauseScale | None = None,
) -> list[list[Reason]]:
    """Up to ``top_k`` causes for every row of ``features`` (aligned with ``contributions`` row for row):
    those that raise the score first, in ranked order, then those that lower it. A cause whose features
    sum to zero is no reason and is dropped.

    ``features`` is a DataFrame or a mapping of column name -> array (the service's cheaper form).
    ``contributions`` is ``pred_contrib`` output: len(feature_names) + 1 columns, the last the base value.
    ``history`` (optional): the same rows' weekly past, for the history ranking and the date the risk
    rose; ``scale`` (optional): the population's spread per cause, for ``shap_z``.
    """
    return _reasons(contributions, features, list(feature_names), model_name, top_k, lang, templates, history,
                    scale)


def explain_model(
    model: Any,
    features: pd.DataFrame,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
    history: History | None = None,
    scale: CauseScale | None = None,
) -> list[list[Reason]]:
    """Reasons for every row of ``features`` from a ``training.champion.LoadedModel``.

    ``features`` must hold the model's feature columns (extra columns are fine and may appear in sentences).
    """
    missing = [c for c in model.feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"features for model {model.name} lack columns: {', '.join(missing)}")
    X = features[model.feature_names].to_numpy(dtype=np.float64)
    return explain(model.contributions(X), features, list(model.feature_names), model.name, top_k, lang,
                   templates, history, scale)


def explain_table(
    contributions: np.ndarray,
    features: pd.DataFrame | Mapping[str, np.ndarray],
    feature_names: list[str],
    model_name: str,
    top_k: int = 5,
    lang: str = "en",
    templates: ReasonTemplates | None = None,
    history: History | None = None,
    scale: CauseScale | None = None,
    with_top_cause: bool = False,
) -> tuple[np.ndarray, ...]:
    """Batch scoring's reasons: per row the CRM text and the reasons as JSON (and with
    ``with_top_cause`` the top raising cause, as ``top_causes`` gives it).

    The CRM text is the ``cause_sep``-joined lines of the causes that raise the score (up to ``top_k``),
    each with only the facts that raise it. The JSON keeps the signed detail: every cause, raising or
    lowering, with its contribution and its facts, as ``[{"model": ..., **Reason.to_dict()}]``.
    Returns two object arrays of strings, one element per row ("" and "[]" for a row with no reason).

    The same text and the same JSON bytes as ``explain`` + ``json.dumps`` (a test holds them equal), built
    column-wise: one array operation per cause position and fact slot instead of Python objects per row
    and cause, which batch scoring would pay hundreds of thousands of times.
    """
    feature_names = list(feature_names)
    ranked, templates = _rank(contributions, features, feature_names, model_name, lang, templates, history, scale)
    facts = _fact_sentences(ranked, feature_names, lang, templates)
    text = templates.languages[lang]
    spec = templates.models[model_name]
    n, n_causes, n_slots = ranked.evidence.shape
    if n == 0:
        return (np.empty(0, dtype=object),) * (3 if with_top_cause else 2)

    # The cells: (row, position) for every kept cause, row by row.
    kept = np.arange(n_causes)[None, :] < ranked.n_kept[:, None]
    rows, pos = np.nonzero(kept)
    cause = ranked.order[rows, pos]
    total = ranked.sums[rows, cause]
    raising = total > 0
    numeric = _NumericColumns(ranked.columns)
    every = np.arange(n)
    values = np.column_stack([_float_column(numeric.get(f, every)) for f in feature_names]) if feature_names \
        else np.empty((n, 0))
    shap_values = contributions[:, :-1]
    quoted_features = np.array([_json_str(f) for f in feature_names] + ['""'], dtype=object)

    # Each fact slot: its sentence (for the line) and its JSON object (for the evidence list).
    sentence_parts = np.full(rows.size, "", dtype=object)
    evidence_json = np.full(rows.size, "", dtype=object)
    first_feature = np.full(rows.size, -1, dtype=np.int64)
    for slot in range(n_slots):
        feature = ranked.evidence[rows, pos, slot]
        ok = feature >= 0
        if not ok.any():
            continue
        at, f = np.flatnonzero(ok), feature[ok]
        said = facts[rows[at], pos[at], slot]
        obj = np.array(list(map('{{"feature": {}, "value": {}, "contribution": {}, "sentence": {}}}'.format,
                                quoted_features[f].tolist(), _json_floats(values[rows[at], f]).tolist(),
                                _json_floats(shap_values[rows[at], f]).tolist(), _json_strs(said).tolist())),
                       dtype=object)
        started = first_feature[at] >= 0
        sentence_parts[at] = np.where(started, sentence_parts[at] + text.evidence_sep, "") + said
        evidence_json[at] = np.where(started, evidence_json[at] + ", ", "") + obj
        first_feature[at] = np.where(started, first_feature[at], f)

    # The date the risk rose: on the top cause's line, when the history ranked it.
    rose_json = np.full(rows.size, "null", dtype=object)
    if history is not None:
        top = np.flatnonzero((pos == 0) & raising & (ranked.rose[rows] >= 0))
        for at in top.tolist():
            i, w = int(rows[at]), int(ranked.rose[rows[at]])
            before, after = float(history.probabilities[w - 1, i]), float(history.probabilities[w, i])
            rose_json[at] = json.dumps({"date": f"{history.dates[w]:%Y-%m-%d}", "before": before, "after": after})
            said = text.rose.format(before=_percent(before), after=_percent(after),
                                    date=_format_date(history.dates[w], text))
            sentence_parts[at] = sentence_parts[at] + text.evidence_sep + said if first_feature[at] >= 0 else said

    headlines = np.array([getattr(spec.causes[c], lang) for c in ranked.cmap.causes], dtype=object)[cause]
    words = np.where(raising, getattr(spec.raises, lang), getattr(spec.lowers, lang)).astype(object)
    sentences = _format_lines(text.line, headlines, words, sentence_parts)
    first_value = np.where(first_feature >= 0, values[rows, np.maximum(first_feature, 0)], np.nan) \
        if values.shape[1] else np.full(rows.size, np.nan)
    # One format call per cell (concatenating piece by piece would copy each growing string).
    cell = ('{{"model": ' + _json_str(model_name).replace("{", "{{").replace("}", "}}") + ', "feature": {}, '
            '"value": {}, "contribution": {}, "direction": {}, "sentence": {}, "cause": {}, "headline": {}, '
            '"evidence": [{}], "rose": {}}}')
    quoted_causes = np.array([_json_str(c) for c in ranked.cmap.causes], dtype=object)
    cells = list(map(cell.format, quoted_features[first_feature].tolist(), _json_floats(first_value).tolist(),
                     _json_floats(total).tolist(), np.where(raising, '"raises"', '"lowers"').tolist(),
                     _json_strs(sentences).tolist(), quoted_causes[cause].tolist(), _json_strs(headlines).tolist(),
                     evidence_json.tolist(), rose_json.tolist()))

    # Rows: cells are contiguous per row, raising causes first.
    starts = np.concatenate([[0], np.cumsum(ranked.n_kept)])
    n_text = np.minimum(ranked.n_raising, top_k) if top_k is not None else ranked.n_raising
    nothing = getattr(spec.nothing_raises, lang)
    sentence_list, cell_list = sentences.tolist(), cells
    sep = text.cause_sep
    joined = np.array([
        sep.join(sentence_list[s:s + k]) if k else nothing if e > s else ""
        for s, e, k in zip(starts[:-1].tolist(), starts[1:].tolist(), n_text.tolist(), strict=True)
    ], dtype=object)
    as_json = np.array(["[" + ", ".join(cell_list[s:e]) + "]" for s, e in zip(starts[:-1].tolist(),
                                                                              starts[1:].tolist(), strict=True)],
                       dtype=object)
    return (joined, as_json, _top_of(ranked)) if with_top_cause else (joined, as_json)


def _float_column(values: np.ndarray) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number), as ``_plain_floats`` reads it."""
    if values.dtype.kind != "f":
        values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values.astype(np.float64, copy=False)


_json_str = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) writes for a str


def _json_strs(values: np.ndarray) -> np.ndarray:
    return np.array(list(map(_json_str, values.tolist())), dtype=object)


def _json_floats(values: np.ndarray) -> np.ndarray:
    """JSON text of each float as ``json.dumps`` writes it (NaN -> null, as ``_plain_floats`` makes it None)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.array(list(map(float.__repr__, values.tolist())), dtype=object)
    if not np.isfinite(values).all():
        out[np.isnan(values)] = "null"
        out[values == np.inf] = "Infinity"
        out[values == -np.inf] = "-Infinity"
    return out


def _format_lines(line: str, headlines: np.ndarray, words: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """``line.format(headline=, direction=, evidence=)`` per cell; plain concatenation when the line has
    only these three bare fields (the shipped lines), ``str.format`` per cell otherwise."""
    columns = {"headline": headlines, "direction": words, "evidence": evidence}
    parts = list(string.Formatter().parse(line))
    if all(name is None or (name in columns and not spec and conv is None) for _, name, spec, conv in parts):
        out = np.full(len(evidence), "", dtype=object)
        for literal, name, _, _ in parts:
            out = out + literal if name is None else out + literal + columns[name]
        return out
    return np.array([line.format(headline=h, direction=d, evidence=e) for h, d, e in
                     zip(headlines.tolist(), words.tolist(), evidence.tolist(), strict=True)], dtype=object)


def top_causes(contributions: np.ndarray, feature_names: Sequence[str], model_name: str,
               templates: ReasonTemplates | None = None, history: History | None = None,
               scale: CauseScale | None = None) -> np.ndarray:
    """Each row's top raising cause as ``explain`` ranks it ("none" when no cause raises the score),
    without building any text: what action rules and tags test."""
    ranked, _ = _rank(contributions, None, list(feature_names), model_name, "en", templates, history, scale)
    return _top_of(ranked)


def _top_of(ranked: _Ranked) -> np.ndarray:
    if len(ranked.order) == 0:
        return np.empty(0, dtype=object)
    causes = np.array([*ranked.cmap.causes, NO_CAUSE], dtype=object)
    return causes[np.where(ranked.n_raising > 0, ranked.order[:, 0], len(ranked.cmap.causes))]


def top_cause(reasons: list[list[Reason]]) -> list[str]:
    """Each row's top cause that raises the score ("none" when nothing raises it)."""
    return [next((r.cause for r in row if r.direction == "raises"), NO_CAUSE) for row in reasons]


def top_driver_agreement(
    reasons: list[list[Reason]], true_drivers: Sequence[str], model_name: str = "",
    templates: ReasonTemplates | None = None,
) -> float:
    """Share of rows whose top risk-raising cause is the generator's true driver.

    Rows whose true driver is "none" are left out: there is nothing to agree with.
    """
    hits = total = 0
    for cause, truth in zip(top_cause(reasons), true_drivers, strict=True):
        if truth == "none":
            continue
        total += 1
        hits += cause == truth
    return hits / total if total else float("nan")



# ---------------------------------------------------------------------------------------------- columns
class _FrameColumns(Mapping):
    """A DataFrame's columns as arrays, converted when first read: a frame carries columns no sentence
    cites (a tz-aware timestamp costs a Python object per row to convert)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.cache:
            if name not in self.frame.columns:
                raise KeyError(name)
            self.cache[name] = self.frame[name].to_numpy()
        return self.cache[name]

    def __iter__(self):
        return iter(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame.columns)


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
