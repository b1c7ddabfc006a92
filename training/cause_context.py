"""What the configured cause ranking (configs/reasons.yaml ``ranking``) reads beyond today's SHAP values:
the customers' own past and the population's scale. Evaluate, batch scoring and /predict all call
``ranking_context``, so a customer's causes are ranked the same way whichever of them asks.

- The **scale** (``CauseScale``: each cause's spread, and for ``shap_z_event`` how common a fresh event of
  each cause is) belongs to the model version: ``fit_cause_scale`` measures it on the training population
  when the model is trained and it is stored with the version (tag ``cause_scale``). A one-customer call
  and a million-customer batch then use the same yardstick.
- The **history** (``History``) is the customer's own past read from the offline store: for the models in
  ``ranking.history_models`` the feature store's snapshot dates before today (the last
  ``ranking.history_weeks``), for ``shap_z_event`` the last ``ranking.event_days`` days (dates off the
  snapshot grid are built for their day by ``features.exact``). All past dates come from one retrieval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError
from core.settings import project_paths
from training.dataset import ExactFeatureSource
from training.reasons import CauseScale, History, ReasonTemplates, cause_scale, history_of, load_templates

log = logging.getLogger("propensity.training")

TAG_CAUSE_SCALE = "cause_scale"


@dataclass(frozen=True)
class RankingContext:
    history: History | None = None
    scale: CauseScale | None = None

    def take(self, rows: np.ndarray) -> RankingContext:
        """The context of a subset of the rows (the scale is the population's: it stays whole)."""
        return RankingContext(None if self.history is None else self.history.take(rows), self.scale)


def scale_to_json(scale: CauseScale) -> str:
    data: dict[str, Any] = {"causes": list(scale.causes), "mean": scale.mean.tolist(), "std": scale.std.tolist()}
    if scale.event_rate is not None:
        data.update(event_rate=scale.event_rate.tolist(), event_steps=scale.event_steps)
    return json.dumps(data, separators=(",", ":"))


def scale_from_json(text: str | None, causes: Sequence[str]) -> CauseScale | None:
    """The stored scale, or None when the version has none or its causes differ from today's cause map
    (configs/reasons.yaml changed since training: then the population ranking is not available)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        data["causes"], data["mean"], data["std"]  # noqa: B018 (the keys every scale has)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("tag %s is not a cause scale (%s): population ranking off for this version", TAG_CAUSE_SCALE,
                    exc)
        return None
    if tuple(data["causes"]) != tuple(causes):
        log.warning("stored cause scale has causes %s, configs/reasons.yaml now %s: population ranking off "
                    "until the model is retrained", data["causes"], list(causes))
        return None
    rate = data.get("event_rate")
    return CauseScale(tuple(data["causes"]), np.asarray(data["mean"], float), np.asarray(data["std"], float),
                      None if rate is None else np.asarray(rate, float), int(data.get("event_steps", 0)))


def model_scale(model: Any, templates: ReasonTemplates) -> CauseScale | None:
    """The scale stored with a registered version (``LoadedModel.tags``), if any."""
    tags = getattr(model, "tags", None) or {}
    causes = templates.cause_map(model.name, model.feature_names).causes
    return scale_from_json(tags.get(TAG_CAUSE_SCALE), causes)


def needs_daily_past(model_name: str, templates: ReasonTemplates) -> bool:
    r = templates.ranking
    return model_name in r.population_models and r.population == "shap_z_event"


def past_frames(model: Any, ids: Sequence[str], dates: Sequence[pd.Timestamp], source=None) -> list[pd.DataFrame]:
    """The same customers' features at each of ``dates``, row i = ids[i] in every frame: one retrieval
    for all dates (Feast's join pays its fixed cost once)."""
    source = source or ExactFeatureSource()
    ids = np.asarray(ids, dtype=object)
    n = len(ids)
    if not dates:
        return []
    entity = pd.DataFrame({
        "customer_id": np.tile(ids, len(dates)),
        "event_timestamp": pd.Series(np.repeat(np.asarray(list(dates), dtype=object), n)).astype("datetime64[us, UTC]"),
    })
    frame = source.historical(entity, model.feature_service).reset_index(drop=True)
    if len(frame) != len(entity):
        raise PropensityError(f"{model.feature_service}: retrieval of the past returned {len(frame)} rows for "
                              f"{len(entity)}")
    return [frame.iloc[k * n:(k + 1) * n].reset_index(drop=True) for k in range(len(dates))]


def _rows_of(today: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    return today.reset_index(drop=True) if isinstance(today, pd.DataFrame) else today


def history_dates(model_name: str, as_of: pd.Timestamp, templates: ReasonTemplates) -> list[pd.Timestamp]:
    """The past dates the ranking reads for this model at ``as_of`` (oldest first; empty: none)."""
    r = templates.ranking
    as_of = pd.Timestamp(as_of)
    if model_name in r.history_models:
        from features.build import built_dates

        dates = [pd.Timestamp(d, tz="UTC") for d in built_dates(project_paths().feature_sources)]
        dates = [d for d in dates if d < as_of][-r.history_weeks:]
        if len(dates) < 2:
            log.info("%s: fewer than 2 feature snapshots before %s: causes ranked from today's features",
                     model_name, f"{as_of:%Y-%m-%d}")
            return []
        return dates
    if needs_daily_past(model_name, templates):
        return daily_dates(as_of, templates)
    return []


def daily_dates(as_of: Any, templates: ReasonTemplates) -> list[pd.Timestamp]:
    """The ``ranking.event_days`` days before ``as_of``, oldest first (``shap_z_event``'s daily past)."""
    as_of = pd.Timestamp(as_of)
    return [as_of - pd.Timedelta(days=k) for k in range(templates.ranking.event_days, 0, -1)]


def ranking_context(model: Any, today: pd.DataFrame | np.ndarray | None, ids: Sequence[str], as_of: Any,
                    source=None, templates: ReasonTemplates | None = None,
                    scale: CauseScale | None = None) -> RankingContext:
    """The history and scale the configured ranking reads for these customers (``today``: their features
    at ``as_of``, a frame or the model's input matrix, row i = ids[i]). The scale is the version's own
    unless ``scale`` is given. A model whose ranking reads no past, or a population ranking without a
    stored scale, gets no history."""
    templates = templates or load_templates()
    scale = scale if scale is not None else model_scale(model, templates)
    if len(ids) == 0 or today is None:
        return RankingContext(None, scale)
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of
    if needs_daily_past(model.name, templates) and model.name not in templates.ranking.history_models \
            and (scale is None or scale.event_rate is None):
        return RankingContext(None, scale)  # no event rates to weigh the past with: shap_z at most
    dates = history_dates(model.name, as_of, templates)
    if not dates:
        return RankingContext(None, scale)
    frames = past_frames(model, ids, dates, source)
    return RankingContext(history_of(model, [*frames, _rows_of(today)], [*dates, as_of], templates), scale)


def fit_cause_scale(model: Any, today: pd.DataFrame, ids: Sequence[str], as_of: Any, source=None,
                    templates: ReasonTemplates | None = None,
                    contributions: np.ndarray | None = None) -> CauseScale:
    """The scale of a population (``today``: its features at ``as_of``; ``contributions``: their
    pred_contrib rows, when the caller has them): each cause's mean and spread of summed contributions,
    and, when the model's ranking is ``shap_z_event``, how common a fresh event of each cause is over the
    population's last ``event_days`` days."""
    templates = templates or load_templates()
    history = None
    if needs_daily_past(model.name, templates):
        dates = daily_dates(as_of, templates)
        frames = past_frames(model, ids, dates, source)
        # Its last date is today: its cause sums are today's, no second TreeSHAP pass needed.
        history = history_of(model, [*frames, _rows_of(today)], [*dates, pd.Timestamp(as_of)], templates)
    elif contributions is None:
        contributions = model.contributions(model.matrix(today))
    return cause_scale(contributions, model.name, list(model.feature_names), templates, history=history)


def training_scale(cfg: Any, ts: Any, booster: Any, calibration: Any, source=None,
                   tags: dict[str, str] | None = None) -> str | None:
    """The ``cause_scale`` tag of a newly trained model: ``fit_cause_scale`` on up to
    ``ranking.scale_rows`` customers of the test split (the newest labelled population), at their cutoff.
    None for a model the ranking does not weigh against the population (no TreeSHAP pass spent on it)."""
    from training.champion import TAG_TASK, Calibration, LoadedModel
    from training.labels import TEST

    templates = load_templates()
    if cfg.name not in templates.ranking.population_models:
        return None
    model = LoadedModel(name=cfg.name, version="new", booster=booster, feature_names=list(ts.feature_names),
                        feature_service=cfg.feature_service, calibration=calibration or Calibration(),
                        tags={TAG_TASK: cfg.task, **(tags or {})})
    part = ts.part(TEST)
    newest = part["event_timestamp"].max()
    part = part[part["event_timestamp"] == newest]
    if len(part) > templates.ranking.scale_rows:
        part = part.sample(templates.ranking.scale_rows, random_state=0)
    part = part.reset_index(drop=True)
    scale = fit_cause_scale(model, part, part["customer_id"].astype(str).to_numpy(), newest, source, templates)
    return scale_to_json(scale)
