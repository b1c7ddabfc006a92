"""The champion gate, rollback and the audit log.

``promote(name)`` scores the challenger and the current champion on the same rows: the holdout logged by
the challenger's training run (its latest matured cutoff). The challenger takes the ``champion`` alias
only if it beats the champion by the configured margin, or if there is no champion. Every decision,
promoted or not, is appended to an audit log kept as tags on the registered model (who, when, both
scores, decision), which ``history(name)`` reads back. ``rollback(name)`` gives the alias back to the
previous champion.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.errors import PropensityError
from training.champion import CHALLENGER, CHAMPION, LoadedModel, load_model_version

log = logging.getLogger("propensity.training")

AUDIT_PREFIX = "audit."
CHAMPION_STACK_TAG = "champion_history"  # JSON list of versions that held the alias, oldest first
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"


class IncomparableModels(PropensityError):
    """The champion needs features the challenger's holdout lacks (another feature service)."""


@dataclass
class Decision:
    model: str
    action: str  # promote | rollback
    decision: str  # promoted | rejected | unchanged | rolled_back
    challenger_version: str | None
    champion_version: str | None  # the champion before the decision
    challenger_score: float | None
    champion_score: float | None
    metric: str
    margin: float
    holdout: str  # which rows both were scored on
    reason: str
    who: str
    when: str

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"


def _who() -> str:
    try:
        return os.environ.get("PROPENSITY_USER") or getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _version_for_alias(client, name: str, alias: str) -> str | None:
    import mlflow

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_holdout(run_id: str) -> pd.DataFrame:
    """The holdout (label + features, no customer ids) a training run logged."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=HOLDOUT_ARTIFACT,
                                                        dst_path=tmp)
        except Exception as exc:
            raise PropensityError(f"training run {run_id} has no {HOLDOUT_ARTIFACT} artifact: {exc}") from exc
        return pd.read_parquet(local)


def score_on_holdout(model: LoadedModel, holdout: pd.DataFrame, metric: str) -> float:
    from training.metrics import metric_value

    missing = [c for c in model.feature_names if c not in holdout.columns]
    if missing:
        raise IncomparableModels(
            f"{model.name} v{model.version} (feature service {model.feature_service}) needs feature(s) "
            f"{', '.join(missing)} that the challenger's holdout does not hold: retrain both on one service, "
            f"or promote by hand with `propensity promote {model.name} --force`"
        )
    y = holdout["label"].to_numpy(dtype=np.float64)
    return metric_value(metric, y, model.predict(holdout))


def promote(name: str, margin: float | None = None, metric: str | None = None, force: bool = False) -> Decision:
    """Give ``champion`` to the challenger if it beats the champion on the same holdout by ``margin``."""
    from core.specs import load_spec
    from training.tracking import client as mlflow_client

    if margin is None or metric is None:
        cfg = load_spec(name)
        margin = cfg.promotion.margin if margin is None else margin
        metric = cfg.promotion.metric if metric is None else metric
    client = mlflow_client()
    challenger_v = _version_for_alias(client, name, CHALLENGER)
    if challenger_v is None:
        raise PropensityError(f"model {name!r} has no '{CHALLENGER}' version: run `propensity train {name}`")
    champion_v = _version_for_alias(client, name, CHAMPION)
    challenger = load_model_version(name, version=challenger_v)
    holdout = load_holdout(challenger.run_id)
    cutoff = challenger.tags.get("holdout_cutoff", "?")
    where = f"holdout of run {challenger.run_id} (cutoff {cutoff}, {len(holdout)} rows)"
    chal_score = score_on_holdout(challenger, holdout, metric)
    champ_score = None
    if champion_v == challenger_v:
        decision, reason = "unchanged", f"version {challenger_v} is already champion"
    elif champion_v is None:
        decision, reason = "promoted", "no champion yet"
    else:
        try:
            champ_score = score_on_holdout(load_model_version(name, version=champion_v), holdout, metric)
        except IncomparableModels as exc:
            # Without a score on the same rows the gate cannot say the challenger is better: only a
            # person may decide, and the audit log records that they did.
            if not force:
                raise
            champ_score = None
            log.warning("%s", exc)
        if champ_score is None:
            decision = "promoted"
            reason = (f"forced by {_who()}: champion v{champion_v} cannot be scored on the challenger's "
                      "holdout (other features)")
        elif chal_score >= champ_score + margin:
            decision = "promoted"
            reason = f"challenger beats champion by {chal_score - champ_score:+.4f} (margin {margin})"
        elif force:
            decision = "promoted"
            reason = f"forced by {_who()} although challenger trails by {chal_score - champ_score:+.4f}"
        else:
            decision = "rejected"
            reason = f"challenger {chal_score:.4f} does not beat champion {champ_score:.4f} by margin {margin}"
    result = Decision(name, "promote", decision, challenger_v, champion_v, chal_score, champ_score, metric,
                      margin, where, reason, _who(), _now())
    if decision == "promoted":
        client.set_registered_model_alias(name, CHAMPION, challenger_v)
        stack = _champion_stack(client, name)
        client.set_registered_model_tag(name, CHAMPION_STACK_TAG, json.dumps([*stack, challenger_v]))
    _append_audit(client, result)
    log.info("%s: %s (%s)", name, decision, reason)
    return result


def rollback(name: str) -> Decision:
    """Give ``champion`` back to the version that held it before the current one."""
    from training.tracking import client as mlflow_client

    client = mlflow_client()
    current = _version_for_alias(client, name, CHAMPION)
    stack = _champion_stack(client, name)
    # Drop versions from the top of the stack until the one below the current champion.
    while stack and stack[-1] != current:
        stack.pop()
    if current is None or len(stack) < 2:
        raise PropensityError(f"model {name!r} has no previous champion to roll back to")
    stack.pop()
    previous = stack[-1]
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, CHAMPION_STACK_TAG, json.dumps(stack))
    # In a rollback the "challenger" is the version that gets the alias back.
    result = Decision(name, "rollback", "rolled_back", previous, current, None, None, "", 0.0, "",
                      f"champion v{current} -> v{previous}", _who(), _now())
    _append_audit(client, result)
    log.info("%s: champion rolled back from v%s to v%s", name, current, previous)
    return result


def _champion_stack(client, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    return list(json.loads(tags.get(CHAMPION_STACK_TAG, "[]")))


def _append_audit(client, decision: Decision) -> None:
    # One tag per entry, keyed by time then a random suffix: concurrent writers never overwrite each other.
    key = f"{AUDIT_PREFIX}{decision.when.replace(':', '').replace('+0000', 'Z')}.{uuid.uuid4().hex[:6]}"
    client.set_registered_model_tag(decision.model, key, json.dumps(asdict(decision)))


def history(name: str) -> list[dict]:
    """Audit entries of ``name``, oldest first."""
    import mlflow

    from training.tracking import client as mlflow_client

    try:
        tags = mlflow_client().get_registered_model(name).tags
    except mlflow.exceptions.MlflowException as exc:
        raise PropensityError(f"no registered model {name!r}") from exc
    entries = [json.loads(v) for k, v in tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(entries, key=lambda e: (e["when"], e.get("action", "")))
