"""Load a registered model by alias, and register a trained booster with the tags serving relies on.

The contract (docs/internals.md, "Models"): one registered model per spec in configs/models/; aliases
``challenger`` and ``champion``; each version carries the tags ``feature_service``, ``calibration``
(JSON ``{"method": "platt", "a": .., "b": ..}``: probability = sigmoid(a * raw_score + b); or
``{"method": "isotonic", "a", "b", "x": [..], "p": [..]}``, see ``Calibration``) and
``holdout_auc``. Models are always loaded through the registry (``models:/<name>/<version>`` of the
version the alias points to), never from a run's file path.

Imports stay light (mlflow, lightgbm, numpy, pandas): serving imports this module on start-up.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from core.errors import PropensityError

CHALLENGER = "challenger"
CHAMPION = "champion"

TAG_FEATURE_SERVICE = "feature_service"
TAG_CALIBRATION = "calibration"
TAG_HOLDOUT_AUC = "holdout_auc"
TAG_TASK = "task"  # binary (probability) or regression (amount); absent on old versions: binary
TAG_HOLDOUT_METRIC = "holdout_metric"  # the spec's promotion metric ...
TAG_HOLDOUT_SCORE = "holdout_score"  # ... and its value on the test split
TAG_BANDS = "band_thresholds"  # JSON {"high": .., "medium": ..}: the cuts the spec's bands resolved to
TAG_FEATURE_RANGES = "feature_ranges"  # JSON {feature: [min, max]} over the training rows
TAG_BOOST_FROM = "boost_from"  # JSON {"feature": .., "fill": ..}: the spec's boost_from (BoostFrom)
TAG_NEVER = "never_as"  # JSON {feature: value}: what a missing ("never") value is read as (tuning.never_as_oldest)


@dataclass(frozen=True)
class Calibration:
    """LightGBM's raw score -> probability. ``platt``: p = sigmoid(a * raw + b). ``isotonic``: linear
    interpolation through the knots (``x`` raw scores, ``p`` probabilities, both strictly increasing:
    isotonic regression's block means at the blocks' mean raw scores, so no step is flat), continued
    beyond the end knots in logit space with the Platt slope ``a``, so every raw score keeps its rank."""

    a: float = 1.0
    b: float = 0.0
    method: str = "platt"
    x: tuple[float, ...] = ()
    p: tuple[float, ...] = ()

    def to_json(self) -> str:
        data = {"method": self.method, "a": self.a, "b": self.b}
        if self.method == "isotonic":
            data.update(x=list(self.x), p=list(self.p))
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | None) -> Calibration:
        if not text:
            return cls()  # an uncalibrated model: identity on the raw score is LightGBM's own sigmoid
        data = json.loads(text)
        method = data.get("method", "platt")
        if method == "platt":
            return cls(a=float(data["a"]), b=float(data["b"]))
        if method == "isotonic":
            return cls(a=float(data["a"]), b=float(data["b"]), method=method,
                       x=tuple(float(v) for v in data["x"]), p=tuple(float(v) for v in data["p"]))
        raise PropensityError(f"calibration tag: unsupported method {method!r} (expected 'platt' or 'isotonic')")

    def apply(self, raw_score: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw_score, dtype=np.float64)
        if self.method != "isotonic":
            return 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))
        x, p = np.asarray(self.x), np.asarray(self.p)
        slope = max(self.a, 0.0)  # a negative Platt slope would turn the tails around

        def tail(x0: float, p0: float) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(np.log(p0 / (1.0 - p0)) + slope * (raw - x0))))

        with np.errstate(over="ignore"):
            return np.where(raw < x[0], tail(x[0], p[0]),
                            np.where(raw > x[-1], tail(x[-1], p[-1]), np.interp(raw, x, p)))


@dataclass(frozen=True)
class BoostFrom:
    """A model whose trees start from a feature that already predicts the label (the spec's
    ``boost_from``) instead of a constant: raw score = link(feature) + trees. A binary model starts from a
    probability's log-odds (e.g. BG/NBD's P(no order)); a regression (log link: Tweedie) from the log of an
    amount (e.g. BG/NBD x Gamma-Gamma's expected spend), plus ``shift``, the log of the train rows' ratio of
    label to feature: the feature may count over another horizon than the label. ``fill`` is the start
    where the feature is missing: the train rows' mean, so a missing value moves nothing."""

    feature: str
    fill: float
    link: str = "logit"  # or "log"
    shift: float = 0.0

    EPS = 1e-6  # probabilities of exactly 0 or 1 (a fit that is sure), amounts of 0: stay finite

    @classmethod
    def fit(cls, feature: str, values: np.ndarray, link: str = "logit", y: np.ndarray | None = None) -> BoostFrom:
        values = np.asarray(values, dtype=np.float64)
        shift = 0.0
        if link == "log":
            known = np.isfinite(values)
            total = float(np.maximum(values[known], 0.0).sum())
            labels = float(np.asarray(y, dtype=np.float64)[known].sum()) if y is not None else total
            shift = float(np.log(labels / total)) if total > 0 and labels > 0 else 0.0
        elif link != "logit":
            raise ValueError(f"boost_from link {link!r}: expected 'logit' or 'log'")
        starts = cls(feature, 0.0, link, shift)._link(values)
        known = starts[np.isfinite(starts)]
        return cls(feature, float(known.mean()) if len(known) else 0.0, link, shift)

    def _link(self, v: np.ndarray) -> np.ndarray:
        if self.link == "log":
            return np.log(np.maximum(v, self.EPS)) + self.shift
        p = np.clip(v, self.EPS, 1.0 - self.EPS)
        return np.log(p) - np.log1p(-p)

    def offset(self, X: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """Per row of the model's input matrix ``X``: the raw score the trees start from."""
        starts = self._link(X[:, feature_names.index(self.feature)])
        return np.where(np.isfinite(starts), starts, self.fill)

    def to_json(self) -> str:
        return json.dumps({"feature": self.feature, "fill": self.fill, "link": self.link, "shift": self.shift})

    @classmethod
    def from_json(cls, text: str | None) -> BoostFrom | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(str(data["feature"]), float(data["fill"]), str(data.get("link", "logit")),
                   float(data.get("shift", 0.0)))


@dataclass
class LoadedModel:
    """A registered model version ready to score: booster, its inputs, its calibration."""

    name: str
    version: str
    booster: Any  # lightgbm.Booster
    feature_names: list[str]
    feature_service: str
    calibration: Calibration
    holdout_auc: float | None = None
    alias: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.tags.get(TAG_TASK, "binary")

    @cached_property
    def boost_from(self) -> BoostFrom | None:
        """The probability feature the trees start from (TAG_BOOST_FROM), or None; read once per model
        (every /predict call scores through it)."""
        return BoostFrom.from_json(self.tags.get(TAG_BOOST_FROM))

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """What the model says per row: a calibrated probability (binary) or an amount (regression)."""
        if self.task == "binary":
            return self.predict_proba(X)
        return np.exp(self.raw_score(X))  # the log link (Tweedie), with where the trees start from

    def from_contributions(self, contributions: np.ndarray) -> np.ndarray:
        """The prediction from its SHAP contributions (their row sum is the raw score, exactly): one
        ``pred_contrib`` call gives both the reasons and the number. Regression models here use a log
        link (Tweedie), so the amount is exp(raw)."""
        raw = contributions.sum(axis=1)
        return self.calibration.apply(raw) if self.task == "binary" else np.exp(raw)

    @property
    def band_thresholds(self) -> dict[str, float] | None:
        """The band cuts fixed at training (``TAG_BANDS``); None for a version registered without them."""
        text = self.tags.get(TAG_BANDS)
        return json.loads(text) if text else None

    def bands(self, spec_bands: Any) -> dict[str, float]:
        """The band cuts to use: those fixed at training, else the spec's fixed cuts. A spec that asks for
        shares of the distribution cannot be applied to a version trained before it did."""
        if self.band_thresholds is not None:
            return self.band_thresholds
        if hasattr(spec_bands, "high"):
            return {"high": spec_bands.high, "medium": spec_bands.medium}
        raise PropensityError(
            f"model {self.name} v{self.version} has no '{TAG_BANDS}' tag and its spec's bands are shares of the "
            f"score distribution: retrain it (`propensity train {self.name}`)"
        )

    @property
    def feature_ranges(self) -> dict[str, list[float]]:
        """{feature: [min, max]} seen in training; empty for a version registered without them."""
        text = self.tags.get(TAG_FEATURE_RANGES)
        return json.loads(text) if text else {}

    @cached_property
    def never_fill(self) -> list[tuple[int, float]]:
        """(column, value) pairs: where a missing value means "never" and is read as ``value`` (TAG_NEVER)."""
        text = self.tags.get(TAG_NEVER)
        fills = json.loads(text) if text else {}
        return [(self.feature_names.index(name), float(v)) for name, v in fills.items()]

    def matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The model's input matrix: the feature columns in training order, float64 (missing -> NaN, except
        where the version reads "never" as a value: ``never_fill``)."""
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise PropensityError(
                    f"model {self.name} v{self.version}: input lacks feature column(s) {', '.join(missing)}"
                )
            X = X[self.feature_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        else:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != len(self.feature_names):
                raise PropensityError(
                    f"model {self.name} v{self.version}: expected {len(self.feature_names)} feature columns, "
                    f"got array of shape {X.shape}"
                )
            if self.never_fill:
                X = X.copy()  # the caller's array stays as it was
        for col, value in self.never_fill:
            X[np.isnan(X[:, col]), col] = value
        return X

    def raw_score(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        X = self.matrix(X)
        raw = self.booster.predict(X, raw_score=True)
        start = self.boost_from
        return raw if start is None else raw + start.offset(X, self.feature_names)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated probability of the positive class, one per row."""
        return self.calibration.apply(self.raw_score(X))

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Exact TreeSHAP values in raw-score space, shape (rows, features + 1); last column = base value.
        With ``boost_from`` the start (log-odds, or log amount) belongs to that feature: its deviation from the fill goes
        to the feature's column, the fill to the base value, so every row still sums to its raw score."""
        X = self.matrix(X)
        contrib = self.booster.predict(X, pred_contrib=True)
        start = self.boost_from
        if start is not None:
            contrib[:, self.feature_names.index(start.feature)] += start.offset(X, self.feature_names) - start.fill
            contrib[:, -1] += start.fill
        return contrib


def load_model_version(name: str, alias: str = CHAMPION, version: str | int | None = None) -> LoadedModel:
    """Load registered model ``name`` at ``alias`` (or an explicit ``version``) from the project's registry."""
    import mlflow
    import mlflow.lightgbm

    from training.tracking import client as mlflow_client

    client = mlflow_client()
    try:
        if version is not None:
            mv = client.get_model_version(name, str(version))
            alias = None
        else:
            mv = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        where = f"version {version}" if version is not None else f"alias '{alias}'"
        raise PropensityError(
            f"no registered model '{name}' with {where} in {mlflow.get_tracking_uri()}; "
            f"train it with `propensity train {name}`"
            + (" and promote it with `propensity promote " + name + "`" if alias == CHAMPION else "")
        ) from exc
    # Load the version the alias resolved to, so the tags and the booster always belong together even
    # if the alias moves while we load.
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{mv.version}")
    tags = dict(mv.tags)
    feature_service = tags.get(TAG_FEATURE_SERVICE)
    if not feature_service:
        raise PropensityError(f"model {name} v{mv.version} has no '{TAG_FEATURE_SERVICE}' tag")
    holdout = tags.get(TAG_HOLDOUT_AUC)
    return LoadedModel(
        name=name,
        version=str(mv.version),
        booster=booster,
        feature_names=list(booster.feature_name()),
        feature_service=feature_service,
        calibration=Calibration.from_json(tags.get(TAG_CALIBRATION)),
        holdout_auc=float(holdout) if holdout not in (None, "") else None,
        alias=alias,
        run_id=mv.run_id,
        tags=tags,
    )


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model; passing them skips MLflow's ~5 s requirement inference."""
    import lightgbm

    return [f"lightgbm=={lightgbm.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"]


def register_booster(
    booster: Any,
    name: str,
    *,
    feature_service: str,
    calibration: Calibration | None = None,
    holdout_auc: float | None = None,
    input_example: pd.DataFrame | None = None,
    alias: str | None = CHALLENGER,
    extra_tags: dict[str, str] | None = None,
    bands: dict[str, float] | None = None,
) -> str:
    """Log ``booster`` as ``model`` in the active MLflow run (or a new one), register it as ``name``,
    tag it per the contract and point ``alias`` at it. Returns the new version number.

    The input example must hold model features only (never customer ids). Without one, a one-row
    example of NaNs is logged so the signature still names every column as float64 (nullable).
    """
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    from training.tracking import ensure_experiment

    feature_names = list(booster.feature_name())
    if input_example is None:
        input_example = pd.DataFrame([[math.nan] * len(feature_names)], columns=feature_names)
    input_example = input_example[feature_names].astype("float64")
    signature = infer_signature(input_example, booster.predict(input_example.to_numpy()))

    experiment_id = ensure_experiment(name)
    client = mlflow.MlflowClient()
    own_run = mlflow.active_run() is None
    if own_run:
        mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}")
    try:
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
        )
        tags = {TAG_FEATURE_SERVICE: feature_service, TAG_CALIBRATION: (calibration or Calibration()).to_json()}
        if holdout_auc is not None:
            tags[TAG_HOLDOUT_AUC] = f"{holdout_auc:.6f}"
        if bands is not None:
            tags[TAG_BANDS] = json.dumps({"high": float(bands["high"]), "medium": float(bands["medium"])})
        tags.update(extra_tags or {})
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)
    finally:
        if own_run:
            mlflow.end_run()
