"""Behaviour layers and follow-up actions for batch scoring, driven by ``configs/actions.yaml``.

Layers tag every scored customer ``high`` or ``low`` on four axes (activity, value, intent, risk), each
from one column and a threshold in the config. Action rules are data: the first rule whose conditions
all hold gives the customer's action, team queue and which model's reasons to show; a customer matching
no rule gets the config's default ("no action"). Everything here is vectorised over a DataFrame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from core.config import StrictModel, config_path, load_config
from core.errors import ConfigError

# The groups and the untreated view live in training: training labels need them too (imports go down).
from training.labels import CONTROL, TREATMENT, untreated_weights  # noqa: F401
from training.reasons import NO_CAUSE

log = logging.getLogger("propensity.actions")

LAYERS = ("activity", "value", "intent", "risk")
LAYER_COLUMNS = tuple(f"layer_{name}" for name in LAYERS)
LIFECYCLE_STAGES = ("new", "active", "at_risk", "lapsed")
HIGH, LOW = "high", "low"


class LayerRule(StrictModel):
    """``high`` when ``column`` is at least ``high_at_least``; or is one of ``high_values`` (e.g. a model's
    band: cut on the training population's score distribution and stored with the model, so the API
    and batch scoring agree customer by customer); or is in the top ``high_top_fraction`` of the customers
    scored together (relative to that batch: a one-customer API call cannot know it, prefer bands)."""

    column: str
    high_at_least: float | None = None
    high_values: list[str] | None = None
    high_top_fraction: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _exactly_one_threshold(self) -> LayerRule:
        given = [x is not None for x in (self.high_at_least, self.high_values, self.high_top_fraction)]
        if sum(given) != 1:
            raise ValueError("give exactly one of high_at_least, high_values or high_top_fraction")
        return self


class Layers(StrictModel):
    activity: LayerRule
    value: LayerRule
    intent: LayerRule
    risk: LayerRule


class Conditions(StrictModel):
    """All given conditions must hold (AND). Lists mean "one of"."""

    layer_activity: Literal["high", "low"] | None = None
    layer_value: Literal["high", "low"] | None = None
    layer_intent: Literal["high", "low"] | None = None
    layer_risk: Literal["high", "low"] | None = None
    bands: dict[str, list[Literal["high", "medium", "low"]]] = Field(
        default_factory=dict, description="model name -> allowed bands of that model"
    )
    rfm_segment: list[str] | None = None
    lifecycle_stage: list[Literal["new", "active", "at_risk", "lapsed"]] | None = None
    at_least: dict[str, float] = Field(default_factory=dict, description="column -> minimum (inclusive)")
    at_most: dict[str, float] = Field(default_factory=dict, description="column -> maximum (inclusive)")
    tags: list[str] = Field(default_factory=list, description="tags (configs/tags.yaml) that must all hold")
    top_cause: dict[str, list[str]] = Field(
        default_factory=dict, description="model name -> causes (configs/reasons.yaml) one of which must be "
        "that model's top raising cause, ranked as the CRM text ranks it ('none': nothing raises the score)"
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Conditions:
        if not self.model_dump(exclude_defaults=True):
            raise ValueError("a rule needs at least one condition (the default action covers the rest)")
        return self

    def columns_needed(self) -> list[str]:
        named = [k for k, v in self.model_dump(exclude={"at_least", "at_most", "bands", "tags", "top_cause"}).items()
                 if v is not None]
        return (named + [f"{m}_band" for m in self.bands] + list(self.at_least) + list(self.at_most)
                + (["tags"] if self.tags else []))


class ActionRule(StrictModel):
    name: str
    when: Conditions
    action: str = Field(min_length=1)
    queue: str = Field(min_length=1)
    explain: str = Field(description="the model (a spec name) whose reasons the CRM sees for this action")
    priority: str | None = Field(
        None, description="scored column that orders the queue (e.g. value_at_risk); null or absent: the "
        "explained model's probability"
    )
    control_share: float | None = Field(
        None, ge=0, lt=1, description="share held out as a control group; null: the config's control.share"
    )
    cooldown_days: int | None = Field(
        None, ge=1, description="no contact by this rule again within this many days of the last one"
    )


class ControlGroups(StrictModel):
    """A random share of each rule's customers gets no action, so that `propensity effect` can compare
    treated with untreated. Membership is a hash of (customer, list date): re-running the same list
    gives the same control group, and a customer is not held out every week by construction."""

    share: float = Field(0.1, ge=0, lt=1, description="default share per rule (a rule may set control_share)")
    action: str = "control group: no contact this time"
    queue: str = "none"


class ContactPolicy(StrictModel):
    """Do not over-market: at most ``max_contacts`` contacts per customer in any ``per_days`` days (all
    rules together), on top of each rule's own ``cooldown_days``. History: the contacts the CRM exported
    (the ``contacts`` event family) when there are any, else the treated rows of earlier lists."""

    max_contacts: int | None = Field(None, ge=1, description="null: no cap")
    per_days: int = Field(30, ge=1)
    action: str = "held back by the contact policy"
    queue: str = "none"


class DefaultAction(StrictModel):
    action: str = "no action"
    queue: str = "none"


class RaySettings(StrictModel):
    """Batch scoring on Ray (``engine: ray``): a cluster when RAY_ADDRESS is set, else a Ray started on
    this machine for the run (loopback only, no dashboard, no usage stats)."""

    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray; null: every core of this machine")
    workers: int | None = Field(
        None, ge=1, description="scoring workers (Ray actors for the run, each holding the models); null: one per "
        "cpus_per_worker CPUs of the cluster"
    )
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (LightGBM threads) per worker")
    batch_rows: int = Field(50_000, ge=1, description="most customers per Ray batch")


class ScoringSettings(StrictModel):
    """Who is scored and how much explanation the CRM gets, and on which engine."""

    active_days: int = Field(365, gt=0, description="active = any event in this many days before as_of")
    count_signup_as_activity: bool = Field(True, description="a sign-up inside the window counts as an event")
    top_k: int = Field(5, ge=1, le=20, description="reasons per customer with an action")
    lang: Literal["en", "zh"] = "en"
    keep_feature_snapshot: bool = Field(
        True, description="keep the model inputs beside the scores (monitoring reads them for drift)"
    )
    engine: Literal["local", "ray"] = Field(
        "local", description="local: this process (the fastest on one machine); ray: batches on a pool of Ray actors"
    )
    ray: RaySettings = RaySettings()


class LostRule(StrictModel):
    """Checked before the rules: a customer far beyond anything the model learnt from (e.g. no order for
    several times the longest gap among its training rows) gets this action, not a model-driven one:
    the model's score there is an extrapolation."""

    model: str = Field(description="the model (a spec name) whose training range is the yardstick")
    feature: str = Field(description="a feature that only grows with time, e.g. days_since_last_order")
    times_training_max: float = Field(2.0, gt=1, description="lost beyond this multiple of the training maximum")
    action: str = "no follow-up: lost (far beyond the customers the model learnt from)"
    queue: str = "none"


class Stakes(StrictModel):
    """Which models make the value at stake: value_at_risk = P(risk_model) x value_model's amount;
    value_upside = P(upside_model) x the customer's expected order value (a feature)."""

    value_model: str
    risk_model: str
    upside_model: str
    order_value_feature: str = "avg_order_value_365d"


class Queue(StrictModel):
    capacity: int | None = Field(None, ge=0, description="customers the team can take per run; null: no limit")


class TagRule(StrictModel):
    """A named tag: holds for every customer matching ``when`` (the rules' conditions). A customer carries
    every tag that holds; rules can require tags."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    when: Conditions
    refresh: Literal["daily", "weekly", "monthly"] = Field(
        "daily", description="batch lists recompute the tag on the first list of each period and carry it in between"
    )


class TagsConfig(StrictModel):
    tags: list[TagRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TagsConfig:
        names = [t.name for t in self.tags]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tag names must be unique; repeated: {dupes}")
        return self


def load_tags_config(path: str | Path | None = None) -> TagsConfig:
    """configs/tags.yaml (no tags when the file is absent)."""
    path = Path(path) if path else config_path("tags.yaml")
    return load_config(path, TagsConfig) if path.is_file() else TagsConfig()


PERIOD = {"daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m"}


def tag_due(refresh: str, as_of, previous_as_of) -> bool:
    """Whether a list at ``as_of`` recomputes a tag of this cadence: always on the first list, then on
    the first list of each new day, ISO week or month."""
    if previous_as_of is None:
        return True
    fmt = PERIOD[refresh]
    return f"{pd.Timestamp(as_of):{fmt}}" != f"{pd.Timestamp(previous_as_of):{fmt}}"


def assign_tags(frame: pd.DataFrame, config: TagsConfig, previous: pd.Series | None = None,
                due: set[str] | None = None, causes: TopCauses | None = None) -> pd.Series:
    """The ``tags`` column: every tag that holds, sorted, joined by ";". Tags not in ``due`` are carried
    from ``previous`` (the last list's tags per customer, indexed by customer_id)."""
    held: list[list[str]] = [[] for _ in range(len(frame))]
    carried = None
    if previous is not None and due is not None:
        carried = frame["customer_id"].map(previous).fillna("").str.split(TAG_SEPARATOR).tolist()
    for tag in config.tags:
        if carried is not None and tag.name not in due:
            hits = [tag.name in names for names in carried]
        else:
            hits = conditions_mask(frame, tag.when, f"tags.yaml: tag '{tag.name}'", causes)
        for i in np.flatnonzero(hits):
            held[i].append(tag.name)
    return pd.Series([TAG_SEPARATOR.join(sorted(names)) for names in held], index=frame.index, name="tags")


class ActionsConfig(StrictModel):
    scoring: ScoringSettings = ScoringSettings()
    layers: Layers
    lost: LostRule | None = None
    rules: list[ActionRule] = Field(min_length=1)
    default: DefaultAction = DefaultAction()
    queues: dict[str, Queue] = Field(
        default_factory=dict, description="per queue: capacity per run (the rest are marked over capacity)"
    )
    control: ControlGroups = ControlGroups()
    contact_policy: ContactPolicy = ContactPolicy()
    stakes: Stakes | None = None

    def contact_lookback_days(self) -> int | None:
        """How far back the contact policy looks (the cap's window, the longest cooldown); None when no
        cap or cooldown is configured: then no history is needed at all."""
        windows = [r.cooldown_days for r in self.rules if r.cooldown_days is not None]
        if self.contact_policy.max_contacts is not None:
            windows.append(self.contact_policy.per_days)
        return max(windows) if windows else None

    @model_validator(mode="after")
    def _unique_names(self) -> ActionsConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {dupes}")
        return self


def load_actions_config(path: str | Path | None = None) -> ActionsConfig:
    return load_config(path or config_path("actions.yaml"), ActionsConfig)


def prediction_column(model: str, task: str = "binary") -> str:
    """Where a model's number goes: ``<model>_probability`` (binary) or ``<model>_value`` (an amount)."""
    return f"{model}_{'probability' if task == 'binary' else 'value'}"


def model_columns(model: str) -> set[str]:
    """The columns scoring adds for one model (either task)."""
    return {prediction_column(model, "binary"), prediction_column(model, "regression"), f"{model}_band",
            f"{model}_model_version"}


def add_stakes(frame: pd.DataFrame, stakes: Stakes | None) -> pd.DataFrame:
    """``value``, ``value_at_risk`` = P(risk model) x value and ``value_upside`` = P(upside model) x the
    expected order value, when the models they need were scored (columns left out otherwise)."""
    if stakes is None:
        return frame
    out = frame.copy()
    value_col = prediction_column(stakes.value_model, "regression")
    if value_col in out.columns:
        out["value"] = out[value_col]
        risk = prediction_column(stakes.risk_model)
        if risk in out.columns:
            out["value_at_risk"] = out[risk] * out["value"]
    upside = prediction_column(stakes.upside_model)
    if upside in out.columns and stakes.order_value_feature in out.columns:
        out["value_upside"] = out[upside] * pd.to_numeric(out[stakes.order_value_feature], errors="coerce")
    return out


STAKE_COLUMNS = ("value", "value_at_risk", "value_upside")


def layer_tags(scores: pd.DataFrame, layers: Layers, skipped_models: Iterable[str] = ()) -> pd.DataFrame:
    """Columns ``layer_activity`` .. ``layer_risk`` (``high``/``low``) for every row of ``scores``.

    A missing value (e.g. no spend at all) counts as low: nothing observed is not high. A layer built on
    a model that was skipped (the data lacks what it needs) is low for everyone, with a log line.
    """
    absent = set().union(*(model_columns(m) for m in skipped_models))
    absent |= {c for c in STAKE_COLUMNS if c not in scores.columns}  # stakes of a model that was skipped
    out = {}
    for name in LAYERS:
        rule: LayerRule = getattr(layers, name)
        if rule.column in absent:
            log.info("layer %s is low for everyone: %s comes from a skipped model", name, rule.column)
            out[f"layer_{name}"] = np.full(len(scores), LOW, dtype=object)
            continue
        if rule.column not in scores.columns:
            raise ConfigError(
                f"actions.yaml: layers.{name}.column '{rule.column}' is not a scored column "
                f"(have: {', '.join(sorted(scores.columns))})"
            )
        if rule.high_values is not None:
            out[f"layer_{name}"] = np.where(scores[rule.column].isin(rule.high_values).to_numpy(), HIGH, LOW)
            continue
        values = pd.to_numeric(scores[rule.column], errors="coerce").to_numpy(dtype="float64")
        if rule.high_at_least is not None:
            threshold = rule.high_at_least
        else:
            observed = values[~np.isnan(values)]
            # Top fraction of the scored population; ties at the cut all count as high.
            threshold = np.quantile(observed, 1 - rule.high_top_fraction) if observed.size else np.inf
        high = np.greater_equal(values, threshold, where=~np.isnan(values), out=np.zeros(len(values), bool))
        out[f"layer_{name}"] = np.where(high, HIGH, LOW)
    return pd.DataFrame(out, index=scores.index)


class TopCauses(Protocol):
    """What ranks a model's causes for rows of the scored frame (``serving.causes.CauseRanks``)."""

    def ranks(self, model: str) -> bool: ...  # the model was scored here

    def causes(self, model: str) -> tuple[str, ...]: ...

    def top_cause(self, model: str, rows: np.ndarray) -> np.ndarray: ...


def conditions_mask(frame: pd.DataFrame, when: Conditions, where: str, causes: TopCauses | None = None,
                    among: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``frame`` where every condition holds (the rules' and the tags' shared matcher), within
    ``among`` when given. The top cause is tested last, on the rows every other condition let through:
    ranking causes costs a TreeSHAP pass per row."""
    missing = [c for c in when.columns_needed() if c not in frame.columns]
    if missing:
        raise ConfigError(f"{where} uses column(s) {missing} that the scores do not have")
    mask = np.ones(len(frame), dtype=bool) if among is None else among.copy()
    if when.tags:
        held = frame["tags"].fillna("").str.split(TAG_SEPARATOR)
        mask &= held.map(lambda names: set(when.tags) <= set(names)).to_numpy(dtype=bool)
    for col in (*LAYER_COLUMNS, "rfm_segment", "lifecycle_stage"):
        wanted = getattr(when, col)
        if wanted is None:
            continue
        allowed = [wanted] if isinstance(wanted, str) else wanted
        mask &= frame[col].isin(allowed).to_numpy()
    for model, allowed in when.bands.items():
        mask &= frame[f"{model}_band"].isin(allowed).to_numpy()
    # A null never satisfies a numeric bound: unknown is not "at most 0 orders".
    for col, bound in when.at_least.items():
        mask &= (pd.to_numeric(frame[col], errors="coerce") >= bound).fillna(False).to_numpy(dtype=bool)
    for col, bound in when.at_most.items():
        mask &= (pd.to_numeric(frame[col], errors="coerce") <= bound).fillna(False).to_numpy(dtype=bool)
    for model, allowed in when.top_cause.items():
        column = f"{model}_top_cause"  # a frame may carry the causes ranked elsewhere
        if causes is None and column not in frame.columns:
            raise ConfigError(f"{where} tests the top cause of {model}: nothing ranks its causes here "
                              f"(no ranking and no {column} column)")
        if causes is not None and not causes.ranks(model):
            # A model not scored here (skipped for lack of data, or left out of an API request): like a
            # layer built on it, its cause holds for no one; a rule on it is skipped before it gets here.
            mask[:] = False
            continue
        if causes is not None:
            unknown = sorted(set(allowed) - {*causes.causes(model), NO_CAUSE})
            if unknown:
                raise ConfigError(f"{where}: top_cause.{model}: unknown cause(s) {unknown}; the causes of "
                                  f"{model} (configs/reasons.yaml): {', '.join(causes.causes(model))}, or {NO_CAUSE}")
        rows = np.flatnonzero(mask)
        if rows.size:
            top = causes.top_cause(model, rows) if causes is not None else frame[column].to_numpy()[rows]
            mask[rows] = np.isin(top, allowed)
    return mask


def check_segments(config: ActionsConfig, known_segments: list[str] | None) -> None:
    """Fail on a rule naming an RFM segment that does not exist (a typo would silently never match)."""
    if not known_segments:
        return
    for rule in config.rules:
        unknown = sorted(set(rule.when.rfm_segment or []) - set(known_segments))
        if unknown:
            raise ConfigError(
                f"actions.yaml: rule '{rule.name}': unknown rfm_segment {unknown}; known: {sorted(known_segments)}"
            )


def rule_models(rule: ActionRule) -> set[str]:
    """The models a rule depends on: the one it explains with and those whose bands it tests."""
    return {rule.explain, *rule.when.bands, *rule.when.top_cause}


def check_models(config: ActionsConfig, known_models: Iterable[str]) -> None:
    """Fail on a rule naming a model that has no spec (a typo would silently never match)."""
    known = sorted(known_models)
    for rule in config.rules:
        unknown = sorted(rule_models(rule) - set(known))
        if unknown:
            raise ConfigError(f"actions.yaml: rule '{rule.name}': unknown model(s) {unknown}; known: {known}")


TAG_SEPARATOR = ";"
LOST_RULE = "lost"
IN_QUEUE, OVER_CAPACITY = "in queue", "over capacity"


def control_draw(customer_ids, as_of) -> np.ndarray:
    """A uniform number in [0, 1) per customer, fixed by (customer, as_of date): sha256, not Python's
    salted hash, so every process and every re-run agrees."""
    import hashlib

    day = f"{pd.Timestamp(as_of):%Y-%m-%d}"
    out = np.empty(len(customer_ids))
    for i, cid in enumerate(customer_ids):
        digest = hashlib.sha256(f"{cid}|{day}".encode("utf-8", "surrogatepass")).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def assign_groups(frame: pd.DataFrame, actions: pd.DataFrame, config: ActionsConfig, as_of) -> pd.DataFrame:
    """``group`` per row (treatment / control; "" without a rule) and the control rows' action and queue
    replaced by the hold-out's (their ``action_rule`` stays: the effect report compares per rule)."""
    out = actions.copy()
    shares = {r.name: config.control.share if r.control_share is None else r.control_share for r in config.rules}
    share = out["action_rule"].map(shares).fillna(0.0).to_numpy(dtype="float64")
    ruled = out["action_rule"].isin(list(shares)).to_numpy()
    control = ruled & (control_draw(frame["customer_id"].astype(str).tolist(), as_of) < share)
    out["group"] = np.where(control, CONTROL, np.where(ruled, TREATMENT, ""))
    out.loc[control, "action"] = config.control.action
    out.loc[control, "queue"] = config.control.queue
    return out


def lost_mask(frame: pd.DataFrame, config: ActionsConfig, feature_ranges: dict[str, dict[str, list[float]]]) -> np.ndarray:
    """Rows the ``lost`` rule takes: the feature beyond ``times_training_max`` x its training maximum."""
    rule = config.lost
    if rule is None or rule.model not in feature_ranges or rule.feature not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    seen = feature_ranges[rule.model].get(rule.feature)
    if not seen:
        return np.zeros(len(frame), dtype=bool)
    values = pd.to_numeric(frame[rule.feature], errors="coerce").to_numpy(dtype="float64")
    return np.nan_to_num(values, nan=-np.inf) > rule.times_training_max * seen[1]


def assign_actions(
    frame: pd.DataFrame, config: ActionsConfig, skipped_models: Iterable[str] = (),
    feature_ranges: dict[str, dict[str, list[float]]] | None = None, causes: TopCauses | None = None,
) -> pd.DataFrame:
    """``action``, ``queue``, ``action_rule`` and ``explain`` per row: the ``lost`` rule first (when
    configured and the model's training ranges are known), then the first matching rule. A rule that
    depends on a skipped model never matches (logged once)."""
    n = len(frame)
    skipped = set(skipped_models)
    chosen = np.full(n, -1, dtype=np.int64)
    lost = lost_mask(frame, config, feature_ranges or {})
    chosen[lost] = len(config.rules) + 1  # after the default: the lost rule's slot
    for i, rule in enumerate(config.rules):
        if rule_models(rule) & skipped:
            log.info("rule %s skipped: it needs model(s) %s", rule.name, ", ".join(sorted(rule_models(rule) & skipped)))
            continue
        chosen[conditions_mask(frame, rule.when, f"actions.yaml: rule '{rule.name}'", causes, chosen < 0)] = i
    lost_rule = config.lost or LostRule(model="", feature="")
    actions = np.array([r.action for r in config.rules] + [config.default.action, lost_rule.action], dtype=object)
    queues = np.array([r.queue for r in config.rules] + [config.default.queue, lost_rule.queue], dtype=object)
    names = np.array([r.name for r in config.rules] + ["", LOST_RULE], dtype=object)
    explain = np.array([r.explain for r in config.rules] + ["", ""], dtype=object)
    idx = np.where(chosen < 0, len(config.rules), chosen)  # the default sits after the rules
    return pd.DataFrame(
        {"action": actions[idx], "queue": queues[idx], "action_rule": names[idx], "explain": explain[idx]},
        index=frame.index,
    )


def prioritise(frame: pd.DataFrame, config: ActionsConfig) -> pd.DataFrame:
    """``priority`` (the rule's ``priority`` column, e.g. value_at_risk, when it was scored, else the
    probability of the model the rule explains with: who is most at stake comes first) and
    ``queue_status`` per row: within each queue the ``capacity`` best by priority are "in
    queue", the rest "over capacity" (kept in the list, not dropped); "" for rows without an action."""
    priority = np.full(len(frame), np.nan)
    rule_of = frame["action_rule"].to_numpy()
    for rule in config.rules:
        rows = rule_of == rule.name
        if not rows.any():
            continue
        column = rule.priority if rule.priority in frame.columns else prediction_column(rule.explain)
        if column in frame.columns:
            priority[rows] = pd.to_numeric(frame.loc[rows, column], errors="coerce").to_numpy(dtype="float64")
    # Only rows a team works on queue: a rule's treatment group (not the default, lost or control rows).
    worked = frame["action_rule"].isin([r.name for r in config.rules]).to_numpy()
    if "group" in frame.columns:
        worked &= frame["group"].to_numpy() != CONTROL
    if "held_back" in frame.columns:
        worked &= frame["held_back"].to_numpy() == ""
    status = np.where(worked, IN_QUEUE, "").astype(object)
    if "held_back" in frame.columns:
        status = np.where(frame["held_back"].to_numpy() != "", frame["held_back"].to_numpy(), status).astype(object)
    for name, queue in config.queues.items():
        if queue.capacity is None:
            continue
        rows = np.flatnonzero((frame["queue"].to_numpy() == name) & (status == IN_QUEUE))
        ranked = rows[np.argsort(-np.nan_to_num(priority[rows], nan=-np.inf), kind="stable")]
        status[ranked[queue.capacity:]] = OVER_CAPACITY
    return pd.DataFrame({"priority": priority, "queue_status": status}, index=frame.index)


HELD_CAP, HELD_COOLDOWN = "held back: contact cap", "held back: cooldown"


def apply_contact_policy(frame: pd.DataFrame, actions: pd.DataFrame, config: ActionsConfig, as_of,
                         history: pd.DataFrame | None) -> pd.DataFrame:
    """Hold back treated rows the policy forbids: the rule's cooldown since this customer's last contact
    by the same rule, or the cap on contacts in the last ``per_days``. ``history`` has customer_id,
    contacted_at, action_rule (contacts strictly before ``as_of`` count). Held-back rows keep their rule
    and get ``held_back`` = the reason; the others "" ."""
    out = actions.copy()
    out["held_back"] = ""
    if history is None or history.empty:
        return out
    as_of = pd.Timestamp(as_of)
    past = history[pd.to_datetime(history["contacted_at"], utc=True) < as_of]
    treated = (out["group"] == TREATMENT).to_numpy()
    ids = frame["customer_id"].astype(str).to_numpy()
    policy = config.contact_policy
    if policy.max_contacts is not None:
        window = past[pd.to_datetime(past["contacted_at"], utc=True) >= as_of - pd.Timedelta(days=policy.per_days)]
        counts = window["customer_id"].astype(str).value_counts()
        capped = treated & (pd.Series(ids).map(counts).fillna(0).to_numpy() >= policy.max_contacts)
        out.loc[capped, "held_back"] = HELD_CAP
    for rule in config.rules:
        if rule.cooldown_days is None:
            continue
        recent = past[(past["action_rule"] == rule.name)
                      & (pd.to_datetime(past["contacted_at"], utc=True) >= as_of - pd.Timedelta(days=rule.cooldown_days))]
        cooling = treated & (out["action_rule"].to_numpy() == rule.name) & np.isin(ids, recent["customer_id"].astype(str))
        out.loc[cooling & (out["held_back"] == "").to_numpy(), "held_back"] = HELD_COOLDOWN
    held = (out["held_back"] != "").to_numpy()
    out.loc[held, "action"] = policy.action
    out.loc[held, "queue"] = policy.queue
    return out


def decide(
    frame: pd.DataFrame, config: ActionsConfig, skipped_models: Iterable[str] = (),
    feature_ranges: dict[str, dict[str, list[float]]] | None = None,
    tags: TagsConfig | None = None, previous_tags: pd.Series | None = None, tags_due: set[str] | None = None,
    contact_history: pd.DataFrame | None = None, causes: TopCauses | None = None,
) -> pd.DataFrame:
    """Layers, action, queue, rule, control group, priority and queue status for scored rows: the one
    decision batch scoring and the API share (``frame`` holds customer_id, as_of, the features and
    ``<model>_probability`` / ``_band``; ``causes`` ranks the causes of its rows for ``top_cause``
    conditions)."""
    skipped = list(skipped_models)
    frame = add_stakes(frame, config.stakes)
    layers = layer_tags(frame, config.layers, skipped)
    with_layers = pd.concat([frame, layers], axis=1)
    layers["tags"] = assign_tags(with_layers, tags or TagsConfig(), previous_tags, tags_due, causes)
    with_layers["tags"] = layers["tags"]
    actions = assign_actions(with_layers, config, skipped, feature_ranges, causes)
    as_of = frame["as_of"].iloc[0] if len(frame) else pd.Timestamp(0, tz="UTC")
    actions = assign_groups(frame, actions, config, as_of)
    actions = apply_contact_policy(frame, actions, config, as_of, contact_history)
    ranked = prioritise(pd.concat([with_layers, actions], axis=1), config)
    stakes = frame[[c for c in STAKE_COLUMNS if c in frame.columns]]
    return pd.concat([stakes, layers, actions, ranked], axis=1)
