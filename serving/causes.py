"""Each model's SHAP contributions and cause ranking for the rows of one scoring run, computed once per
row when first asked for: by an action rule or tag that tests a model's top cause (``top_cause`` in
their conditions), then by the reasons of the customers who got an action. Both ask for the same rows'
ranking, so the cause a rule acted on is the cause the CRM text leads with.

The ranking reads what ``training.cause_context.ranking_context`` gives it (the customer's own past
from the offline store, the scale stored with the model version): the same as /predict and evaluate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.cause_context import RankingContext, model_scale, ranking_context
from training.reasons import History, ReasonTemplates, load_templates, top_causes

SHAP_CHUNK = 50_000


def distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``X`` and, per row of ``X``, the index of its distinct row (NaN equals NaN:
    ``np.unique`` compares the bytes of each row)."""
    if len(X) == 0:
        return X, np.empty(0, dtype=np.int64)
    rows = np.ascontiguousarray(X).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
    _, first, back = np.unique(rows, return_index=True, return_inverse=True)
    return X[first], back.ravel()


def _concat_history(parts: list[History]) -> History:
    """Histories of disjoint row sets on the same dates, side by side (rows in the order given)."""
    first = parts[0]
    events = None if any(p.events is None for p in parts) else np.concatenate([p.events for p in parts], axis=1)
    return History(first.dates, np.concatenate([p.raw for p in parts], axis=1),
                   np.concatenate([p.probabilities for p in parts], axis=1),
                   np.concatenate([p.cause_sums for p in parts], axis=1),
                   np.concatenate([p.present for p in parts], axis=1), first.causes, events)


class CauseRanks:
    """Per model, over the rows of ``features`` (one frame per model, row-aligned; each carries
    ``customer_id`` and ``event_timestamp``): contributions and ranking context, cached per row."""

    def __init__(self, models: dict[str, Any], features: dict[str, pd.DataFrame],
                 templates: ReasonTemplates | None = None, source=None, on_shap=None, remote=None) -> None:
        self.models, self.features = models, features
        self.templates = templates or load_templates()
        self.source = source
        self.on_shap = on_shap  # called with the number of input rows each TreeSHAP chunk covered
        # Ranks rows elsewhere (serving.ray_engine.RayEngine.rank: contributions, past, distinct rows);
        # None: in this process.
        self.remote = remote
        # Per model, the rows computed so far (in computation order) and, in the same order, their
        # contributions and their past (None: the model's ranking reads no past at this date).
        self._rows: dict[str, np.ndarray] = {}
        self._contrib: dict[str, np.ndarray] = {}
        self._history: dict[str, History | None] = {}
        self._scale: dict[str, Any] = {}
        self.distinct: dict[str, tuple[int, int]] = {}  # TreeSHAP'd distinct rows, rows asked for

    def _compute(self, name: str, rows: np.ndarray) -> None:
        model = self.models[name]
        self._rows.setdefault(name, np.empty(0, np.int64))
        if rows.size == 0:
            return
        frame = self.features[name].iloc[rows]
        if self.remote is not None:
            contrib, history, n_distinct = self.remote.rank(name, frame)
            self._scale[name] = model_scale(model, self.templates)
        else:
            contrib, history, n_distinct = self._rank_here(name, model, frame)
        seen = self.distinct.get(name, (0, 0))
        self.distinct[name] = (seen[0] + n_distinct, seen[1] + len(rows))
        first = name not in self._contrib
        self._rows[name] = np.concatenate([self._rows[name], rows])
        self._contrib[name] = contrib if first else np.concatenate([self._contrib[name], contrib])
        # Either every computation of a model reads a past or none does: the ranking and the dates it
        # reads depend on the model and the as-of date only.
        if first or history is None:
            self._history[name] = history
        else:
            self._history[name] = _concat_history([self._history[name], history])

    def _rank_here(self, name: str, model: Any, frame: pd.DataFrame) -> tuple[np.ndarray, History | None, int]:
        """Contributions and past of ``frame``'s rows in this process, and the distinct rows TreeSHAP ran on."""
        X = model.matrix(frame)
        # TreeSHAP once per distinct input row: real logs repeat rows (a one-order customer last seen
        # N days ago looks like every other one), and equal inputs have equal contributions.
        distinct, back = distinct_rows(X)
        parts = []
        for start in range(0, len(distinct), SHAP_CHUNK):
            parts.append(model.contributions(distinct[start:start + SHAP_CHUNK]))
            if self.on_shap is not None:
                self.on_shap(min(SHAP_CHUNK, len(distinct) - start) * len(X) / max(len(distinct), 1))
        width = len(model.feature_names) + 1
        contrib = (np.concatenate(parts) if parts else np.empty((0, width)))[back]
        return contrib, self._context(name, model, frame, X).history, len(distinct)

    def _context(self, name: str, model: Any, frame: pd.DataFrame, X: np.ndarray) -> RankingContext:
        as_of = pd.Timestamp(frame["event_timestamp"].iloc[0])
        context = ranking_context(model, X, frame["customer_id"].astype(str).to_numpy(), as_of, self.source,
                                  self.templates)
        self._scale[name] = context.scale
        return context

    def _ensure(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Positions of ``rows`` in the cache of ``name``, computing the rows not there yet."""
        rows = np.asarray(rows, dtype=np.int64)
        have = self._rows.get(name, np.empty(0, np.int64))
        missing = np.setdiff1d(rows, have)
        if missing.size or name not in self._rows:
            self._compute(name, missing)
            have = self._rows[name]
        order = np.argsort(have, kind="stable")
        return order[np.searchsorted(have, rows, sorter=order)]

    def contributions(self, name: str, rows: np.ndarray) -> np.ndarray:
        at = self._ensure(name, rows)
        if name not in self._contrib:
            return np.empty((0, len(self.models[name].feature_names) + 1))
        return self._contrib[name][at]

    def context(self, name: str, rows: np.ndarray) -> RankingContext:
        at = self._ensure(name, rows)
        history = self._history.get(name)
        return RankingContext(None if history is None else history.take(at), self._scale.get(name))

    def ranks(self, name: str) -> bool:
        return name in self.models

    def causes(self, name: str) -> tuple[str, ...]:
        return self.templates.cause_map(name, self.models[name].feature_names).causes

    def top_cause(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Model ``name``'s top raising cause for ``rows`` ("none": nothing raises the score)."""
        contrib = self.contributions(name, rows)
        context = self.context(name, rows)
        return top_causes(contrib, self.models[name].feature_names, name, self.templates, context.history,
                          context.scale)

    def past(self, name: str) -> tuple[np.ndarray, History] | None:
        """The customer ids and the history of every row of ``name`` ranked so far (None: no past read)."""
        history = self._history.get(name)
        if history is None:
            return None
        return self.features[name]["customer_id"].astype(str).to_numpy()[self._rows[name]], history


# ---- the past of a batch run, for /predict --------------------------------------------------------------
# Reading 26 weekly snapshots from the offline store costs /predict about 1.4 s per customer (measured on
# the demo), and a daily past needs snapshots built for days off the grid. The batch run has already read
# the past of every customer it ranked; it leaves it beside its scores, and /predict for the same date and
# model version ranks from it, so both give the same causes at the API's speed. One Parquet file per
# model, a row per customer and past date, with customer_id: `propensity forget` scrubs it like the scores.
PAST_PREFIX = "ranking_past_"


def past_file(directory, model: str):
    from pathlib import Path

    return Path(directory) / f"{PAST_PREFIX}{model}.parquet"


def save_past(ranks: CauseRanks, directory) -> None:
    """Every model's ranked rows' past (``CauseRanks.past``) into ``directory``."""
    for name, model in ranks.models.items():
        got = ranks.past(name)
        if got is None:
            continue
        ids, h = got
        n_dates, n_rows = h.raw.shape
        events = np.zeros((n_dates, n_rows, len(h.causes)), dtype=bool)
        if h.events is not None:
            events[1:] = h.events  # step t-1 -> t belongs to date t
        columns = {
            "customer_id": np.tile(ids, n_dates), "model_version": str(model.version),
            "date": pd.DatetimeIndex(np.repeat(np.array([d.value for d in h.dates]), n_rows), tz="UTC"),
            "raw": h.raw.ravel(), "probability": h.probabilities.ravel(), "present": h.present.ravel(),
            "has_events": h.events is not None,
        }
        for c, cause in enumerate(h.causes):
            columns[f"sum/{cause}"] = h.cause_sums[:, :, c].ravel()
            columns[f"event/{cause}"] = events[:, :, c].ravel()
        pd.DataFrame(columns).to_parquet(past_file(directory, name), index=False)


class RankingPast:
    """One model's saved past from a batch run (``save_past``)."""

    def __init__(self, path) -> None:
        frame = pd.read_parquet(path).sort_values(["date", "customer_id"], kind="stable")
        self.version = str(frame["model_version"].iloc[0]) if len(frame) else ""
        dates = frame["date"].drop_duplicates().tolist()
        ids = frame.loc[frame["date"] == dates[0], "customer_id"].to_numpy() if dates else np.empty(0, object)
        shape = (len(dates), len(ids))
        if len(frame) != shape[0] * shape[1]:
            raise ValueError(f"{path}: not one row per customer and date")
        self.dates = [pd.Timestamp(d) for d in dates]
        self.index = {cid: i for i, cid in enumerate(ids.tolist())}
        self.causes = tuple(c.split("/", 1)[1] for c in frame.columns if c.startswith("sum/"))
        self.raw = frame["raw"].to_numpy().reshape(shape)
        self.probabilities = frame["probability"].to_numpy().reshape(shape)
        self.present = frame["present"].to_numpy(dtype=bool).reshape(shape)
        self.cause_sums = np.stack([frame[f"sum/{c}"].to_numpy().reshape(shape) for c in self.causes], axis=2)
        self.events = None
        if len(frame) and bool(frame["has_events"].iloc[0]):
            self.events = np.stack([frame[f"event/{c}"].to_numpy(dtype=bool).reshape(shape)
                                    for c in self.causes], axis=2)[1:]

    def lookup(self, version: str, ids: list[str]) -> tuple[np.ndarray, History | None]:
        """Which of ``ids`` the run ranked with this model at ``version``, and their history (that order)."""
        if str(version) != self.version:
            return np.zeros(len(ids), dtype=bool), None
        at = np.array([self.index.get(cid, -1) for cid in ids], dtype=np.int64)
        hit = at >= 0
        if not hit.any():
            return hit, None
        rows = at[hit]
        history = History(self.dates, self.raw[:, rows], self.probabilities[:, rows], self.cause_sums[:, rows],
                          self.present[:, rows], self.causes,
                          None if self.events is None else self.events[:, rows])
        return hit, history
