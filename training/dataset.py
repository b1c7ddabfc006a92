"""Training-set assembly: labelled (customer, cutoff) rows -> point-in-time features from Feast -> the
model's float64 columns, validated with pandera at the boundary.

Features come through a ``FeatureSource``. The default one is the Feast feature service
(``features.retrieval``), so training and serving read the same feature definitions; tests can hand in
another source that returns the same column names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pandas as pd

from core.errors import DataError
from training.labels import SPLITS, TEST, TRAIN, VALIDATION, SplitPlan

log = logging.getLogger("propensity.training")

ENTITY_COLUMNS = ["customer_id", "event_timestamp"]


class FeatureSource(Protocol):
    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        """Point-in-time features for each (customer_id, event_timestamp) row, one row out per row in."""

    def feature_names(self, service: str) -> list[str]:
        """The numeric model inputs of ``service``, in order."""


class FeastFeatureSource:
    """The project's Feast feature services (features.retrieval)."""

    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        from features.retrieval import historical_features

        return historical_features(entity_df, service)

    def feature_names(self, service: str) -> list[str]:
        from features.retrieval import model_feature_names

        return list(model_feature_names(service))


class ExactFeatureSource:
    """Features exactly at each row's date: Feast on built snapshot dates, a scratch one-date build for
    the others (``features.exact``). A backtest's training cutoffs reach further back than the feature
    store's history may (without this those rows would train with no feature values at all); evaluate's
    ground truth sits on Mondays; the cause ranking's daily past falls between snapshots."""

    def historical(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        from features.exact import exact_historical_features

        return exact_historical_features(entity_df, service)

    def feature_names(self, service: str) -> list[str]:
        from features.retrieval import model_feature_names

        return list(model_feature_names(service))


@dataclass
class TrainingSet:
    """Every labelled row with its features: customer_id, event_timestamp, label, split, <features>."""

    feature_service: str
    feature_names: list[str]
    frame: pd.DataFrame
    plan: SplitPlan | None = None
    # feature -> the value a missing ("never") one is read as by the model (tuning.never_as_oldest); the
    # frame itself keeps the missing values.
    never_fill: dict[str, float] = field(default_factory=dict)

    def part(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split]

    def X(self, split: str) -> pd.DataFrame:
        """Model inputs only (never customer ids), float64 so missing values stay allowed (but for the
        features of ``never_fill``)."""
        X = self.part(split)[self.feature_names].reset_index(drop=True)
        return X.fillna(self.never_fill) if self.never_fill else X

    def with_never_fill(self, features: list[str]) -> TrainingSet:
        """A copy whose model inputs read a missing value of ``features`` as one day past their largest
        value on the train split (0 when the train split has none)."""
        train = self.part(TRAIN)
        fill = {}
        for name in features:
            top = train[name].max()
            fill[name] = float(np.floor(top) + 1.0) if pd.notna(top) else 0.0
        return replace(self, never_fill=fill)

    def y(self, split: str) -> np.ndarray:
        """Labels: 0/1 as int64, amounts (a regression label) as float64."""
        label = self.part(split)["label"]
        return label.to_numpy(dtype=np.float64 if label.dtype.kind == "f" else np.int64)

    def fingerprint(self) -> str:
        """sha256 of the rows, labels and features: equal data gives an equal hash (lineage, study names)."""
        cols = [*ENTITY_COLUMNS, "label", "split", *self.feature_names]
        # Rounded: parallel float sums (e.g. spend) differ in the last bits from one retrieval to the next.
        frame = self.frame[cols].round({name: 6 for name in self.feature_names})
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        digest = hashlib.sha256(hashed.tobytes())
        digest.update(json.dumps(cols).encode())
        return digest.hexdigest()

    def lineage(self) -> dict:
        out: dict = {"feature_service": self.feature_service, "training_set_sha256": self.fingerprint(),
                     "n_features": len(self.feature_names)}
        for split in SPLITS:
            part = self.part(split)
            out[f"{split}_rows"] = len(part)
            out[f"{split}_label_rate"] = round(float(part["label"].mean()), 6) if len(part) else None
            out[f"{split}_cutoffs"] = sorted(part["event_timestamp"].dt.strftime("%Y-%m-%d").unique().tolist())
        if self.plan is not None:
            out["data_end_exclusive"] = self.plan.data_end.strftime("%Y-%m-%d")
        return out


def training_set_schema(feature_names: list[str], amount_label: bool = False):
    """pandera schema of the assembled training set."""
    import pandera.pandas as pa

    feature_checks = [pa.Check(lambda s: ~np.isinf(s), element_wise=False, error="infinite value")]
    columns = {
        "customer_id": pa.Column(str, nullable=False),
        "event_timestamp": pa.Column("datetime64[us, UTC]", nullable=False),
        # A 0/1 outcome, or an amount (future spend) that is never negative.
        "label": (pa.Column("float64", pa.Check.ge(0), nullable=False) if amount_label
                  else pa.Column("int64", pa.Check.isin([0, 1]), nullable=False)),
        "split": pa.Column(str, pa.Check.isin(list(SPLITS)), nullable=False),
    }
    for name in feature_names:
        columns[name] = pa.Column("float64", checks=feature_checks, nullable=True)
    return pa.DataFrameSchema(columns, unique=ENTITY_COLUMNS, strict=True, ordered=False)


def to_float_features(df: pd.DataFrame, feature_names: list[str], where: str) -> pd.DataFrame:
    """The feature columns as float64 (nulls -> NaN); DataError naming columns that are absent or not numeric."""
    missing = [c for c in feature_names if c not in df.columns]
    if missing:
        raise DataError(f"{where}: feature column(s) missing: {', '.join(missing)}")
    out = pd.DataFrame(index=df.index)
    for name in feature_names:
        col = df[name]
        if col.dtype == object:
            converted = pd.to_numeric(col, errors="coerce")
            bad = col.notna() & converted.isna()
            if bad.any():
                raise DataError(f"{where}: column {name!r} is not numeric (e.g. {col[bad].iloc[0]!r})")
            col = converted
        out[name] = col.astype("float64")
    return out


def assemble_training_set(
    rows: pd.DataFrame,
    feature_service: str,
    source: FeatureSource | None = None,
    plan: SplitPlan | None = None,
) -> TrainingSet:
    """Fetch point-in-time features for the labelled rows and return the validated training set."""
    source = source or FeastFeatureSource()
    names = source.feature_names(feature_service)
    if not names:
        raise DataError(f"feature service {feature_service!r} has no numeric model features")
    entity = rows[ENTITY_COLUMNS].reset_index(drop=True)
    features = source.historical(entity, feature_service).reset_index(drop=True)
    if len(features) != len(entity):
        raise DataError(
            f"feature service {feature_service!r} returned {len(features)} rows for {len(entity)} entity rows"
        )
    if "customer_id" in features.columns and not (features["customer_id"].astype(str).to_numpy()
                                                  == entity["customer_id"].to_numpy()).all():
        raise DataError(f"feature service {feature_service!r} did not keep the entity rows' order")
    frame = pd.concat(
        [rows[[*ENTITY_COLUMNS, "label", "split"]].reset_index(drop=True),
         to_float_features(features, names, f"feature service {feature_service!r}")],
        axis=1,
    )
    unknown = frame[names].isna().all(axis=1)
    if unknown.any():
        # The feature store knows nothing about these rows (e.g. a customer's first feature row is later
        # than the cutoff); keeping them teaches the model what an all-missing row means.
        log.warning("%d of %d training rows have no feature values at all", int(unknown.sum()), len(frame))
    import pandera.errors

    try:
        frame = training_set_schema(names, frame["label"].dtype.kind == "f").validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases[["column", "check", "failure_case"]].head(5).to_dict("records")
        raise DataError(f"training set for {feature_service!r} fails validation: {cases}") from exc
    for split in (TRAIN, VALIDATION, TEST):
        if not (frame["split"] == split).any():
            raise DataError(f"training set for {feature_service!r} has no {split} rows")
    return TrainingSet(feature_service, names, frame, plan)
