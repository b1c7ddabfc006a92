"""The staff page's data (no HTTP here): the follow-up list of the latest batch scores, one queue at a time,
filtered, sorted by priority and paged; one customer's detail with the reasons grouped by cause; and the
display names of every key in the page's language (configs/staff_page.yaml).

The list holds the customers a team works on: a rule's treatment group in a queue that is not one of the
"no work" queues (the default, lost, control and held-back actions' queue). Sorted by ``priority`` (the
rule's priority column, value at risk where the value model was scored), highest first, ties by id, so
paging is stable.

Reasons: batch scoring stores them once, in ``scoring.lang``, as text and as JSON (``reasons_json``:
model, feature, value, contribution, direction, sentence). For another language each sentence is made
again from the templates of configs/reasons.yaml with the customer's own values (those in the JSON, and
the feature snapshot kept beside the scores for the values a template cites); a fact without a template
is "<display name>: <value>". Reasons are grouped by cause: an entry's ``cause`` when batch scoring
writes one, else the feature's ``driver`` for that model in configs/reasons.yaml.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.config import StaffPageConfig
from serving.errors import ServingError
from serving.requests import MAX_ID_LENGTH

log = logging.getLogger("propensity.serving")

LANGS = ("en", "zh")
FILTERS = ("queue", "action", "segment", "stage", "tag")
FILTER_COLUMNS = {"queue": "queue", "action": "action_rule", "segment": "rfm_segment", "stage": "lifecycle_stage"}
LIST_PARAMS = (*FILTERS, "q", "page", "page_size", "lang")
MAX_PAGE = 100_000
MAX_QUERY = MAX_ID_LENGTH  # as long as a customer id may be
NO_CAUSE = "none"
EVIDENCE = 2  # facts under a row's headline when configs/reasons.yaml does not say


class BadQuery(ServingError):
    """A query parameter the page (or a CRM) got wrong: a 400 naming it."""

    status = 400


# ---------------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class Vocabulary:
    """Every key the configs can put on the page, per label kind, in config order."""

    keys: dict[str, list[str]]
    work_queues: list[str]  # queues of the rules: what the list shows
    action_texts: dict[str, str]  # action key -> the action text of actions.yaml (English fallback)
    headlines: dict[str, dict[str, str]]  # lang -> cause -> headline of configs/reasons.yaml

    def known(self, kind: str) -> list[str]:
        return self.keys.get(kind, [])


def vocabulary(actions, tags, features_config, templates, models: Iterable[str], feature_names: Iterable[str]) -> Vocabulary:
    """The keys of ``actions`` (ActionsConfig), ``tags`` (TagsConfig), the RFM segments of features.yaml,
    the model specs, the catalogue's model features and the causes of the reason templates."""
    from serving.actions import HELD_CAP, HELD_COOLDOWN, IN_QUEUE, LAYERS, LIFECYCLE_STAGES, OVER_CAPACITY

    rule_queues = list(dict.fromkeys(r.queue for r in actions.rules))
    idle = [actions.default.queue, actions.control.queue, actions.contact_policy.queue]
    if actions.lost is not None:
        idle.append(actions.lost.queue)
    work = [q for q in rule_queues if q not in idle]
    texts = {r.name: r.action for r in actions.rules}
    texts.update({"default": actions.default.action, "control": actions.control.action,
                  "held_back": actions.contact_policy.action})
    if actions.lost is not None:
        texts["lost"] = actions.lost.action
    causes = {NO_CAUSE, *template_headlines(templates, "en")}
    for entry in templates.features.values():
        for mapped in (getattr(entry, "cause", None), getattr(entry, "driver", None)):
            causes.update(mapped.values() if isinstance(mapped, Mapping) else [])
    keys = {
        "model": list(models),
        "band": ["high", "medium", "low"],
        "level": ["high", "low"],
        "layer": list(LAYERS),
        "segment": list(dict.fromkeys(features_config.rfm.segments.values())),
        "stage": list(LIFECYCLE_STAGES),
        "queue": list(dict.fromkeys([*rule_queues, *idle])),
        "action": list(texts),
        "queue_status": [IN_QUEUE, OVER_CAPACITY, HELD_CAP, HELD_COOLDOWN],
        "group": ["treatment", "control"],
        "tag": [t.name for t in tags.tags],
        "feature": list(dict.fromkeys([*feature_names, *templates.features])),
        "cause": sorted(causes),
        "direction": ["raises", "lowers"],
    }
    return Vocabulary(keys, work, texts, {lang: template_headlines(templates, lang) for lang in LANGS})


def template_headlines(templates, lang: str) -> dict[str, str]:
    """cause -> its headline in ``lang`` from configs/reasons.yaml (``models.<model>.causes``), the words
    the CRM text uses; the first model's wins when models share a cause."""
    out: dict[str, str] = {}
    for spec in (getattr(templates, "models", None) or {}).values():
        for cause, words in spec.causes.items():
            out.setdefault(cause, getattr(words, lang))
    return out


def humanise(key: str) -> str:
    """``days_since_last_visit`` -> ``days since last visit``: the fallback for a key without a name."""
    return " ".join(str(key).replace("_", " ").split()) or str(key)


def _named(config: StaffPageConfig, vocab: Vocabulary, kind: str, key: str, lang: str) -> str | None:
    """The display name of a key, or None: a cause's headline of configs/reasons.yaml (what the CRM text
    says), else configs/staff_page.yaml, else (English actions) the action text of configs/actions.yaml."""
    if kind == "cause" and key in vocab.headlines.get(lang, {}):
        return vocab.headlines[lang][key]
    names = config.labels.get(kind, {})
    given = getattr(names[key], lang) if key in names else None
    if given is None and kind == "action" and lang == "en":
        given = vocab.action_texts.get(key)
    return given


def labels(config: StaffPageConfig, vocab: Vocabulary, lang: str) -> dict[str, dict[str, str]]:
    """kind -> key -> display name in ``lang`` for every known key and every key the YAML names."""
    return {
        kind: {key: _named(config, vocab, kind, key, lang) or humanise(key)
               for key in dict.fromkeys([*vocab.known(kind), *config.labels.get(kind, {})])}
        for kind in sorted({*vocab.keys, *config.labels})
    }


def missing_labels(config: StaffPageConfig, vocab: Vocabulary, lang: str) -> dict[str, list[str]]:
    """Known keys without a display name in ``lang`` (they would be shown humanised)."""
    out = {}
    for kind, keys in vocab.keys.items():
        lacking = [k for k in keys if _named(config, vocab, kind, k, lang) is None]
        if lacking:
            out[kind] = lacking
    return out


# ---------------------------------------------------------------------------------------------- queries
def _one(params: list[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    allowed = tuple(allowed)
    out: dict[str, str] = {}
    for key, value in params:
        if key not in allowed:
            raise BadQuery(f"unknown query parameter {key!r}; known: {', '.join(allowed)}", field=key)
        if key in out:
            raise BadQuery(f"{key}: give it once", field=key)
        out[key] = value
    return out


def _integer(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise BadQuery(f"{name}: {raw[:40]!r} is not a whole number from {low} to {high}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise BadQuery(f"{name}: {value} is outside {low}..{high}", field=name)
    return value


def _check_text(raw: str, name: str, what: str) -> None:
    # The same rule as customer ids in /predict (serving.requests): 1-256 characters, one not a space.
    if not 1 <= len(raw) <= MAX_QUERY or not re.search(r"\S", raw):
        raise BadQuery(f"{name}: {what} of 1 to {MAX_QUERY} characters, not only spaces", field=name)


def _choice(raw: str | None, name: str, known: list[str]) -> str | None:
    if raw is None:
        return None
    if raw not in known:
        raise BadQuery(f"{name}: unknown {raw[:60]!r}; known: {', '.join(known) or '(none)'}", field=name)
    return raw


@dataclass(frozen=True)
class ListQuery:
    queue: str | None = None
    action: str | None = None
    segment: str | None = None
    stage: str | None = None
    tag: str | None = None
    q: str | None = None
    page: int = 1
    page_size: int = 25
    lang: str = "en"


def filter_choices(vocab: Vocabulary) -> dict[str, list[str]]:
    """The values each filter accepts (the OpenAPI document lists them too)."""
    actions = [a for a in vocab.known("action") if a not in ("default", "control", "held_back", "lost")]
    return {"queue": vocab.work_queues, "action": actions, "segment": vocab.known("segment"),
            "stage": vocab.known("stage"), "tag": vocab.known("tag")}


def parse_list_query(params: list[tuple[str, str]], vocab: Vocabulary, config: StaffPageConfig,
                     default_lang: str) -> ListQuery:
    """The list's query string, checked: a 400 naming the parameter for anything unknown or out of range."""
    given = _one(params, LIST_PARAMS)
    choices = filter_choices(vocab)
    picked = {name: _choice(given.get(name), name, choices[name]) for name in FILTERS}
    q = given.get("q")
    if q is not None:
        _check_text(q, "q", "part of a customer id")
        q = q.strip()
    lang = _choice(given.get("lang"), "lang", list(LANGS)) or default_lang
    return ListQuery(
        **picked, q=q, lang=lang,
        page=_integer(given.get("page"), "page", 1, 1, MAX_PAGE),
        page_size=_integer(given.get("page_size"), "page_size", config.page_size, 1, config.max_page_size),
    )


def parse_customer_query(params: list[tuple[str, str]], default_lang: str) -> tuple[str, str]:
    given = _one(params, ("id", "lang"))
    cid = given.get("id")
    if cid is None:
        raise BadQuery("id: required (a customer id)", field="id")
    _check_text(cid, "id", "a customer id")
    return cid.strip(), _choice(given.get("lang"), "lang", list(LANGS)) or default_lang


def parse_labels_query(params: list[tuple[str, str]], default_lang: str) -> str:
    return _choice(_one(params, ("lang",)).get("lang"), "lang", list(LANGS)) or default_lang


# ---------------------------------------------------------------------------------------------- reasons
_FIELDS = string.Formatter()


def _cited(text: str | None) -> set[str]:
    return {name for _, name, _, _ in _FIELDS.parse(text or "") if name}


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


@dataclass
class Phrasebook:
    """Sentences of facts in a language, from the reason templates (configs/reasons.yaml)."""

    templates: Any
    names: dict[str, dict[str, str]]  # labels(...) of the language
    lang: str
    stored_lang: str  # the language batch scoring wrote its sentences in

    def cited(self, feature: str) -> set[str]:
        entry = self.templates.features.get(feature)
        if entry is None:
            return set()
        return _cited(getattr(entry, self.lang)) | _cited(getattr(entry, f"{self.lang}_missing"))

    def sentence(self, reason: Mapping[str, Any], values: Mapping[str, Any]) -> str:
        from training.reasons import sentence

        own = reason.get("sentences")
        if isinstance(own, Mapping) and isinstance(own.get(self.lang), str):
            return own[self.lang]  # batch scoring wrote this language itself
        feature = str(reason.get("feature", ""))
        if self.lang == self.stored_lang and isinstance(reason.get("sentence"), str):
            return reason["sentence"]
        row = {**values, feature: reason.get("value")}
        if feature in self.templates.features and self.cited(feature) <= set(row):
            return sentence(feature, row, self.lang, self.templates)
        # No template, or one citing a value we do not have: the fact's name and its value.
        name = self.names.get("feature", {}).get(feature) or humanise(feature)
        return f"{name}{':' if self.lang == 'zh' else ': '}{_number(reason.get('value'))}"


def parse_reasons(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, str) or not raw.strip():
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        return []
    return [r for r in parsed if isinstance(r, dict) and "feature" in r] if isinstance(parsed, list) else []


def cause_of(reason: Mapping[str, Any], templates) -> str:
    """The reason's own ``cause`` (batch scoring writes one per cause), else the feature's cause for its
    model in configs/reasons.yaml (``cause``, or ``driver`` in the older file)."""
    cause = reason.get("cause")
    if isinstance(cause, str) and cause:
        return cause
    feature, model = str(reason.get("feature", "")), str(reason.get("model", ""))
    entry = templates.features.get(feature)
    for mapped in (getattr(entry, "cause", None), getattr(entry, "driver", None)):
        if isinstance(mapped, Mapping) and isinstance(mapped.get(model), str):
            return mapped[model]
    return NO_CAUSE


def _fact(fact: Mapping[str, Any], phrases: Phrasebook, values: Mapping[str, Any]) -> dict[str, Any]:
    contribution = float(fact.get("contribution") or 0.0)
    return {"feature": fact.get("feature"), "value": fact.get("value"), "contribution": contribution,
            "direction": "raises" if contribution > 0 else "lowers", "sentence": phrases.sentence(fact, values)}


def _rose_text(rose: Any, templates, lang: str) -> str | None:
    """"risk rose from 40% to 95% in the week to 3 May 2026" in ``lang`` (configs/reasons.yaml)."""
    text = (getattr(templates, "languages", None) or {}).get(lang)
    if not isinstance(rose, Mapping) or text is None:
        return None
    try:
        return text.rose.format(before=f"{float(rose['before']):.0%}", after=f"{float(rose['after']):.0%}",
                                date=pd.Timestamp(rose["date"]).strftime(text.date_format))
    except (KeyError, TypeError, ValueError):
        return None


def group_by_cause(reasons: list[dict[str, Any]], templates, phrases: Phrasebook,
                   values: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Causes of one customer, most raising first, each with its facts (strongest first) and its
    contribution. Reasons that are causes (with ``evidence``) are taken as they are; reasons that are
    single facts are grouped by their feature's cause and summed; a fact without a cause is its own entry
    (named by the feature)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for reason in reasons:
        model = str(reason.get("model", ""))
        cause = cause_of(reason, templates)
        key = (model, cause if cause != NO_CAUSE else f"feature:{reason.get('feature')}")
        group = groups.setdefault(key, {
            "model": model, "cause": None if cause == NO_CAUSE else cause,
            "feature": reason.get("feature") if cause == NO_CAUSE else None,
            "contribution": 0.0, "facts": [], "rose": None,
        })
        group["contribution"] += float(reason.get("contribution") or 0.0)
        evidence = reason.get("evidence")
        if isinstance(evidence, list) and evidence:
            group["facts"].extend(_fact(f, phrases, values.get(model, {})) for f in evidence if isinstance(f, Mapping))
        else:
            group["facts"].append(_fact(reason, phrases, values.get(model, {})))
        group["rose"] = group["rose"] or _rose_text(reason.get("rose"), templates, phrases.lang)
    out = list(groups.values())
    for group in out:
        group["facts"].sort(key=lambda f: -abs(f["contribution"]))
        group["direction"] = "raises" if group["contribution"] > 0 else "lowers"
    return sorted(out, key=lambda g: -g["contribution"])


def facts_of(reasons: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """model -> {feature: value} of every fact in a customer's reasons (templates may cite them)."""
    out: dict[str, dict[str, Any]] = {}
    for reason in reasons:
        model = str(reason.get("model", ""))
        items = reason.get("evidence") if isinstance(reason.get("evidence"), list) else []
        for fact in [reason, *items]:
            if isinstance(fact, Mapping) and fact.get("feature"):
                out.setdefault(model, {})[str(fact["feature"])] = fact.get("value")
    return out


# ---------------------------------------------------------------------------------------------- the list
def _plain(value: Any) -> Any:
    """A JSON-safe scalar (NaN -> None, numpy -> Python)."""
    if value is None:
        return None
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


SUMMARY_COLUMNS = ("customer_id", "action_rule", "queue", "queue_status", "group", "priority", "value",
                   "value_at_risk", "value_upside", "rfm_segment", "lifecycle_stage")


@dataclass
class StaffLists:
    """The latest batch scores as the staff page reads them, re-read when the file changes."""

    vocab: Vocabulary
    templates: Any
    config: StaffPageConfig
    models: list[str]
    stored_lang: str
    path: Path | None = None
    _cache: tuple[float, pd.DataFrame] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _latest(self) -> Path:
        from core.settings import project_paths

        return self.path or project_paths().latest_scores

    def frame(self) -> pd.DataFrame | None:
        """The worked rows of the latest scores, sorted by priority (None without a scores file)."""
        path = self._latest()
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        with self._lock:
            if self._cache and self._cache[0] == mtime:
                return self._cache[1]
            frame = self._read(path)
            self._cache = (mtime, frame)
            return frame

    def _read(self, path: Path) -> pd.DataFrame:
        import pyarrow.parquet as pq

        have = pq.read_schema(path).names
        needed = {"queue", "action_rule", "priority"}
        if not needed <= set(have):
            raise BadQuery(f"the latest scores have no {', '.join(sorted(needed - set(have)))} column: they "
                           "were written before actions existed; run `propensity score` again", field="(scores)")
        # The English text of the reasons is left on disk: the page builds its sentences from the JSON.
        frame = pd.read_parquet(path, columns=[c for c in have if c != "reasons"])
        worked = frame["queue"].isin(self.vocab.work_queues).to_numpy()
        if "group" in frame.columns:
            worked &= frame["group"].fillna("").to_numpy() != "control"
        frame = frame[worked]
        order = np.lexsort((frame["customer_id"].astype(str).to_numpy(),
                            -np.nan_to_num(pd.to_numeric(frame["priority"], errors="coerce").to_numpy(dtype="float64"),
                                           nan=-np.inf)))
        frame = frame.iloc[order].reset_index(drop=True)
        frame["_tags"] = ";" + frame.get("tags", pd.Series("", index=frame.index)).fillna("").astype(str) + ";"
        frame["_id"] = frame["customer_id"].astype(str).str.casefold()
        log.info("staff page: %d rows in work queues from %s", len(frame), path.name)
        return frame

    @property
    def evidence(self) -> int:
        """Facts under a row's headline: configs/reasons.yaml ``ranking.evidence`` (the CRM text's)."""
        ranking = getattr(self.templates, "ranking", None)
        return int(getattr(ranking, "evidence", EVIDENCE))

    def phrasebook(self, lang: str) -> Phrasebook:
        return Phrasebook(self.templates, labels(self.config, self.vocab, lang), lang, self.stored_lang)

    def page(self, query: ListQuery) -> dict[str, Any]:
        frame = self.frame()
        head: dict[str, Any] = {"models": self.models, "filters": {k: getattr(query, k) for k in (*FILTERS, "q")},
                                "page": query.page, "page_size": query.page_size, "lang": query.lang}
        if frame is None:
            return {**head, "as_of": None, "queues": {q: 0 for q in self.vocab.work_queues}, "total": 0,
                    "pages": 0, "rows": []}
        mask = np.ones(len(frame), dtype=bool)
        for name, column in FILTER_COLUMNS.items():
            wanted = getattr(query, name)
            if wanted is not None and column in frame.columns:
                mask &= frame[column].to_numpy() == wanted
            elif wanted is not None:
                mask &= False
        if query.tag is not None:
            mask &= frame["_tags"].str.contains(f";{query.tag};", regex=False).to_numpy()
        if query.q is not None:
            mask &= frame["_id"].str.contains(query.q.casefold(), regex=False).to_numpy()
        hits = np.flatnonzero(mask)
        start = (query.page - 1) * query.page_size
        chosen = frame.iloc[hits[start:start + query.page_size]]
        counts = frame["queue"].value_counts()
        as_of = frame["as_of"].iloc[0] if len(frame) and "as_of" in frame.columns else None
        return {
            **head, "as_of": _plain(as_of), "queues": {q: int(counts.get(q, 0)) for q in self.vocab.work_queues},
            "total": int(hits.size), "pages": -(-int(hits.size) // query.page_size),
            "rows": self._rows(chosen, query.lang, detail=False),
        }

    def _snapshot_values(self, frame: pd.DataFrame, wanted: dict[str, set[str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """customer -> model -> {feature: value} from the feature snapshot beside the scores, for the
        features the templates of this page cite (read for these customers only)."""
        import pyarrow.parquet as pq

        from core.settings import project_paths
        from serving.batch import FEATURE_SNAPSHOT

        if frame.empty or not any(wanted.values()) or "as_of" not in frame.columns:
            return {}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for as_of, part in frame.groupby("as_of"):
            path = project_paths().scores_for(pd.Timestamp(as_of)) / FEATURE_SNAPSHOT
            if not path.is_file():
                continue
            have = set(pq.read_schema(path).names)
            columns = [f"{m}__{f}" for m, feats in wanted.items() for f in feats if f"{m}__{f}" in have]
            if not columns:
                continue
            ids = part["customer_id"].astype(str).tolist()
            table = pq.read_table(path, columns=["customer_id", *columns], filters=[("customer_id", "in", ids)])
            for rec in table.to_pylist():
                per = out.setdefault(str(rec.pop("customer_id")), {})
                for col, value in rec.items():
                    model, feature = col.split("__", 1)
                    per.setdefault(model, {})[feature] = value
        return out

    def _rows(self, chosen: pd.DataFrame, lang: str, detail: bool) -> list[dict[str, Any]]:
        phrases = self.phrasebook(lang)
        reasons = [parse_reasons(r) for r in chosen.get("reasons_json", pd.Series([None] * len(chosen)))]
        values: list[dict[str, dict[str, Any]]] = []
        wanted: dict[str, set[str]] = {}
        for entries in reasons:
            per = facts_of(entries)
            values.append(per)
            if lang != self.stored_lang:
                for model, known in per.items():
                    for feature in known:
                        wanted.setdefault(model, set()).update(phrases.cited(feature) - set(known))
        snapshot = self._snapshot_values(chosen, wanted) if wanted else {}
        rows = []
        for (_, rec), entries, own in zip(chosen.iterrows(), reasons, values, strict=True):
            cid = str(rec["customer_id"])
            merged = {m: {**snapshot.get(cid, {}).get(m, {}), **v} for m, v in own.items()}
            causes = group_by_cause(entries, self.templates, phrases, merged)
            rows.append(self._row(rec, causes, detail))
        return rows

    def _row(self, rec: pd.Series, causes: list[dict[str, Any]], detail: bool) -> dict[str, Any]:
        from serving.actions import LAYERS

        row = {c: _plain(rec.get(c)) for c in SUMMARY_COLUMNS}
        row["tags"] = [t for t in str(rec.get("tags") or "").split(";") if t]
        scores = {}
        for model in self.models:
            band = rec.get(f"{model}_band")
            if band is None or (isinstance(band, float) and math.isnan(band)):
                continue
            number = "probability" if f"{model}_probability" in rec.index else "value"
            scores[model] = {number: _plain(rec.get(f"{model}_{number}")), "band": band}
        row["scores"] = scores
        raising = [c for c in causes if c["direction"] == "raises"]
        top = raising[0] if raising else None
        evidence = [f["sentence"] for f in top["facts"] if f["direction"] == "raises"][:self.evidence] if top else []
        row["headline"] = None if top is None else {
            "model": top["model"], "cause": top["cause"], "feature": top["feature"],
            "evidence": evidence + ([top["rose"]] if top["rose"] else []),
        }
        if detail:
            row["as_of"] = _plain(rec.get("as_of"))
            row["layers"] = {name: rec.get(f"layer_{name}") for name in LAYERS if f"layer_{name}" in rec.index}
            row["causes"] = causes
        return row

    def customer(self, customer_id: str, lang: str) -> dict[str, Any]:
        """One customer of the latest scores with every reason grouped by cause; ``found: false`` (as
        /predict answers an unknown id) when the latest scores do not hold the customer."""
        head = {"models": self.models, "lang": lang}
        frame = self.frame()
        if frame is None:
            return {**head, "found": False, "customer": None, "error": "no batch scores yet"}
        found = frame[frame["customer_id"].astype(str).to_numpy() == customer_id]
        if found.empty:  # scored but in no work queue: read its row alone
            import pyarrow.parquet as pq

            path = self._latest()
            have = [c for c in pq.read_schema(path).names if c != "reasons"]
            found = pq.read_table(path, columns=have, filters=[("customer_id", "==", customer_id)]).to_pandas()
        if found.empty:
            return {**head, "found": False, "customer": None, "error": "not in the latest scores"}
        return {**head, "found": True, "customer": self._rows(found.head(1), lang, detail=True)[0]}
