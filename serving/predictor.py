"""Scoring: feature look-up in the online store, LightGBM probabilities and SHAP reasons per model,
per-customer answers (``Predictor``), and the recently flagged customers the staff page lists."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError, PropensityError
from serving.config import ServingConfig
from serving.errors import InvalidRequest, ModelsUnavailable, ServingError, StoreUnavailable
from serving.registry import ModelRegistry, ModelSet
from serving.requests import PredictFeaturesRequest, PredictRequest, _Request
from training.reasons import ReasonTemplates, band, explain, load_templates, top_cause, top_causes

log = logging.getLogger("propensity.serving")

# Columns the online look-up adds next to the model features; shown to the CRM as they are.
SEGMENT_COLUMNS = ("rfm_segment", "lifecycle_stage")


# A fetcher returns, for (customer_ids, feature service), either column arrays (the online path) or a
# DataFrame with the same columns (handy in tests); both carry ``customer_id`` and ``found``.
FeatureFetcher = Callable[[list[str], str], "dict[str, np.ndarray] | pd.DataFrame"]


def _store_unavailable_types() -> tuple[type[BaseException], ...]:
    try:
        from features.online_store import OnlineStoreUnavailable
    except ImportError:  # features package not there: nothing to translate
        return ()
    return (OnlineStoreUnavailable,)


def online_fetcher() -> FeatureFetcher:
    """The Feast online store through the model's feature service, as column arrays
    (``features.retrieval.online_feature_columns``): building a DataFrame per request cost about 0.8 ms
    of a one-customer /predict, more than the store read itself."""
    from features.online_store import resolve_target
    from features.retrieval import online_feature_columns
    from features.settings import load_features_config

    # Once per fetcher, not once per request: both read files.
    config = load_features_config()
    target = resolve_target(config)

    def fetch(customer_ids: list[str], service: str) -> dict[str, np.ndarray]:
        return online_feature_columns(customer_ids, service, config=config, target=target)

    return fetch


# ---------------------------------------------------------------------------------------------- scoring
# Features as column arrays: slicing numpy arrays costs microseconds where DataFrame slicing costs
# hundreds, and one-customer requests are dominated by such fixed costs.
Columns = dict[str, np.ndarray]


def _aligned_columns(table: dict[str, np.ndarray] | pd.DataFrame, ids: list[str]) -> Columns:
    """Columns of ``table`` with row i = ids[i] (the look-up promises that order; checked, not trusted)."""
    columns = {col: table[col].to_numpy() for col in table.columns} if isinstance(table, pd.DataFrame) else table
    got = columns["customer_id"]
    if len(got) == len(ids) and all(a == b for a, b in zip(got, ids, strict=True)):
        return columns
    frame = pd.DataFrame(columns).drop_duplicates("customer_id").set_index("customer_id").reindex(ids).reset_index()
    frame["found"] = frame["found"].fillna(False).astype(bool)
    return {col: frame[col].to_numpy() for col in frame.columns}


def _take(columns: Columns, rows: np.ndarray) -> Columns:
    return {col: values[rows] for col, values in columns.items()}

def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy numbers as Python ones, NaN as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _reason_dict(reason: Any) -> dict[str, Any]:
    """``Reason.to_dict()`` without ``dataclasses.asdict``'s deep copy (a quarter of the reasons' cost)."""
    return {
        "feature": reason.feature,
        "value": reason.value,
        "contribution": reason.contribution,
        "direction": reason.direction,
        "sentence": reason.sentence,
        "cause": reason.cause,
        "headline": reason.headline,
        "evidence": [e.to_dict() for e in reason.evidence],
        "rose": reason.rose,
    }


class _ExplainedCauses:
    """The top cause per model of the customers just explained (``serving.actions.TopCauses``): the
    ranking the answer's reasons show, so a rule acts on the cause the answer leads with."""

    def __init__(self, templates: ReasonTemplates, models: ModelSet, per_model: dict[str, dict[str, Any]]):
        self.templates, self.models = templates, models
        self.top = {name: scored["top_cause"] for name, scored in per_model.items()}

    def ranks(self, model: str) -> bool:
        return model in self.top

    def causes(self, model: str) -> tuple[str, ...]:
        return self.templates.cause_map(model, self.models.models[model].feature_names).causes

    def top_cause(self, model: str, rows: np.ndarray) -> np.ndarray:
        return self.top[model][rows]


@dataclass
class RecentFlagged:
    """Flagged customers from recent API calls, newest first, for the staff page.

    Forgotten customers (``serving.privacy``) are dropped by ``forget`` and never added again."""

    size: int
    entries: deque = field(default_factory=deque)  # (sha256 of the id, result), newest first
    lock: threading.Lock = field(default_factory=threading.Lock)
    forgotten: frozenset[str] = frozenset()

    def add(self, results: list[dict[str, Any]]) -> None:
        if self.size == 0:
            return
        from serving.privacy import id_hash

        with self.lock:
            for result in results:
                if result.get("found") and any(
                    isinstance(v, dict) and v.get("band") == "high" for v in result.values()
                ):
                    digest = id_hash(result["customer_id"])
                    if digest not in self.forgotten:
                        self.entries.appendleft((digest, {**result, "seen_at": time.time()}))
            while len(self.entries) > self.size:
                self.entries.pop()

    def forget(self, hashes: frozenset[str]) -> int:
        """Drop every entry whose id hashes into ``hashes`` and keep them out; returns how many went."""
        with self.lock:
            self.forgotten = hashes
            kept = deque(e for e in self.entries if e[0] not in hashes)
            dropped = len(self.entries) - len(kept)
            self.entries = kept
        return dropped

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [result for _, result in self.entries]


class Predictor:
    """Answers /predict and /predict_features from a ModelRegistry, a feature fetcher and the config."""

    def __init__(
        self,
        config: ServingConfig,
        registry: ModelRegistry,
        fetch_features: FeatureFetcher | None = None,
        templates: ReasonTemplates | None = None,
        actions: Any = None,
    ):
        from core.specs import load_spec

        self.config = config
        self.registry = registry
        self.bands = {name: load_spec(name).bands for name in registry.names}
        self._fetch = fetch_features
        self.templates = templates or load_templates()
        self.recent = RecentFlagged(config.ui_recent_calls)
        self._store_errors = _store_unavailable_types()
        from core.specs import model_names
        from serving.actions import load_actions_config, load_tags_config

        self.spec_names = model_names()
        self.actions = actions if actions is not None else load_actions_config()
        self.tags = load_tags_config()
        self._decision_warned = False
        self._scales: dict[tuple[str, str], Any] = {}
        self._pasts: dict[str, tuple[tuple[Any, int], Any]] = {}

    # --- helpers
    def models(self) -> ModelSet:
        current = self.registry.current
        if current is None:
            # The cause (registry errors name server files) is in the log and on /readyz's log line only.
            raise ModelsUnavailable(
                f"models not loaded; check models:/<name>@{self.registry.alias} in the MLflow registry "
                "(the service log has the cause); retry shortly"
            )
        return current

    def fetch(self, customer_ids: list[str], service: str) -> Columns:
        """Feature columns of ``customer_ids`` for ``service``, row i = customer_ids[i]."""
        if self._fetch is None:
            self._fetch = online_fetcher()
        try:
            table = self._fetch(customer_ids, service)
        except self._store_errors as exc:
            # The cause names server paths / hosts: logged here, not sent to the client.
            log.warning("online feature store unavailable: %s", exc)
            raise StoreUnavailable("online feature store unavailable; retry shortly") from exc
        for required in ("customer_id", "found"):
            if required not in table:
                raise PropensityError(f"online features for {service} lack the {required!r} column")
        return _aligned_columns(table, customer_ids)

    def _options(self, request: _Request, models: ModelSet) -> tuple[list[str], int, str]:
        names = request.models or list(models.models)
        top_k = self.config.default_top_k if request.top_k is None else request.top_k
        return names, top_k, request.lang or self.config.default_lang

    def _score_model(self, model: Any, columns: Columns, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and SHAP contributions for ``rows``, from a single pred_contrib call: the raw
        score is the row sum of the contributions (exact), so a second predict would only cost time."""
        if len(rows) == 0:
            return np.empty(0), np.empty((0, len(model.feature_names) + 1))
        X = np.column_stack([np.asarray(columns[f], dtype=np.float64)[rows] for f in model.feature_names])
        contrib = model.contributions(X)
        if hasattr(model, "from_contributions"):
            return model.from_contributions(contrib), contrib
        calibration = getattr(model, "calibration", None)
        proba = calibration.apply(contrib.sum(axis=1)) if calibration is not None else model.predict_proba(X)
        return proba, contrib

    def _results(
        self,
        ids: list[str],
        columns_of: dict[str, Columns],
        found: np.ndarray,
        names: list[str],
        models: ModelSet,
        top_k: int,
        lang: str,
        with_decision: bool = True,
        with_past: bool = True,
    ) -> list[dict[str, Any]]:
        """Per-customer answers; ``columns_of`` maps model name -> its feature columns, row i = ids[i].
        The causes are ranked as batch scoring ranks them (``training.cause_context``): with the scale
        stored with the version and, ``with_past``, the customer's past the batch run of that date saved."""
        rows = np.flatnonzero(found)
        per_model: dict[str, dict[str, Any]] = {}
        for name in names:
            model = models.models[name]
            columns = columns_of[name]
            proba, contrib = self._score_model(model, columns, rows)
            scored_columns = columns if len(rows) == len(ids) else _take(columns, rows)
            reasons, tops = self._explain(model, contrib, scored_columns, [ids[i] for i in rows], top_k, lang,
                                          with_past)
            cuts = model.bands(self.bands[name]) if hasattr(model, "bands") else self.bands[name]
            per_model[name] = {
                "top_cause": tops,
                "proba": proba,
                "band": band(proba, cuts) if len(proba) else [],
                "reasons": reasons,
                "key": "value" if getattr(model, "task", "binary") == "regression" else "probability",
            }
        decisions = self._decisions(ids, columns_of, rows, names, models, per_model) if with_decision else None
        segments = columns_of[names[0]]
        results: list[dict[str, Any]] = []
        j = 0
        for i, cid in enumerate(ids):
            if not found[i]:
                results.append({"customer_id": cid, "found": False, "error": "customer not found in the online store"})
                continue
            entry: dict[str, Any] = {"customer_id": cid, "found": True}
            for col in SEGMENT_COLUMNS:
                value = segments[col][i] if col in segments else None
                entry[col] = None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
            for name in names:
                scored = per_model[name]
                entry[name] = {
                    scored["key"]: float(scored["proba"][j]),
                    "band": str(scored["band"][j]),
                    "model_version": models.models[name].version,
                    "reasons": [_reason_dict(r) for r in scored["reasons"][j]],
                }
            if decisions is not None:
                # Its own key: a model may be called like a decision field (the value model and `value`).
                entry["decision"] = decisions[j]
            results.append(entry)
            j += 1
        return results

    def _explain(self, model: Any, contrib: np.ndarray, columns: Columns, ids: list[str], top_k: int, lang: str,
                 with_past: bool) -> tuple[list, np.ndarray]:
        """Reasons and top raising cause per scored row. A customer the batch run of the same date and
        model version ranked gets the past that run read (``serving.causes.RankingPast``): the batch
        list's causes. Any other customer (and rows a caller sent) is ranked from today's features and
        the scale stored with the version."""
        scale = self._scale(model)
        hit, history = np.zeros(len(ids), dtype=bool), None
        if with_past and ids and "as_of" in columns:
            past = self._past(model.name, float(columns["as_of"][0]))
            if past is not None:
                hit, history = past.lookup(model.version, ids)
        names = list(model.feature_names)
        reasons: list = [None] * len(ids)
        tops = np.empty(len(ids), dtype=object)
        for part, part_history in ((np.flatnonzero(hit), history), (np.flatnonzero(~hit), None)):
            if part.size == 0:
                continue
            cols = columns if part.size == len(ids) else _take(columns, part)
            got = explain(contrib[part], cols, names, model.name, top_k, lang, self.templates, part_history, scale)
            for i, r in zip(part.tolist(), got, strict=True):
                reasons[i] = r
            # The reasons lead with the top raising cause; only a request for none ranks again.
            tops[part] = top_cause(got) if top_k != 0 else top_causes(contrib[part], names, model.name,
                                                                      self.templates, part_history, scale)
        return reasons, tops

    def _scale(self, model: Any):
        from training.cause_context import model_scale

        key = (model.name, str(model.version))
        if key not in self._scales:
            self._scales[key] = model_scale(model, self.templates)
        return self._scales[key]

    def _past(self, model_name: str, as_of_seconds: float):
        """The batch run's saved past for ``model_name`` at this as-of date (re-read when the file changes)."""
        from core.settings import project_paths
        from serving.causes import RankingPast, past_file

        as_of = pd.Timestamp(as_of_seconds, unit="s", tz="UTC").normalize()
        path = past_file(project_paths().scores_for(as_of), model_name)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._pasts.get(model_name)
        if cached is None or cached[0] != (path, mtime):
            try:
                cached = ((path, mtime), RankingPast(path))
            except Exception as exc:  # a damaged file: rank without it rather than fail the answer
                log.warning("ranking past %s unreadable (%s): causes ranked from today's features", path, exc)
                cached = ((path, mtime), None)
            self._pasts[model_name] = cached
        return cached[1]

    def _decisions(self, ids, columns_of, rows, names, models, per_model) -> list[dict[str, Any]] | None:
        """Layers, tags, action, queue, rule, group, priority and stakes per found customer, from
        ``serving.actions.decide``: the same function batch scoring calls (no contact history here: the
        contact policy needs the list history, which lives with batch scoring)."""
        if self.actions is None or len(rows) == 0:
            return None
        from serving.actions import decide, prediction_column

        frame: dict[str, Any] = {}
        for name in names:
            frame.update({c: np.asarray(v)[rows] for c, v in columns_of[name].items() if c not in frame})
        table = pd.DataFrame(frame)
        table["customer_id"] = [ids[i] for i in rows]
        as_of = table["as_of"].iloc[0] if "as_of" in table.columns else time.time()
        table["as_of"] = pd.Timestamp(float(as_of), unit="s", tz="UTC").normalize()
        for name in names:
            model = models.models[name]
            table[prediction_column(name, getattr(model, "task", "binary"))] = per_model[name]["proba"]
            table[f"{name}_band"] = per_model[name]["band"]
        skipped = [m for m in self.spec_names if m not in names]
        ranges = {n: getattr(models.models[n], "feature_ranges", {}) for n in names}
        causes = _ExplainedCauses(self.templates, models, per_model)
        try:
            decided = decide(table, self.actions, skipped, ranges, self.tags, causes=causes)
        except ConfigError as exc:
            # A rule over a column these models' features lack: the scores still answer, without a decision.
            if not self._decision_warned:
                log.error("no decision in /predict answers: %s", exc)
                self._decision_warned = True
            return None
        out = []
        explained = decided["explain"].to_numpy()
        for i in range(len(decided)):
            row = decided.iloc[i]
            item = {k: _plain(row[k]) for k in decided.columns if k not in ("explain", "held_back")}
            item["as_of"] = f"{table['as_of'].iloc[i]:%Y-%m-%d}"
            # As in the batch list: the cause the CRM text of the rule's model leads with ("" without one).
            model = explained[i]
            item["top_cause"] = str(causes.top_cause(model, np.array([i]))[0]) if model in per_model else ""
            out.append(item)
        return out

    # --- endpoints
    def predict(self, request: PredictRequest) -> dict[str, Any]:
        return self.predict_many([request])[0]

    def predict_many(self, requests: list[PredictRequest]) -> list[dict[str, Any]]:
        """Answer several /predict requests with one feature look-up and one model call per model.

        Concurrent requests are batched here (see service.py): the per-call costs of the store read and
        of LightGBM are paid once per batch instead of once per request.
        """
        models = self.models()  # one snapshot for the whole batch
        dated = [r for r in requests if getattr(r, "as_of", None) is not None]
        if dated:  # a date of the caller's: the exact (offline) path, one request at a time
            answers = {id(r): self._predict_at(r, models) for r in dated}
            rest = [r for r in requests if id(r) not in answers]
            answers.update(zip(map(id, rest), self.predict_many(rest) if rest else [], strict=True))
            return [answers[id(r)] for r in requests]
        all_ids = list(dict.fromkeys(cid for r in requests for cid in r.customer_ids))
        wanted = list(dict.fromkeys(n for r in requests for n in (r.models or list(models.models))))
        tables: dict[str, Columns] = {}
        for name in wanted:
            service = models.models[name].feature_service
            if service not in tables:
                tables[service] = self.fetch(all_ids, service)
        index = {cid: i for i, cid in enumerate(all_ids)}
        answers = []
        for request in requests:
            names, top_k, lang = self._options(request, models)
            if len(requests) == 1 and len(request.customer_ids) == len(all_ids):
                columns_of = {n: tables[models.models[n].feature_service] for n in names}  # no copy needed
            else:
                rows = np.array([index[cid] for cid in request.customer_ids], dtype=np.int64)
                columns_of = {n: _take(tables[models.models[n].feature_service], rows) for n in names}
            found = np.ones(len(request.customer_ids), dtype=bool)
            for columns in columns_of.values():
                found &= columns["found"].astype(bool)
            results = self._results(request.customer_ids, columns_of, found, names, models, top_k, lang,
                                    request.decision)
            self.recent.add(results)
            answers.append({"model_versions": models.versions(), "results": results})
        return answers

    def fetch_at(self, customer_ids: list[str], service: str, as_of) -> Columns:
        """Features exact at ``as_of`` (features.exact: the offline store, a snapshot built for a date off
        the grid), for a caller who names a date other than the online store's snapshot. Seconds, not
        milliseconds: the batch path's numbers for that date, for checking or back-filling one customer."""
        from features.catalog import service_raw_features
        from features.exact import exact_historical_features

        when = pd.Timestamp(as_of).tz_localize("UTC") if pd.Timestamp(as_of).tzinfo is None else pd.Timestamp(as_of)
        entity = pd.DataFrame({"customer_id": customer_ids, "event_timestamp": when})
        frame = exact_historical_features(entity, service).reset_index(drop=True)
        raw = [c for c in service_raw_features(service) if c in frame.columns]
        frame["found"] = frame[raw].notna().any(axis=1)
        frame["as_of"] = when.timestamp()
        return _aligned_columns(frame.drop(columns=["event_timestamp"]), customer_ids)

    def _check_as_of(self, as_of) -> None:
        """A date after the online store's snapshot (the data's end) describes no one: 422, not garbage."""
        from features.online_store import open_store

        try:
            latest = open_store().snapshot_time()
        except Exception as exc:  # the store down: the exact path does not need it, the check does
            raise StoreUnavailable("online feature store unavailable; retry shortly") from exc
        if latest is not None and pd.Timestamp(as_of, tz="UTC") > pd.Timestamp(latest).normalize():
            raise InvalidRequest(
                f"as_of: {as_of} is after the data's end ({latest:%Y-%m-%d}, the online store's snapshot)", "as_of")

    def _predict_at(self, request: PredictRequest, models: ModelSet) -> dict[str, Any]:
        self._check_as_of(request.as_of)
        names, top_k, lang = self._options(request, models)
        ids = list(request.customer_ids)
        tables: dict[str, Columns] = {}
        for name in names:
            service = models.models[name].feature_service
            if service not in tables:
                tables[service] = self.fetch_at(ids, service, request.as_of)
        columns_of = {n: tables[models.models[n].feature_service] for n in names}
        found = np.ones(len(ids), dtype=bool)
        for columns in columns_of.values():
            found &= columns["found"].astype(bool)
        results = self._results(ids, columns_of, found, names, models, top_k, lang, request.decision)
        self.recent.add(results)
        return {"model_versions": models.versions(), "results": results}

    def predict_features(self, request: PredictFeaturesRequest) -> dict[str, Any]:
        """Score feature values the caller sends: every feature of each requested model must be present
        (null allowed: LightGBM treats it as missing); features of the other served models may be sent
        too and are ignored (one row shape fits any choice of ``models``); any other key is a 422."""
        models = self.models()
        names, top_k, lang = self._options(request, models)
        needed = list(dict.fromkeys(f for n in names for f in models.models[n].feature_names))
        labels = {"customer_id", *SEGMENT_COLUMNS}
        allowed = {f for m in models.models.values() for f in m.feature_names} | labels
        for i, row in enumerate(request.rows):
            for key, value in row.items():
                if key not in allowed:
                    raise InvalidRequest(f"rows.{i}.{key}: not a feature of the served models", f"rows.{i}.{key}")
                if key in labels:
                    if value is not None and not isinstance(value, str):
                        raise InvalidRequest(f"rows.{i}.{key}: must be a string or null", f"rows.{i}.{key}")
                elif isinstance(value, str):
                    raise InvalidRequest(f"rows.{i}.{key}: must be a number or null, got {value!r}", f"rows.{i}.{key}")
            absent = [f for f in needed if f not in row]
            if absent:
                raise InvalidRequest(
                    f"rows.{i}: missing feature(s) {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''} "
                    "(send null for an unknown value)",
                    f"rows.{i}.{absent[0]}",
                )
        columns: Columns = {
            col: np.array([np.nan if row[col] is None else float(row[col]) for row in request.rows])
            for col in needed
        }
        for col in SEGMENT_COLUMNS:
            columns[col] = np.array([row.get(col) for row in request.rows], dtype=object)
        ids = [row.get("customer_id") or f"row-{i}" for i, row in enumerate(request.rows)]
        found = np.ones(len(ids), dtype=bool)
        # Rows the caller made up have no past in the store: ranked from today's features and the scale.
        results = self._results(ids, {n: columns for n in names}, found, names, models, top_k, lang,
                                with_past=False)
        return {"model_versions": models.versions(), "results": results}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready only with every model loaded and the online store answering a look-up."""
        body: dict[str, Any] = {"models": {}, "online_store": "unknown"}
        current = self.registry.current
        if current is None:
            # last_error names files of the server: logged by the registry, not shown to any caller.
            body["models"] = {"error": "not loaded (see the service log)"}
            return False, body
        body["models"] = current.versions()
        try:
            service = next(iter(current.models.values())).feature_service
            self.fetch(["__readyz_probe__"], service)
            body["online_store"] = "ok"
        except ServingError as exc:
            body["online_store"] = str(exc)
            return False, body
        except Exception as exc:  # any other failure of the store read also means not ready
            log.warning("readiness: online store read failed: %s: %s", type(exc).__name__, exc)
            body["online_store"] = f"unavailable ({type(exc).__name__}; see the service log)"
            return False, body
        return True, body
