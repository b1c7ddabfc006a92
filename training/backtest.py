"""``propensity backtest --as-of D``: how well would each model have done had it been trained at D?

For each model the data supports:

1. train it on the history before D only: the spec's ``cutoffs.data_end`` becomes the day before D, so
   the split is planned on the shortened history and no training label looks at an event on or after D
   (features are point-in-time snapshots, which never look forward anyway). The model is trained with
   ``register=False``: its MLflow run (metrics, plots, lineage) stays, the registry's challenger and
   champion aliases are never touched;
2. label the model's own population at cutoff D (``training.labels.build_labels``, split "test") from
   what happened on and after D, with features exact at D (``features.exact``);
3. score it and, on the same customers, the spec's one-feature baseline, the RFM score and a BG/NBD model
   (``training.btyd``) fitted on the orders before D, plus the generator's oracle when there is ground
   truth: ROC AUC and PR AUC with percentile-bootstrap 95% intervals (customers resampled, one fixed set of
   resamples shared by every scorer, so the model-minus-baseline differences are paired), lift and capture
   in the top 10% and 20%, and the model's calibration by decile.

A regression model (the value model: spend over the label's horizon) is measured by normalised Gini
and top-10% spend capture (same bootstrap, paired differences) against the spend over the same length
before D, the spec's baseline feature, RFM, and BG/NBD x Gamma-Gamma fitted on the orders before D. When
the run holds both the stakes' risk model (churn) and the value model, the report adds the value-at-risk
check: ranked by P(churn) x value, how much of the revenue actually lost (the last year's spend of the
customers who then churn) the top 10% hold, against the top 10% by P(churn) alone.

Output: ``data/reports/backtest-<D>/`` (report.json, index.html, PNGs; no customer ids) and one run in
the MLflow experiment ``backtest`` holding the headline metrics and that folder.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DataError, NotEnoughDataError, PropensityError
from core.events import EventStore
from core.settings import project_paths
from core.specs import ModelSpec
from training.dataset import ExactFeatureSource

log = logging.getLogger("propensity.training")

EXPERIMENT = "backtest"
TOP_FRACTIONS = (0.1, 0.2)
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# Rows per block of bootstrap resamples: a (block x customers) float matrix stays a few tens of MB.
_BLOCK = 100

MODEL = "model"
BASELINE = "baseline"
RFM = "rfm"
BGNBD_EXPECTED = "bgnbd_expected"
BGNBD_ALIVE = "bgnbd_p_alive"
BGNBD_ANY = "bgnbd_p_order"  # P(at least one purchase in the horizon): BG/NBD's own answer to the label
ORACLE = "oracle"
PAST_SPEND = "past_spend"
BTYD_SPEND = "bgnbd_gamma_gamma"
# Scorers of a regression model that are amounts over the label's horizon (their MAE means something).
AMOUNT_SCORERS = (MODEL, PAST_SPEND, BTYD_SPEND, ORACLE)
# "Revenue lost" in the value-at-risk check: the spend of the year before D of a customer who then churns.
LOST_SPEND_DAYS = 365


# ---- metrics over bootstrap resamples ---------------------------------------------------------------
def resample_counts(n: int, resamples: int, seed: int):
    """Blocks of bootstrap weights: how often each of ``n`` customers is drawn in each resample, shape
    (block, n). The same ``seed`` gives the same resamples, so every scorer sees the same ones."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        rows = min(_BLOCK, resamples - done)
        draws = rng.integers(0, n, size=(rows, n))
        # Per-row bincount in one call: offset each row's draws into its own range.
        flat = (draws + (np.arange(rows) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        done += rows


def _grouped(y: np.ndarray, score: np.ndarray, weights: np.ndarray, descending: bool):
    """Positive and negative weight per distinct score value (ties form one group), sorted by score."""
    order = np.argsort(-score if descending else score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y[order]), starts, axis=1)
    return pos, neg


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``score`` under each row of ``weights`` (shape (k, n)): the weighted Mann-Whitney
    statistic, ties counting one half; equals sklearn's roc_auc_score with those sample weights."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = _grouped(y, score, np.atleast_2d(weights), descending=False)
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / total, np.nan)


def weighted_average_precision(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """PR AUC as average precision (sum over thresholds of recall gained x precision) under each row of
    ``weights``; equals sklearn's average_precision_score with those sample weights."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = _grouped(y, score, np.atleast_2d(weights), descending=True)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        total = pos.sum(axis=1)
        return np.where(total > 0, (pos * precision).sum(axis=1) / total, np.nan)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def bootstrap(y: np.ndarray, scores: dict[str, np.ndarray], resamples: int = DEFAULT_RESAMPLES,
              seed: int = DEFAULT_SEED, reference: str = MODEL, progress: bool = False) -> dict[str, dict]:
    """Point estimates and percentile-bootstrap 95% intervals of ROC AUC and PR AUC for every scorer,
    and of (reference AUC - scorer AUC) for every other scorer, all on one shared set of resamples."""
    y = np.asarray(y, dtype=np.float64)
    ones = np.ones((1, len(y)))
    auc_draws = {name: [] for name in scores}
    ap_draws = {name: [] for name in scores}
    with _bar(progress, "bootstrap", resamples) as advance:
        for weights in resample_counts(len(y), resamples, seed):
            for name, s in scores.items():
                auc_draws[name].append(weighted_auc(y, s, weights))
                ap_draws[name].append(weighted_average_precision(y, s, weights))
            advance(len(weights))
    out = {}
    ref_auc = np.concatenate(auc_draws[reference]) if reference in scores else None
    for name, s in scores.items():
        aucs, aps = np.concatenate(auc_draws[name]), np.concatenate(ap_draws[name])
        entry = {
            "roc_auc": float(weighted_auc(y, s, ones)[0]), "roc_auc_ci": percentile_interval(aucs),
            "pr_auc": float(weighted_average_precision(y, s, ones)[0]), "pr_auc_ci": percentile_interval(aps),
        }
        if ref_auc is not None and name != reference:
            entry["auc_diff"] = float(weighted_auc(y, scores[reference], ones)[0]) - entry["roc_auc"]
            entry["auc_diff_ci"] = percentile_interval(ref_auc - aucs)
        out[name] = entry
    return out


def _lorenz(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight and amount per distinct score value (ties form one group), highest score first, per row of
    ``weights``: the steps of the cumulative-share curve."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    return np.add.reduceat(w, starts, axis=1), np.add.reduceat(w * y[order], starts, axis=1)


def _gini_of(W: np.ndarray, V: np.ndarray) -> np.ndarray:
    # A tie group of weight W holding V, after C of the total: its positions hold C + k V / (W Y) on
    # average over the orders within the tie (k = 1..W), so ties count as a random order, not input order.
    N, Y = W.sum(axis=1), V.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = V / Y[:, None]
        before = np.cumsum(share, axis=1) - share
        total = (W * before + share * (W + 1.0) / 2.0).sum(axis=1)
        return np.where(Y > 0, total / N - (N + 1.0) / (2.0 * N), np.nan)


def weighted_normalized_gini(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Normalised Gini of amounts ``y`` ranked by ``score`` under each row of ``weights`` (shape (k, n)):
    the Gini of the ranking over the Gini of the perfect ranking (by ``y``). Without ties and with unit
    weights it equals ``training.metrics.normalized_gini``; tied scores count as a random order."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    weights = np.atleast_2d(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _gini_of(*_lorenz(y, score, weights)) / _gini_of(*_lorenz(y, y, weights))


def weighted_top_capture(y: np.ndarray, score: np.ndarray, weights: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Share of the total ``y`` held by the top ``fraction`` of (weighted) rows by ``score``, per row of
    ``weights``; a tie across the cut contributes pro rata. Equals ``training.metrics.top_capture``
    without ties and with unit weights."""
    y = np.asarray(y, dtype=np.float64)
    W, V = _lorenz(y, np.asarray(score, dtype=np.float64), np.atleast_2d(weights))
    out = np.empty(len(W))
    for i, (w, v) in enumerate(zip(W, V, strict=True)):
        n, total = w.sum(), v.sum()
        k = max(1.0, float(np.round(n * fraction)))
        out[i] = np.interp(k, np.r_[0.0, np.cumsum(w)], np.r_[0.0, np.cumsum(v)]) / total if total > 0 else np.nan
    return out


def bootstrap_amounts(y: np.ndarray, scores: dict[str, np.ndarray], resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, reference: str = MODEL, fraction: float = TOP_FRACTIONS[0],
                      progress: bool = False) -> dict[str, dict]:
    """Normalised Gini and top-``fraction`` capture of amounts ``y`` for every scorer with percentile
    95% intervals, and (reference - scorer) for both with paired intervals, on one set of resamples."""
    y = np.asarray(y, dtype=np.float64)
    pct = int(round(fraction * 100))
    ones = np.ones((1, len(y)))
    draws = {name: {"gini": [], "capture": []} for name in scores}
    with _bar(progress, "bootstrap", resamples) as advance:
        for weights in resample_counts(len(y), resamples, seed):
            for name, s in scores.items():
                draws[name]["gini"].append(weighted_normalized_gini(y, s, weights))
                draws[name]["capture"].append(weighted_top_capture(y, s, weights, fraction))
            advance(len(weights))
    draws = {n: {k: np.concatenate(v) for k, v in d.items()} for n, d in draws.items()}
    point = {n: {"gini": float(weighted_normalized_gini(y, s, ones)[0]),
                 "capture": float(weighted_top_capture(y, s, ones, fraction)[0])} for n, s in scores.items()}
    out = {}
    for name in scores:
        entry = {"normalized_gini": point[name]["gini"], "normalized_gini_ci": percentile_interval(draws[name]["gini"]),
                 f"capture_top{pct}": point[name]["capture"],
                 f"capture_top{pct}_ci": percentile_interval(draws[name]["capture"])}
        if reference in scores and name != reference:
            for key, metric in (("gini", "normalized_gini"), ("capture", f"capture_top{pct}")):
                entry[f"{metric}_diff"] = point[reference][key] - point[name][key]
                entry[f"{metric}_diff_ci"] = percentile_interval(draws[reference][key] - draws[name][key])
        out[name] = entry
    return out


def top_stats(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Lift and capture (share of all positives) in the top 10% and 20% by score."""
    from training.metrics import top_fraction_stats

    out = {}
    for fraction in TOP_FRACTIONS:
        lift, capture = top_fraction_stats(y, score, fraction)
        pct = int(round(fraction * 100))
        out[f"lift_top{pct}"], out[f"capture_top{pct}"] = lift, capture
    return out


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-count bins of the predicted probability (deciles by default): mean predicted vs observed."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    ranks = np.argsort(np.argsort(p, kind="stable"), kind="stable")
    idx = ranks * bins // len(p)
    table = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            table.append({"bin": b + 1, "rows": int(mask.sum()), "mean_predicted": float(p[mask].mean()),
                          "observed_rate": float(y[mask].mean()), "min_predicted": float(p[mask].min()),
                          "max_predicted": float(p[mask].max())})
    return table


def plateau_stats(prediction: np.ndarray, inputs: pd.DataFrame) -> dict:
    """How many customers share one prediction although their inputs differ (issue 11: "no plateau
    holding more than 5% of customers except where the inputs are identical").

    Per distinct prediction: its customers, and among them the largest group with identical inputs
    (missing values compare equal). ``largest_share`` is the biggest group of one prediction;
    ``largest_share_differing_inputs`` counts, per prediction, its customers minus that identical
    group plus one of them (the customers who share it without sharing its inputs), at its largest."""
    pred = np.asarray(prediction, dtype=np.float64)
    n = len(pred)
    frame = pd.DataFrame({"p": pred, "inputs": pd.util.hash_pandas_object(inputs.reset_index(drop=True), index=False)
                          .to_numpy()})
    per_p = frame.groupby("p").size()
    same = frame.groupby(["p", "inputs"]).size().groupby(level="p").max()
    differing = per_p - same + 1
    top = per_p.sort_values(ascending=False)
    return {"rows": int(n), "distinct_predictions": int(len(per_p)),
            "distinct_inputs": int(frame["inputs"].nunique()),
            "largest_share": float(top.iloc[0] / n) if n else float("nan"),
            "largest_share_differing_inputs": float(differing.max() / n) if n else float("nan"),
            "top10_predictions_share": float(top.iloc[:10].sum() / n) if n else float("nan")}


class _bar:
    """A rich progress bar (or nothing): ``with _bar(on, label, total) as advance: advance(k)``."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total, self.bar = enabled, label, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda k: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn(f"[bold]{self.label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), transient=True)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda k: self.bar.update(task, advance=k)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---- the BG/NBD baseline ----------------------------------------------------------------------------
def _connect():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def _utc(day: date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize("UTC")


def rfm_summary(store: EventStore, as_of: date) -> pd.DataFrame:
    """Per customer with an order before ``as_of``: frequency (repeat purchase days), recency (days from
    the first to the last purchase day), T (days from the first purchase day to ``as_of``) and
    monetary_value (mean spend of the repeat purchase days, 0 without one: Gamma-Gamma's input, the first
    purchase left out as in Fader, Hardie and Lee). Orders are counted per UTC day, as BG/NBD's continuous
    time has no meaning for two orders an hour apart."""
    if not store.has("orders"):
        raise DataError(f"no orders in the event store {store.root}: run `propensity ingest` first")
    cutoff = _utc(as_of).isoformat()
    df = _connect().execute(f"""
        WITH days AS (
            SELECT CAST(customer_id AS VARCHAR) AS customer_id, date_trunc('day', ordered_at) AS day,
                   sum(amount) AS spend
            FROM read_parquet('{store.glob("orders")}') WHERE ordered_at < TIMESTAMPTZ '{cutoff}'
            GROUP BY ALL
        )
        SELECT customer_id, count(*) - 1 AS frequency, date_diff('day', min(day), max(day)) AS recency,
               date_diff('day', min(day), TIMESTAMPTZ '{cutoff}') AS "T",
               CASE WHEN count(*) > 1 THEN (sum(spend) - arg_min(spend, day)) / (count(*) - 1) ELSE 0 END
                   AS monetary_value
        FROM days GROUP BY customer_id ORDER BY customer_id
    """).df()
    return df.astype({"customer_id": str, "frequency": "float64", "recency": "float64", "T": "float64",
                      "monetary_value": "float64"})


def spend_before(store: EventStore, as_of: date, days: int, customer_ids: pd.Series) -> np.ndarray:
    """Each customer's order amounts summed over the ``days`` days before ``as_of`` (0 without an order)."""
    cutoff = _utc(as_of)
    since = cutoff - pd.Timedelta(days=days)
    df = _connect().execute(f"""
        SELECT CAST(customer_id AS VARCHAR) AS customer_id, sum(amount) AS spend
        FROM read_parquet('{store.glob("orders")}')
        WHERE ordered_at >= TIMESTAMPTZ '{since.isoformat()}' AND ordered_at < TIMESTAMPTZ '{cutoff.isoformat()}'
        GROUP BY 1
    """).df()
    rows = pd.DataFrame({"customer_id": customer_ids.astype(str).to_numpy()})
    return rows.merge(df, on="customer_id", how="left")["spend"].fillna(0.0).to_numpy(dtype=np.float64)


def btyd_spend_scores(store: EventStore, as_of: date, horizon_days: int, customer_ids: pd.Series):
    """BG/NBD x Gamma-Gamma fitted on every customer's orders before ``as_of``: for ``customer_ids`` the
    expected spend in the next ``horizon_days`` (expected purchases x expected value per purchase; NaN
    for a customer with no order before ``as_of``). Returns (BG/NBD, Gamma-Gamma, expected spend)."""
    from features import btyd

    summary = rfm_summary(store, as_of)
    bg = btyd.fit(summary["frequency"], summary["recency"], summary["T"])
    gg = btyd.fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    purchases = bg.expected_purchases(horizon_days, summary["frequency"], summary["recency"], summary["T"])
    summary["expected_spend"] = purchases * gg.expected_value(summary["frequency"], summary["monetary_value"])
    rows = pd.DataFrame({"customer_id": customer_ids.astype(str).to_numpy()})
    rows = rows.merge(summary[["customer_id", "expected_spend"]], on="customer_id", how="left")
    return bg, gg, rows["expected_spend"].to_numpy()


def bgnbd_scores(store: EventStore, as_of: date, horizon_days: int, customer_ids: pd.Series):
    """BG/NBD fitted on every customer's orders before ``as_of``; for ``customer_ids``: P(alive), expected
    purchases in the next ``horizon_days`` and P(at least one purchase in them) (NaN for a customer with no
    order before ``as_of``)."""
    from features import btyd

    summary = rfm_summary(store, as_of)
    model = btyd.fit(summary["frequency"], summary["recency"], summary["T"])
    summary["p_alive"] = model.p_alive(summary["frequency"], summary["recency"], summary["T"])
    summary["expected"] = model.expected_purchases(horizon_days, summary["frequency"], summary["recency"],
                                                   summary["T"])
    summary["any"] = 1.0 - model.p_no_purchase(horizon_days, summary["frequency"], summary["recency"], summary["T"])
    rows = pd.DataFrame({"customer_id": customer_ids.astype(str).to_numpy()})
    rows = rows.merge(summary[["customer_id", "p_alive", "expected", "any"]], on="customer_id", how="left")
    return model, rows["p_alive"].to_numpy(), rows["expected"].to_numpy(), rows["any"].to_numpy()


def _fill_low(values: np.ndarray) -> np.ndarray:
    """Missing BG/NBD values (no order before D: no purchase process to speak of) rank below every
    customer that has one, i.e. as the least likely to buy."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low = (finite.min() - 1.0) if len(finite) else 0.0
    return np.where(np.isfinite(values), values, low)


# ---- one model --------------------------------------------------------------------------------------


@dataclass
class ModelBacktest:
    """Everything the report says about one model (JSON-ready through ``as_dict``)."""

    model: str
    as_of: str
    rows: int
    positives: int
    label_rate: float
    population: str
    training: dict
    scorers: dict[str, dict]
    calibration: list[dict]
    bgnbd: dict
    oracle: dict
    seconds: dict[str, float] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    task: str = "binary"
    gamma_gamma: dict = field(default_factory=dict)  # regression: the spend-per-purchase fit
    plateau: dict = field(default_factory=dict)  # plateau_stats of the model's predictions at D
    # What the value-at-risk check needs from this run (rows, features, model); never in the report.
    scored: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "scored"}


def _labels_at(store: EventStore, spec: ModelSpec, as_of: date) -> pd.DataFrame:
    from training.labels import TEST, build_labels

    cutoffs = pd.DataFrame({"cutoff": pd.Series([_utc(as_of)]).astype("datetime64[us, UTC]"), "split": [TEST]})
    return build_labels(store, spec.labels, cutoffs)


def check_matured(store: EventStore, spec: ModelSpec, as_of: date) -> None:
    """A PropensityError unless the labels at ``as_of`` have matured and there is history before it."""
    from training.labels import data_end, event_span

    end = data_end(store, spec.cutoffs)
    horizon = pd.Timedelta(days=spec.labels.horizon_days)
    if _utc(as_of) + horizon > end:
        last_ok = (end - horizon).date()
        raise NotEnoughDataError(
            f"{spec.name}: labels at {as_of} need {spec.labels.horizon_days} days of events after it, and the "
            f"data ends {(end - pd.Timedelta(days=1)).date()}: pick --as-of {last_ok} or earlier")
    first, _ = event_span(store)
    if _utc(as_of) <= first:
        raise NotEnoughDataError(f"{spec.name}: no history before {as_of} (events start {first.date()})")


def history_spec(spec: ModelSpec, as_of: date) -> ModelSpec:
    """The spec with its data ending the day before ``as_of``: labels (and so the split) never look at
    an event on or after ``as_of``. Everything else is the spec's, so the backtest measures the training
    that `propensity train` runs."""
    cutoffs = spec.cutoffs.model_copy(update={"data_end": as_of - timedelta(days=1)})
    return spec.model_copy(update={"cutoffs": cutoffs})


def _oracle(spec: ModelSpec, as_of: date, rows: pd.DataFrame, ground_truth: pd.DataFrame | None):
    """The generator's true probabilities for ``rows`` from the latest ground-truth date on or before
    ``as_of`` (it is weekly), and a note of what was used; (None, note) without ground truth."""
    if spec.ground_truth is None:
        return None, {"available": False, "reason": f"{spec.config_file} names no ground_truth column"}
    gt = ground_truth
    if gt is None:
        from training.evaluate import read_ground_truth

        if not project_paths().ground_truth.is_file():
            return None, {"available": False, "reason": "no ground truth (not generated data)"}
        gt = read_ground_truth(columns=(spec.ground_truth.probability,))
    dates = sorted(t for t in gt["as_of"].unique() if pd.Timestamp(t) <= _utc(as_of))
    if not dates:
        return None, {"available": False, "reason": f"the ground truth has no date on or before {as_of}"}
    used = pd.Timestamp(dates[-1])
    truth = gt[gt["as_of"] == used][["customer_id", spec.ground_truth.probability]]
    p = rows[["customer_id"]].merge(truth, on="customer_id", how="left")[spec.ground_truth.probability]
    lag = (_utc(as_of) - used).days
    note = {"available": True, "column": spec.ground_truth.probability, "as_of": f"{used:%Y-%m-%d}",
            "days_before": lag, "coverage": float(p.notna().mean())}
    if lag:
        note["note"] = (f"the ground truth is weekly: its nearest date on or before {as_of} is {lag} day(s) "
                        f"earlier, so the oracle's probabilities are about a window starting then")
    return p.to_numpy(dtype=np.float64), note


def backtest_model(spec: ModelSpec, as_of: date, *, trials: int | None = None, timeout: float | None = None,
                   resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, progress: bool = True,
                   ground_truth: pd.DataFrame | None = None, storage: str | None = None) -> ModelBacktest:
    """Train ``spec`` on the history before ``as_of`` (unregistered), score its population at ``as_of``
    against what happened next, next to the baselines on the same customers."""
    from features.exact import exact_historical_features
    from training.champion import TAG_TASK, LoadedModel
    from training.tracking import client as mlflow_client
    from training.train import input_tags, train_model

    store = EventStore(project_paths().events)
    check_matured(store, spec, as_of)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    log.info("%s: training on the history before %s (not registered)", spec.name, as_of)
    # A study of its own for every backtest: the seeded sampler then replays the same trials and a re-run
    # gives the same model, instead of adding trials to a study an earlier run (or `train`) left.
    study = f"backtest-{spec.name}-{as_of}-{time.strftime('%Y%m%dT%H%M%S')}"
    result = train_model(history_spec(spec, as_of), trials=trials, timeout=timeout, storage=storage,
                         study_name=study, source=ExactFeatureSource(), progress=progress, register=False)
    mlflow_client().set_tag(result.run_id, "backtest_as_of", f"{as_of}")
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    rows = _labels_at(store, spec, as_of)
    y = rows["label"].to_numpy(dtype=np.float64)
    if len(rows) < 2 or y.min() == y.max():
        raise NotEnoughDataError(f"{spec.name}: {len(rows)} labelled rows at {as_of} with one label value only: "
                                 "nothing to measure")
    feats = exact_historical_features(rows[["customer_id", "event_timestamp"]], spec.feature_service)
    feats = feats.reset_index(drop=True)
    tags = {TAG_TASK: spec.task, **input_tags(result.boost_from, result.never_fill)}
    model = LoadedModel(spec.name, "backtest", result.booster, list(result.booster.feature_name()),
                        spec.feature_service, result.calibration, tags=tags)
    prediction = model.predict(feats)
    seconds["score"] = time.perf_counter() - started

    measure = _measure_binary if spec.task == "binary" else _measure_amounts
    out = measure(spec, as_of, store, rows, y, feats, prediction, resamples, seed, progress, ground_truth, seconds)
    training = {
        "run_id": result.run_id, "data_end": f"{as_of - timedelta(days=1)}",
        "trials_in_study": result.trials_in_study, "optuna_study": result.study_name,
        "test_cutoff": result.lineage.get("test_cutoffs", [None])[0],
        "train_cutoffs": _span(result.lineage.get("train_cutoffs", [])),
        "validation_cutoffs": _span(result.lineage.get("validation_cutoffs", [])),
        "train_rows": result.lineage.get("train_rows"),
        "internal_test_roc_auc": result.test_metrics.get("roc_auc"),
        "internal_test_metric": spec.promotion.metric,
        "internal_test_score": result.test_metrics.get(spec.promotion.metric),
        "registered": False,
    }
    if result.calibration is not None:
        training["calibration"] = result.calibration.method
    out.training = training
    out.seconds = seconds
    out.plateau = plateau_stats(prediction, feats[model.feature_names])
    out.scored = {**out.scored, "rows": rows, "features": feats, "model": model, "prediction": prediction}
    return out


def _with_oracle(spec, as_of, rows, ground_truth, scores: dict, y: np.ndarray, binary: bool) -> dict:
    """Add the oracle to ``scores`` when every row has a truth; otherwise note its coverage (and its own
    metric on the covered rows, outside the paired bootstrap)."""
    oracle_p, oracle_note = _oracle(spec, as_of, rows, ground_truth)
    if oracle_p is None:
        return oracle_note
    if np.isfinite(oracle_p).all():
        scores[ORACLE] = oracle_p
        return oracle_note
    have = np.isfinite(oracle_p)
    oracle_note["covered_rows"] = int(have.sum())
    if binary and have.sum() >= 2 and 0 < y[have].mean() < 1:
        oracle_note["roc_auc_on_covered_rows"] = float(
            weighted_auc(y[have], oracle_p[have], np.ones((1, int(have.sum()))))[0])
    elif not binary and have.sum() >= 2 and y[have].sum() > 0:
        oracle_note["normalized_gini_on_covered_rows"] = float(
            weighted_normalized_gini(y[have], oracle_p[have], np.ones((1, int(have.sum()))))[0])
    return oracle_note


def _measure_binary(spec, as_of, store, rows, y, feats, p_model, resamples, seed, progress, ground_truth,
                    seconds) -> ModelBacktest:
    from training.evaluate import _baselines
    from training.metrics import expected_calibration_error

    one_feature, rfm = _baselines(spec.baseline, feats)
    started = time.perf_counter()
    bg, p_alive, expected, p_any = bgnbd_scores(store, as_of, spec.labels.horizon_days, rows["customer_id"])
    # Oriented like the label: fewer expected purchases means more likely "no order".
    sign = 1.0 if spec.labels.positive == "order" else -1.0
    seconds["bgnbd"] = time.perf_counter() - started

    scores = {MODEL: p_model, BASELINE: one_feature, RFM: rfm,
              BGNBD_EXPECTED: sign * _fill_low(expected), BGNBD_ANY: sign * _fill_low(p_any),
              BGNBD_ALIVE: sign * _fill_low(p_alive)}
    oracle_note = _with_oracle(spec, as_of, rows, ground_truth, scores, y, binary=True)

    started = time.perf_counter()
    stats = bootstrap(y, scores, resamples, seed, progress=progress)
    for name, s in scores.items():
        stats[name].update(top_stats(y, s))
        stats[name]["label"] = _scorer_label(name, spec)
    seconds["bootstrap"] = time.perf_counter() - started

    calibration = calibration_table(y, p_model)
    stats[MODEL]["brier"] = float(np.mean((p_model - y) ** 2))
    stats[MODEL]["ece"] = expected_calibration_error(y, p_model)
    bg_note = {**bg.params(), "horizon_days": spec.labels.horizon_days,
               "rows_without_orders": int((~np.isfinite(expected)).sum()),
               "time_unit": "day", "fitted_on": f"every customer with an order before {as_of}"}
    log.info("%s at %s: %d rows, model AUC %.4f [%.4f, %.4f]", spec.name, as_of, len(rows),
             stats[MODEL]["roc_auc"], *stats[MODEL]["roc_auc_ci"])
    # The truth goes on to the value-at-risk check (its ceiling), when every row has one.
    return ModelBacktest(spec.name, f"{as_of}", len(rows), int(y.sum()), float(y.mean()), _population(spec),
                         {}, stats, calibration, bg_note, oracle_note, task="binary",
                         scored={"oracle": scores.get(ORACLE)})


def _measure_amounts(spec, as_of, store, rows, y, feats, value, resamples, seed, progress, ground_truth,
                     seconds) -> ModelBacktest:
    """A regression model (spend over the label's horizon): normalised Gini and top-10% capture with
    paired bootstrap intervals against past spend over the same length, the spec's baseline feature,
    RFM and BG/NBD x Gamma-Gamma; MAE for the scorers that are amounts over the horizon."""
    horizon = spec.labels.horizon_days
    need = [spec.baseline.feature, "r_score", "f_score", "m_score"]
    missing = [c for c in need if c not in feats.columns]
    if missing:
        raise DataError(f"{spec.name}: feature retrieval lacks baseline column(s) {', '.join(missing)}")
    sign = 1.0 if spec.baseline.higher_means_positive else -1.0
    baseline = sign * pd.to_numeric(feats[spec.baseline.feature], errors="coerce").fillna(0.0).to_numpy()
    # A high RFM score is a recent, frequent, big spender: more future spend (unlike churn's orientation).
    rfm = sum(pd.to_numeric(feats[c], errors="coerce").fillna(0) for c in ("r_score", "f_score", "m_score")).to_numpy()
    past = spend_before(store, as_of, horizon, rows["customer_id"])

    started = time.perf_counter()
    bg, gg, expected = btyd_spend_scores(store, as_of, horizon, rows["customer_id"])
    seconds["bgnbd_gamma_gamma"] = time.perf_counter() - started

    # No order before D: nothing to extrapolate, the BTYD spend is 0.
    scores = {MODEL: np.asarray(value, dtype=np.float64), PAST_SPEND: past, BASELINE: baseline,
              RFM: np.asarray(rfm, dtype=np.float64), BTYD_SPEND: np.where(np.isfinite(expected), expected, 0.0)}
    oracle_note = _with_oracle(spec, as_of, rows, ground_truth, scores, y, binary=False)

    started = time.perf_counter()
    stats = bootstrap_amounts(y, scores, resamples, seed, progress=progress)
    for name, s in scores.items():
        if name in AMOUNT_SCORERS:
            stats[name]["mae"] = float(np.mean(np.abs(s - y)))
            stats[name]["mean_predicted"] = float(np.mean(s))
        stats[name]["label"] = _scorer_label(name, spec)
    seconds["bootstrap"] = time.perf_counter() - started

    bg_note = {**bg.params(), "horizon_days": horizon, "rows_without_orders": int((~np.isfinite(expected)).sum()),
               "time_unit": "day", "fitted_on": f"every customer with an order before {as_of}"}
    gg_note = {**gg.params(), "mean_value_per_purchase_day": gg.mean_value,
               "fitted_on": f"customers with a repeat purchase day of positive spend before {as_of}"}
    log.info("%s at %s: %d rows, model normalised Gini %.4f [%.4f, %.4f]", spec.name, as_of, len(rows),
             stats[MODEL]["normalized_gini"], *stats[MODEL]["normalized_gini_ci"])
    return ModelBacktest(spec.name, f"{as_of}", len(rows), int((y > 0).sum()), float((y > 0).mean()),
                         _population(spec), {}, stats, calibration_table(y, scores[MODEL]), bg_note, oracle_note,
                         task="regression", gamma_gamma=gg_note)


# ---- value at risk: the churn and the value model on the same date ----------------------------------
def value_at_risk_check(risk: ModelBacktest, value: ModelBacktest, *, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = DEFAULT_SEED, fraction: float = TOP_FRACTIONS[0],
                        lost_days: int = LOST_SPEND_DAYS, progress: bool = False) -> dict:
    """Ranked by value_at_risk = P(churn) x value, how much of the revenue actually lost do the top
    ``fraction`` of the risk model's population hold, against the top ``fraction`` by P(churn) alone?

    Revenue lost by a customer = the spend of the ``lost_days`` before D when the churn label is 1 (the
    customer then churned), else 0. Both models were backtested at the same D (trained before it); the
    value model scores the risk model's population with its own features at D. Also shown: P(churn) x
    past spend over the value horizon (stakes without a value model), P(churn) x value / P(stays) (the
    spend expected if the customer stays), the value alone, P(churn) x the spend that counts as lost, and
    the hindsight ranking by the revenue actually lost (the ceiling of the ratio); with ground truth, the
    true P(churn) x the spend that counts as lost (the ceiling of a ranking made at D)."""
    from features.exact import exact_historical_features

    if risk.task != "binary" or value.task != "regression":
        raise PropensityError(f"value at risk needs a binary risk model and a regression value model, got "
                              f"{risk.model} ({risk.task}) and {value.model} ({value.task})")
    if risk.as_of != value.as_of:
        raise PropensityError(f"value at risk needs both models at one date: {risk.as_of} != {value.as_of}")
    as_of = date.fromisoformat(risk.as_of)
    rows = risk.scored["rows"]
    p_churn = np.asarray(risk.scored["prediction"], dtype=np.float64)
    vmodel = value.scored["model"]
    if vmodel.feature_service == risk.scored["model"].feature_service:
        feats = risk.scored["features"]
    else:
        feats = exact_historical_features(rows[["customer_id", "event_timestamp"]], vmodel.feature_service)
        feats = feats.reset_index(drop=True)
    predicted_value = vmodel.predict(feats)
    store = EventStore(project_paths().events)
    churned = rows["label"].to_numpy(dtype=np.float64)
    last_year = spend_before(store, as_of, lost_days, rows["customer_id"])
    lost = churned * np.maximum(last_year, 0.0)
    past = spend_before(store, as_of, value.bgnbd["horizon_days"], rows["customer_id"])
    # The value model's prediction already discounts a likely churner's spend; dividing by P(stays)
    # gives the spend expected should the customer stay, the stake a retention call can save.
    if_retained = predicted_value / np.clip(1.0 - p_churn, 1e-6, None)
    rankings = {"value_at_risk": p_churn * predicted_value, "churn_probability": p_churn,
                "churn_x_past_spend": p_churn * past, "churn_x_value_if_retained": p_churn * if_retained,
                "value": predicted_value,
                # The expected lost revenue itself (P(churn) x the spend that counts as lost): the best a
                # ranking by P(churn) and known spend can do on this measure.
                "churn_x_lost_days_spend": p_churn * np.maximum(last_year, 0.0),
                # Hindsight: ranked by the revenue actually lost. No ranking can beat it: its ratio is
                # the largest ratio the data allows.
                "hindsight": lost}
    oracle = risk.scored.get("oracle")
    if oracle is not None:
        # The true P(churn) x the spend that counts as lost: the expected lost revenue exactly, so the best
        # any ranking made at D can do on this measure (hindsight sees the outcome).
        rankings["oracle_churn_x_lost_days_spend"] = oracle * np.maximum(last_year, 0.0)
    pct = int(round(fraction * 100))
    ones = np.ones((1, len(lost)))
    point = {n: float(weighted_top_capture(lost, s, ones, fraction)[0]) for n, s in rankings.items()}
    draws = {n: [] for n in rankings}
    with _bar(progress, "bootstrap (value at risk)", resamples) as advance:
        for weights in resample_counts(len(lost), resamples, seed):
            for n, s in rankings.items():
                draws[n].append(weighted_top_capture(lost, s, weights, fraction))
            advance(len(weights))
    draws = {n: np.concatenate(d) for n, d in draws.items()}
    base = "churn_probability"
    out_rankings = {}
    for n in rankings:
        entry = {f"lost_capture_top{pct}": point[n], f"lost_capture_top{pct}_ci": percentile_interval(draws[n])}
        if n != base:
            with np.errstate(divide="ignore", invalid="ignore"):
                entry["ratio_to_churn_probability"] = point[n] / point[base]
                entry["ratio_to_churn_probability_ci"] = percentile_interval(draws[n] / draws[base])
        out_rankings[n] = entry
    ratio = out_rankings["value_at_risk"]["ratio_to_churn_probability"]
    total_lost = float(lost.sum())
    log.info("value at risk at %s: top %d%% by P(churn) x value hold %.1f%% of the revenue lost, by P(churn) "
             "alone %.1f%%: ratio %.2f [%.2f, %.2f]", risk.as_of, pct, 100 * point["value_at_risk"],
             100 * point[base], ratio, *out_rankings["value_at_risk"]["ratio_to_churn_probability_ci"])
    return {
        "as_of": risk.as_of, "risk_model": risk.model, "value_model": value.model, "rows": int(len(lost)),
        "churned": int(churned.sum()), "revenue_lost_total": total_lost,
        "revenue_lost_definition": f"spend in the {lost_days} days before {risk.as_of} of the customers whose "
                                   f"{risk.model} label is 1 (they then churned)",
        "top_fraction": fraction, "rankings": out_rankings, "ratio": ratio,
        "goal": "ratio >= 2", "meets_goal": bool(ratio >= 2.0),
    }


def _span(cutoffs: list[str]) -> str:
    return f"{cutoffs[0]}..{cutoffs[-1]} ({len(cutoffs)})" if cutoffs else ""


def _scorer_label(name: str, spec: ModelSpec) -> str:
    return {
        MODEL: f"model ({spec.feature_service}, trained before the as-of date)",
        BASELINE: f"{spec.baseline.feature} alone",
        RFM: "RFM score (r + f + m)",
        BGNBD_EXPECTED: f"BG/NBD expected purchases in {spec.labels.horizon_days} days",
        BGNBD_ANY: f"BG/NBD P(an order in {spec.labels.horizon_days} days)",
        BGNBD_ALIVE: "BG/NBD P(alive)",
        ORACLE: f"oracle ({spec.ground_truth.probability if spec.ground_truth else '-'})",
        PAST_SPEND: f"spend in the {spec.labels.horizon_days} days before the date",
        BTYD_SPEND: f"BG/NBD x Gamma-Gamma expected spend in {spec.labels.horizon_days} days",
    }[name]


def _population(spec: ModelSpec) -> str:
    lab = spec.labels
    return f"{lab.kind} ({', '.join(f'{k}={v}' for k, v in lab.model_dump().items() if k != 'kind')})"


# ---- every model, the report and the MLflow run -----------------------------------------------------
@dataclass
class BacktestReport:
    as_of: str
    models: list[ModelBacktest]
    skipped: dict[str, str]
    resamples: int
    seed: int
    folder: Path | None = None
    run_id: str | None = None
    seconds: float = 0.0
    value_at_risk: dict | None = None  # the check of value_at_risk_check, or why there is none

    def as_dict(self) -> dict:
        return {
            "as_of": self.as_of, "resamples": self.resamples, "seed": self.seed,
            "bootstrap": "customers resampled with replacement; percentile 95% intervals; one set of resamples "
                         "shared by every scorer, so differences are paired",
            "skipped": self.skipped, "seconds": round(self.seconds, 1), "mlflow_run_id": self.run_id,
            "models": [m.as_dict() for m in self.models], "value_at_risk": self.value_at_risk,
        }


def run_backtest(as_of: date, models: list[str] | None = None, *, trials: int | None = None,
                 timeout: float | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 progress: bool = True, storage: str | None = None,
                 stakes: tuple[str, str] | None = None) -> BacktestReport:
    """Backtest ``models`` (default: every model the event store supports) at ``as_of``; write the report
    folder and log it to MLflow. A named model that cannot be backtested is an error; an unnamed one whose
    labels at ``as_of`` have not matured is skipped with the reason. ``stakes`` = (risk model, value model)
    (configs/actions.yaml ``stakes``): when both were backtested, the report adds the value-at-risk check."""
    from core.specs import load_spec, specs_for_data

    started = time.perf_counter()
    usable, skipped = specs_for_data()
    if models:
        specs = {}
        for name in models:
            if name in skipped:
                raise PropensityError(f"{name}: {skipped[name]}")
            specs[name] = usable.get(name) or load_spec(name)
        skipped = {}
    else:
        specs = dict(usable)
    store = EventStore(project_paths().events)
    results = []
    for name, spec in specs.items():
        if not models:
            try:
                check_matured(store, spec, as_of)
            except NotEnoughDataError as exc:
                log.warning("%s", exc)
                skipped[name] = str(exc)
                continue
        try:
            results.append(backtest_model(spec, as_of, trials=trials, timeout=timeout, resamples=resamples,
                                          seed=seed, progress=progress, storage=storage))
        except NotEnoughDataError as exc:
            if models:
                raise
            # e.g. a 180-day value label whose training cutoffs would all lie before the data starts
            log.warning("%s", exc)
            skipped[name] = str(exc)
    if not results:
        raise PropensityError(f"no model could be backtested at {as_of}: "
                              + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    report = BacktestReport(f"{as_of}", results, skipped, resamples, seed)
    report.value_at_risk = _value_at_risk_section(results, stakes, resamples, seed, progress)
    report.folder = project_paths().reports / f"backtest-{as_of}"
    report.seconds = time.perf_counter() - started
    _write_folder(report)
    report.run_id = _log_to_mlflow(report)
    # The run id is known only once the run exists: write the JSON again with it.
    from core.io import write_json

    write_json(report.folder / "report.json", report.as_dict())
    return report


def _value_at_risk_section(results: list[ModelBacktest], stakes: tuple[str, str] | None, resamples: int,
                           seed: int, progress: bool) -> dict | None:
    if stakes is None:
        return None
    risk_name, value_name = stakes
    by_name = {m.model: m for m in results}
    absent = [n for n in stakes if n not in by_name]
    if absent:
        return {"available": False,
                "reason": f"needs both {risk_name} and {value_name} backtested in this run ({', '.join(absent)} not)"}
    return {"available": True, **value_at_risk_check(by_name[risk_name], by_name[value_name], resamples=resamples,
                                                     seed=seed, progress=progress)}


def _write_folder(report: BacktestReport) -> None:
    from core.io import atomic_path

    with atomic_path(report.folder) as tmp:
        tmp.mkdir(parents=True)
        for m in report.models:
            if m.task == "binary":
                m.plots = {"reliability": f"{m.model}_reliability.png", "auc": f"{m.model}_auc.png"}
                reliability_plot(m, tmp / m.plots["reliability"])
                auc_plot(m, tmp / m.plots["auc"])
            else:
                m.plots = {"deciles": f"{m.model}_deciles.png", "gini": f"{m.model}_gini.png"}
                decile_plot(m, tmp / m.plots["deciles"])
                auc_plot(m, tmp / m.plots["gini"], metric="normalized_gini")
        import json

        (tmp / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str), encoding="utf-8")
        (tmp / "index.html").write_text(render_html(report), encoding="utf-8")


def _log_to_mlflow(report: BacktestReport) -> str:
    import mlflow

    from training.tracking import ensure_experiment

    experiment_id = ensure_experiment(EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"backtest-{report.as_of}") as run:
        mlflow.set_tags({"as_of": report.as_of, **{f"training_run.{m.model}": m.training["run_id"]
                                                   for m in report.models}})
        mlflow.log_params({"as_of": report.as_of, "models": ",".join(m.model for m in report.models),
                           "resamples": report.resamples, "seed": report.seed})
        metrics = {}
        for m in report.models:
            metrics[f"{m.model}.rows"] = m.rows
            metrics[f"{m.model}.label_rate"] = m.label_rate
            for key in ("distinct_predictions", "largest_share", "largest_share_differing_inputs"):
                if key in m.plateau:
                    metrics[f"{m.model}.model.plateau_{key}"] = m.plateau[key]
            for scorer, s in m.scorers.items():
                for key in ("roc_auc", "pr_auc", "auc_diff", "lift_top10", "capture_top10", "lift_top20",
                            "capture_top20", "brier", "ece", "normalized_gini", "normalized_gini_diff",
                            "capture_top10_diff", "mae"):
                    if key in s and np.isfinite(s[key]):
                        metrics[f"{m.model}.{scorer}.{key}"] = s[key]
                for key in ("roc_auc_ci", "pr_auc_ci", "auc_diff_ci", "normalized_gini_ci", "normalized_gini_diff_ci",
                            "capture_top10_ci", "capture_top10_diff_ci"):
                    if key in s:
                        metrics[f"{m.model}.{scorer}.{key}_lo"], metrics[f"{m.model}.{scorer}.{key}_hi"] = s[key]
        var = report.value_at_risk
        if var and var.get("available"):
            metrics["value_at_risk.ratio"] = var["ratio"]
            lo, hi = var["rankings"]["value_at_risk"]["ratio_to_churn_probability_ci"]
            metrics["value_at_risk.ratio_ci_lo"], metrics["value_at_risk.ratio_ci_hi"] = lo, hi
            for name, r in var["rankings"].items():
                metrics[f"value_at_risk.{name}.lost_capture_top10"] = r["lost_capture_top10"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(report.folder), "report")
        return run.info.run_id


# ---- plots and HTML ---------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, and no display here
    import matplotlib.pyplot as plt

    return plt


def reliability_plot(m: ModelBacktest, path: Path) -> Path:
    top = max([1e-3, *(r["mean_predicted"] for r in m.calibration), *(r["observed_rate"] for r in m.calibration)])
    return _deciles_plot(m, path, min(1.0, top * 1.05), "perfectly calibrated", "mean predicted probability",
                         "observed rate after the as-of date", f"{m.model}: reliability at {m.as_of}")


def decile_plot(m: ModelBacktest, path: Path) -> Path:
    """A regression model: mean predicted against mean realised amount per decile of the prediction."""
    top = max([1e-3, *(r["mean_predicted"] for r in m.calibration), *(r["observed_rate"] for r in m.calibration)])
    return _deciles_plot(m, path, top * 1.05, "predicted = realised", "mean predicted amount",
                         "mean realised amount after the as-of date", f"{m.model}: deciles at {m.as_of}")


def _deciles_plot(m: ModelBacktest, path: Path, lim: float, diagonal: str, xlabel: str, ylabel: str,
                  title: str) -> Path:
    """Mean predicted against observed per decile (``m.calibration``), with the diagonal, on [0, lim]."""
    plt = _pyplot()
    table = m.calibration
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, lim], [0, lim], "--", color="grey", label=diagonal)
    ax.plot([r["mean_predicted"] for r in table], [r["observed_rate"] for r in table], "o-", label="model (deciles)")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, lim), ylim=(0, lim))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def auc_plot(m: ModelBacktest, path: Path, metric: str = "roc_auc") -> Path:
    """``metric`` (ROC AUC, or a regression's normalised Gini) of each scorer with its bootstrap 95% interval."""
    plt = _pyplot()
    names = list(m.scorers)
    auc = [m.scorers[n][metric] for n in names]
    lo = [m.scorers[n][metric] - m.scorers[n][f"{metric}_ci"][0] for n in names]
    hi = [m.scorers[n][f"{metric}_ci"][1] - m.scorers[n][metric] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ypos = np.arange(len(names))[::-1]
    ax.errorbar(auc, ypos, xerr=[lo, hi], fmt="o", capsize=4)
    ax.axvline(0.5 if metric == "roc_auc" else 0.0, color="grey", ls=":", lw=0.8)
    ax.set_yticks(ypos, [m.scorers[n]["label"] for n in names], fontsize=8)
    name = "ROC AUC" if metric == "roc_auc" else "normalised Gini"
    ax.set(xlabel=f"{name} (bootstrap 95% interval)", title=f"{m.model} at {m.as_of}: {m.rows} customers")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ci(value: float, ci: list[float] | None, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def render_html(report: BacktestReport) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>backtest {esc(report.as_of)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,"
        "th:first-child{text-align:left}th{background:#f4f4f4}.note{color:#555;font-size:90%}</style></head><body>",
        f"<h1>Backtest at {esc(report.as_of)}</h1>",
        "<p class='note'>Each model was trained on the history before this date only (not registered) and "
        "scored on its population at the date; labels are what happened on and after it. Baselines are "
        f"scored on the same customers. Intervals: {report.resamples} bootstrap resamples of the customers "
        f"(seed {report.seed}), percentile 95%, shared by every scorer so the differences are paired.</p>",
    ]
    for name, reason in report.skipped.items():
        parts.append(f"<p class='note'>skipped {esc(name)}: {esc(reason)}</p>")
    for m in report.models:
        t = m.training
        score = t.get("internal_test_score")
        parts += [
            f"<h2>{esc(m.model)}</h2>",
            f"<p>{m.rows} customers, {m.positives} {'positive' if m.task == 'binary' else 'with a purchase'} "
            f"(rate {m.label_rate:.3f}); population {esc(m.population)}.<br>Trained on data through "
            f"{esc(t['data_end'])}: train cutoffs {esc(t['train_cutoffs'])}, validation {esc(t['validation_cutoffs'])}, "
            f"internal test cutoff {esc(str(t['test_cutoff']))} ({esc(t.get('internal_test_metric', ''))} "
            f"{'-' if score is None else f'{score:.4f}'}); {t['trials_in_study']} trials in study; MLflow run "
            f"{esc(t['run_id'])}.</p>",
        ]
        parts += _binary_tables(m) if m.task == "binary" else _amount_tables(m)
        o = m.oracle
        if o.get("available"):
            covered = ""
            if "roc_auc_on_covered_rows" in o:
                covered = f" ROC AUC on the {o['covered_rows']} rows with a truth: {o['roc_auc_on_covered_rows']:.4f}."
            elif "normalized_gini_on_covered_rows" in o:
                covered = (f" Normalised Gini on the {o['covered_rows']} rows with a truth: "
                           f"{o['normalized_gini_on_covered_rows']:.4f}.")
            parts.append(f"<p class='note'>Oracle: ground truth column {esc(o['column'])} at {esc(o['as_of'])} "
                         f"({o['days_before']} day(s) before the as-of date), coverage {o['coverage']:.1%}. "
                         f"{esc(o.get('note', ''))}{covered}</p>")
        else:
            parts.append(f"<p class='note'>Oracle: {esc(o.get('reason', 'not available'))}.</p>")
        b = m.bgnbd
        parts.append(f"<p class='note'>BG/NBD (maximum likelihood, days): r={b['r']:.4g}, alpha={b['alpha']:.4g}, "
                     f"a={b['a']:.4g}, b={b['b']:.4g}, fitted on {b['customers']} customers "
                     f"({esc(b['fitted_on'])}); {b['rows_without_orders']} scored customers had no order before "
                     "the date" + (" and rank as the least likely to buy." if m.task == "binary" else
                                   " (expected spend 0).") + "</p>")
        if m.gamma_gamma:
            g = m.gamma_gamma
            parts.append(f"<p class='note'>Gamma-Gamma (maximum likelihood): p={g['p']:.4g}, q={g['q']:.4g}, "
                         f"gamma={g['gamma']:.4g}; mean value per purchase day {g['mean_value_per_purchase_day']:.4g}; "
                         f"fitted on {g['customers']} customers ({esc(g['fitted_on'])}).</p>")
        parts += _decile_table(m)
        if m.plateau:
            q = m.plateau
            parts.append(f"<p class='note'>Distinct predictions: {q['distinct_predictions']} for {q['rows']} customers "
                         f"({q['distinct_inputs']} distinct inputs); the largest group sharing one prediction holds "
                         f"{q['largest_share']:.1%}, counting only customers whose inputs differ "
                         f"{q['largest_share_differing_inputs']:.1%}; the 10 most common predictions "
                         f"{q['top10_predictions_share']:.1%}.</p>")
        for title, file in m.plots.items():
            parts.append(f"<img src='{esc(file)}' alt='{esc(m.model)} {esc(title)}' style='max-width:48%'>")
    parts += _value_at_risk_html(report.value_at_risk)
    parts.append("</body></html>")
    return "\n".join(parts)


def _binary_tables(m: ModelBacktest) -> list[str]:
    esc = html.escape
    parts = ["<table><tr><th>scorer</th><th>ROC AUC [95% CI]</th><th>PR AUC [95% CI]</th><th>lift@10%</th>"
             "<th>capture@10%</th><th>lift@20%</th><th>capture@20%</th><th>model AUC minus this [95% CI]</th></tr>"]
    for s in m.scorers.values():
        parts.append(
            f"<tr><td>{esc(s['label'])}</td><td>{_ci(s['roc_auc'], s['roc_auc_ci'])}</td>"
            f"<td>{_ci(s['pr_auc'], s['pr_auc_ci'])}</td><td>{s['lift_top10']:.2f}</td>"
            f"<td>{s['capture_top10']:.1%}</td><td>{s['lift_top20']:.2f}</td><td>{s['capture_top20']:.1%}</td>"
            f"<td>{_ci(s.get('auc_diff'), s.get('auc_diff_ci')) if 'auc_diff' in s else '-'}</td></tr>")
    parts.append("</table>")
    return parts


def _amount_tables(m: ModelBacktest) -> list[str]:
    esc = html.escape
    parts = ["<table><tr><th>scorer</th><th>normalised Gini [95% CI]</th><th>top-10% spend capture [95% CI]</th>"
             "<th>model Gini minus this [95% CI]</th><th>model capture minus this [95% CI]</th><th>MAE</th>"
             "<th>mean predicted</th></tr>"]
    for s in m.scorers.values():
        parts.append(
            f"<tr><td>{esc(s['label'])}</td><td>{_ci(s['normalized_gini'], s['normalized_gini_ci'])}</td>"
            f"<td>{_ci(s['capture_top10'], s['capture_top10_ci'])}</td>"
            f"<td>{_ci(s.get('normalized_gini_diff'), s.get('normalized_gini_diff_ci')) if 'normalized_gini_diff' in s else '-'}</td>"
            f"<td>{_ci(s.get('capture_top10_diff'), s.get('capture_top10_diff_ci')) if 'capture_top10_diff' in s else '-'}</td>"
            f"<td>{_ci(s['mae'], None, 2) if 'mae' in s else '-'}</td>"
            f"<td>{_ci(s['mean_predicted'], None, 2) if 'mean_predicted' in s else '-'}</td></tr>")
    parts.append("</table>")
    return parts


def _decile_table(m: ModelBacktest) -> list[str]:
    if m.task == "binary":
        model_stats = m.scorers[MODEL]
        head = (f"<h3>Calibration (deciles of the predicted probability; Brier {model_stats['brier']:.4f}, "
                f"ECE {model_stats['ece']:.4f}; calibration {html.escape(m.training.get('calibration', '-'))} fitted on "
                f"the training's validation cutoffs)</h3>")
        cols, digits = ("mean predicted", "observed rate"), 4
    else:
        head = "<h3>Deciles of the predicted amount: mean predicted against mean realised</h3>"
        cols, digits = ("mean predicted", "mean realised"), 2
    parts = [head, f"<table><tr><th>decile</th><th>rows</th><th>{cols[0]}</th><th>{cols[1]}</th>"
                   "<th>predicted range</th></tr>"]
    for r in m.calibration:
        parts.append(f"<tr><td>{r['bin']}</td><td>{r['rows']}</td><td>{r['mean_predicted']:.{digits}f}</td>"
                     f"<td>{r['observed_rate']:.{digits}f}</td><td>{r['min_predicted']:.{digits}f} - "
                     f"{r['max_predicted']:.{digits}f}</td></tr>")
    parts.append("</table>")
    return parts


def _value_at_risk_html(var: dict | None) -> list[str]:
    esc = html.escape
    if var is None:
        return []
    if not var.get("available"):
        return ["<h2>Value at risk</h2>", f"<p class='note'>Not computed: {esc(var['reason'])}.</p>"]
    pct = int(round(var["top_fraction"] * 100))
    parts = [
        "<h2>Value at risk</h2>",
        f"<p>{var['rows']} customers of the {esc(var['risk_model'])} population at {esc(var['as_of'])}, "
        f"{var['churned']} of whom churned; revenue lost {var['revenue_lost_total']:,.2f} "
        f"({esc(var['revenue_lost_definition'])}). Share of it held by the top {pct}% of each ranking; "
        f"goal: P(churn) x value holds at least twice what P(churn) alone does. Ratio "
        f"{_ci(var['ratio'], var['rankings']['value_at_risk']['ratio_to_churn_probability_ci'], 2)}"
        f" ({'met' if var['meets_goal'] else 'not met'}).</p>",
        f"<table><tr><th>ranking</th><th>revenue lost in the top {pct}% [95% CI]</th>"
        "<th>ratio to P(churn) alone [95% CI]</th></tr>",
    ]
    for name, r in var["rankings"].items():
        ratio = (_ci(r["ratio_to_churn_probability"], r["ratio_to_churn_probability_ci"], 2)
                 if "ratio_to_churn_probability" in r else "-")
        parts.append(f"<tr><td>{esc(name)}</td><td>{_ci(r[f'lost_capture_top{pct}'], r[f'lost_capture_top{pct}_ci'])}"
                     f"</td><td>{ratio}</td></tr>")
    parts.append("</table>")
    return parts
