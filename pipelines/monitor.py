"""Monitoring: is the champion still fit for the customers it scores?

Three signals, each against thresholds in ``configs/monitor.yaml``:

- feature drift: PSI per model feature of the latest scored snapshot against the champion's training
  set (a reference sample the training run logged, see ``reference_sample``);
- score drift: PSI of the champion's probabilities on the latest snapshot against its probabilities on
  that same reference sample (same model on both sides, so only the customers changed);
- realised performance: ROC AUC of every earlier scores file whose labels have matured (the label window
  after its as-of date lies inside the event data), over time; for a regression model (the value model)
  its normalised Gini, top-10% capture, MAE and mean bias against the realised amounts instead.

The verdict says ``retrain`` when any signal crosses its threshold. ``monitor()`` writes an HTML report
with PNG plots to ``data/reports/`` and logs the aggregate metrics (never a customer id) to MLflow.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from core.config import StrictModel, config_path, load_config
from core.errors import PropensityError

log = logging.getLogger("propensity.monitor")



# ---- configuration ---------------------------------------------------------------------------------
class Thresholds(StrictModel):
    feature_psi: float = Field(0.25, gt=0, description="retrain when a feature's PSI exceeds this")
    max_drifted_features: int = Field(
        2, ge=0, description="retrain when more than this many features exceed feature_psi"
    )
    score_psi: float = Field(0.2, gt=0, description="retrain when a model's score PSI exceeds this")
    min_realised_auc: float = Field(0.65, gt=0, lt=1, description="retrain when the latest realised AUC is lower")
    max_auc_drop: float = Field(
        0.05, ge=0, lt=1, description="retrain when realised AUC falls this far below the holdout AUC"
    )
    # A binary model's Gini is 2 AUC - 1: these mirror the AUC thresholds above for the value model.
    min_realised_gini: float = Field(
        0.3, gt=-1, lt=1, description="regression: retrain when the latest realised normalised Gini is lower")
    max_gini_drop: float = Field(
        0.1, ge=0, lt=2, description="regression: retrain when realised normalised Gini falls this far below "
                                     "the holdout's")


class MonitorConfig(StrictModel):
    psi_bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference distribution")
    min_rows: int = Field(200, ge=10, description="fewer rows than this: the signal is reported as n/a")
    min_positives_for_auc: int = Field(20, ge=1)
    thresholds: Thresholds = Thresholds()
    experiment: str = "monitoring"


def load_monitor_config(path: str | Path | None = None) -> MonitorConfig:
    return load_config(path or config_path("monitor.yaml"), MonitorConfig)


# ---- the statistics ----------------------------------------------------------------------------------
def psi(reference, current, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference``.

    Bins are quantiles of the reference (deduplicated, so a count feature with few values gets fewer
    bins); missing values are a bin of their own, so a feature that starts arriving empty drifts too.
    """
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    ref_ok, cur_ok = ~np.isnan(ref), ~np.isnan(cur)
    finite = ref[ref_ok]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if finite.size else np.array([])
    n_bins = len(edges) + 1

    def shares(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values[ok], side="right"), minlength=n_bins)
        counts = np.append(counts, (~ok).sum())
        return np.clip(counts / values.size, eps, None)

    p, q = shares(ref, ref_ok), shares(cur, cur_ok)
    return float(np.sum((q - p) * np.log(q / p)))


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], bins: int) -> pd.DataFrame:
    """PSI per feature, largest first: columns feature, psi, reference_mean, current_mean."""
    rows = []
    for name in features:
        if name not in reference.columns or name not in current.columns:
            continue
        ref = pd.to_numeric(reference[name], errors="coerce")
        cur = pd.to_numeric(current[name], errors="coerce")
        rows.append(
            {
                "feature": name,
                "psi": psi(ref, cur, bins),
                "reference_mean": float(ref.mean()),
                "current_mean": float(cur.mean()),
            }
        )
    out = pd.DataFrame(rows, columns=["feature", "psi", "reference_mean", "current_mean"])
    return out.sort_values("psi", ascending=False, ignore_index=True)


def realised_labels(store, as_of: pd.Timestamp, model: str) -> pd.DataFrame:
    """Eligible customers at ``as_of`` and their outcome, by training's own label definition for ``model``
    (configs/<model>.yaml), so realised AUC measures what the model was trained to predict."""
    from core.specs import load_spec
    from training.labels import build_labels

    labels = load_spec(model).labels
    cutoffs = pd.DataFrame({"cutoff": [as_of], "split": ["monitor"]})
    return build_labels(store, labels, cutoffs)[["customer_id", "label"]]


def auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    from training.metrics import auc as weighted_auc

    return weighted_auc(labels, scores, weights)


# ---- verdict -------------------------------------------------------------------------------------------
REALISED_BINARY = ["as_of", "rows", "positives", "auc", "auc_untreated"]
REALISED_AMOUNTS = ["as_of", "rows", "positives", "normalized_gini", "capture_top10", "mae", "mean_bias",
                    "mean_predicted", "mean_realised"]


@dataclass
class ModelSignals:
    model: str
    version: str | None = None
    holdout_auc: float | None = None  # binary: holdout AUC; regression: the holdout's normalised Gini
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # feature, psi, means
    score_psi: float | None = None
    realised: pd.DataFrame = field(default_factory=pd.DataFrame)  # REALISED_BINARY or REALISED_AMOUNTS
    notes: list[str] = field(default_factory=list)
    task: str = "binary"

    @property
    def realised_metric(self) -> str:
        """The realised column the verdict reads: ``auc`` (binary) or ``normalized_gini`` (regression)."""
        return "auc" if self.task == "binary" else "normalized_gini"

    def matured(self) -> pd.DataFrame:
        """Realised rows with a value (immature or too-small dates dropped), oldest first."""
        if self.realised.empty or self.realised_metric not in self.realised.columns:
            return self.realised.iloc[0:0]
        return self.realised.dropna(subset=[self.realised_metric]).sort_values("as_of")


@dataclass
class Verdict:
    retrain: bool
    reasons: list[str]

    @property
    def text(self) -> str:
        if self.retrain:
            return "RETRAIN: " + "; ".join(self.reasons)
        return "OK: no signal crossed its threshold" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def verdict(signals: list[ModelSignals], thresholds: Thresholds) -> Verdict:
    """Retrain when any model's feature drift, score drift or realised AUC crosses its threshold."""
    why: list[str] = []
    for s in signals:
        if not s.drift.empty:
            drifted = s.drift[s.drift["psi"] > thresholds.feature_psi]
            if len(drifted) > thresholds.max_drifted_features:
                top = ", ".join(f"{r.feature} {r.psi:.2f}" for r in drifted.head(3).itertuples())
                why.append(f"{s.model}: {len(drifted)} feature(s) with PSI > {thresholds.feature_psi} ({top})")
        if s.score_psi is not None and s.score_psi > thresholds.score_psi:
            why.append(f"{s.model}: score PSI {s.score_psi:.2f} > {thresholds.score_psi}")
        matured = s.matured()
        if not matured.empty and s.task != "binary":
            why += _amount_reasons(s, matured.iloc[-1], thresholds)
        elif not matured.empty:
            latest = matured.iloc[-1]
            # The untreated view when the list had control groups: treated outcomes measure the action.
            honest = latest.get("auc_untreated")
            value, which = (honest, "untreated") if honest is not None and not np.isnan(honest) else (latest["auc"], "all rows")
            if value < thresholds.min_realised_auc:
                why.append(
                    f"{s.model}: realised AUC ({which}) {value:.3f} on {latest['as_of']:%Y-%m-%d} "
                    f"< {thresholds.min_realised_auc}"
                )
            elif s.holdout_auc is not None and s.holdout_auc - value > thresholds.max_auc_drop:
                why.append(
                    f"{s.model}: realised AUC ({which}) {value:.3f} is {s.holdout_auc - value:.3f} "
                    f"below the holdout AUC {s.holdout_auc:.3f}"
                )
    return Verdict(retrain=bool(why), reasons=why)


def _amount_reasons(s: ModelSignals, latest, thresholds: Thresholds) -> list[str]:
    value = latest["normalized_gini"]
    if value < thresholds.min_realised_gini:
        return [f"{s.model}: realised normalised Gini {value:.3f} on {latest['as_of']:%Y-%m-%d} "
                f"< {thresholds.min_realised_gini}"]
    if s.holdout_auc is not None and s.holdout_auc - value > thresholds.max_gini_drop:
        return [f"{s.model}: realised normalised Gini {value:.3f} is {s.holdout_auc - value:.3f} below the "
                f"holdout's {s.holdout_auc:.3f}"]
    return []


# ---- the report ------------------------------------------------------------------------------------------
def _plots(signals: list[ModelSignals], score_hists: dict, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> str:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        return name

    files: dict[str, str] = {}
    for s in signals:
        if not s.drift.empty:
            top = s.drift.head(20).iloc[::-1]
            fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(top))))
            ax.barh(top["feature"], top["psi"], color=np.where(top["psi"] > 0.25, "#c0392b", "#2e86c1"))
            ax.axvline(0.1, color="grey", ls=":", lw=1)
            ax.axvline(0.25, color="grey", ls="--", lw=1)
            ax.set_xlabel("PSI (latest snapshot vs training set)")
            ax.set_title(f"{s.model}: feature drift")
            files[f"{s.model}_psi"] = save(fig, f"{s.model}_feature_psi.png")
        if s.model in score_hists:
            ref, cur = score_hists[s.model]
            fig, ax = plt.subplots(figsize=(6, 3))
            if s.task == "binary":
                bins = np.linspace(0, 1, 41)
            else:  # amounts: a long tail; the range up to the 99th percentile of both sides
                top = float(np.nanpercentile(np.r_[ref, cur], 99)) or 1.0
                bins = np.linspace(0, top, 41)
            ax.hist(ref, bins=bins, alpha=0.6, density=True, label="training set")
            ax.hist(cur, bins=bins, alpha=0.6, density=True, label="latest scores")
            ax.set_xlabel(f"{s.model} {'probability' if s.task == 'binary' else 'predicted amount'}")
            ax.legend()
            ax.set_title(f"{s.model}: score distribution (PSI {s.score_psi:.3f})")
            files[f"{s.model}_scores"] = save(fig, f"{s.model}_scores.png")
        matured = s.matured()
        if not matured.empty:
            metric = "ROC AUC" if s.task == "binary" else "normalised Gini"
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.plot(matured["as_of"], matured[s.realised_metric], marker="o", label=f"realised {metric}")
            if s.holdout_auc is not None:
                ax.axhline(s.holdout_auc, color="grey", ls="--", lw=1, label=f"holdout {metric}")
            ax.set_ylim(0.4 if s.task == "binary" else min(0.0, float(matured[s.realised_metric].min())), 1.0)
            ax.set_ylabel(metric)
            ax.legend()
            ax.set_title(f"{s.model}: realised {metric} of matured scores")
            fig.autofmt_xdate()
            files[f"{s.model}_auc"] = save(fig, f"{s.model}_realised_auc.png")
    return files


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t") if not df.empty else "<p>n/a</p>"


def write_report(signals: list[ModelSignals], result_verdict: Verdict, snapshot_as_of, score_hists: dict,
                 out_dir: Path) -> Path:
    """``index.html`` with the verdict, tables and PNG plots, written to a temp folder then renamed."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plots = _plots(signals, score_hists, tmp)
    colour = "#c0392b" if result_verdict.retrain else "#1e8449"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>propensity monitoring</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}table.t{border-collapse:collapse}"
        "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>",
        "<h1>Model monitoring</h1>",
        f"<p>Latest scored snapshot: <b>{html.escape(str(snapshot_as_of))}</b>. "
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>",
        f"<h2 style='color:{colour}'>{html.escape(result_verdict.text)}</h2>",
    ]
    for s in signals:
        parts.append(f"<h2>{s.model} (version {html.escape(str(s.version))})</h2>")
        for note in s.notes:
            parts.append(f"<p><i>{html.escape(note)}</i></p>")
        parts.append("<h3>Feature drift (PSI)</h3>")
        if f"{s.model}_psi" in plots:
            parts.append(f"<img src='{plots[s.model + '_psi']}'>")
        parts.append(_table(s.drift.head(30)))
        parts.append("<h3>Score drift</h3>")
        parts.append(f"<p>PSI of the probabilities: {'n/a' if s.score_psi is None else f'{s.score_psi:.4f}'}</p>")
        if f"{s.model}_scores" in plots:
            parts.append(f"<img src='{plots[s.model + '_scores']}'>")
        parts.append("<h3>Realised performance</h3>")
        if s.holdout_auc is not None:
            metric = "AUC" if s.task == "binary" else "normalised Gini"
            parts.append(f"<p>Holdout {metric} at training: {s.holdout_auc:.4f}</p>")
        if f"{s.model}_auc" in plots:
            parts.append(f"<img src='{plots[s.model + '_auc']}'>")
        parts.append(_table(s.realised))
    parts.append("</body></html>")
    (tmp / "index.html").write_text("\n".join(parts), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir / "index.html"


# ---- the pipeline step ------------------------------------------------------------------------------------
@dataclass
class MonitorResult:
    verdict: Verdict
    signals: list[ModelSignals]
    report: Path
    snapshot_as_of: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    mlflow_run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        """Aggregate, non-identifying metrics as logged to MLflow."""
        out: dict[str, float] = {"retrain": float(self.verdict.retrain)}
        for s in self.signals:
            if not s.drift.empty:
                out[f"{s.model}_max_feature_psi"] = float(s.drift["psi"].max())
                for r in s.drift.itertuples():
                    out[f"{s.model}_psi_{r.feature}"] = float(r.psi)
            if s.score_psi is not None:
                out[f"{s.model}_score_psi"] = float(s.score_psi)
            matured = s.matured()
            if not matured.empty and s.task == "binary":
                out[f"{s.model}_realised_auc_latest"] = float(matured["auc"].iloc[-1])
            elif not matured.empty:
                for key in ("normalized_gini", "capture_top10", "mae", "mean_bias"):
                    out[f"{s.model}_realised_{key}_latest"] = float(matured[key].iloc[-1])
        return out


def reference_sample(model) -> pd.DataFrame:
    """The champion's training-time feature distribution: the holdout (latest matured cutoff of its
    training set, features and labels, no ids) that training logs to the model's MLflow run."""
    from training.promotion import load_holdout

    if not model.run_id:
        raise PropensityError(f"model {model.name} v{model.version} has no MLflow run: no training set to compare with")
    holdout = load_holdout(model.run_id)
    return holdout[[c for c in holdout.columns if c in model.feature_names]]


def eligible_ids(store, as_of: pd.Timestamp, model: str) -> pd.Series:
    """Customers the model's training labels would include at ``as_of`` (the population the reference
    sample was drawn from), so drift compares like with like."""
    return realised_labels(store, as_of, model)["customer_id"]


def _matured_scores(model: str, dates: list[str], paths, store):
    """(as_of, the scores file's rows joined to the realised labels) for every scored as-of of ``model``
    whose label window has closed inside the data; plus the spec and the data end."""
    import pyarrow.parquet as pq

    from core.settings import SCORES_FILE
    from core.specs import load_spec
    from serving.actions import prediction_column
    from training.labels import data_end

    spec = load_spec(model)
    horizon = pd.Timedelta(days=spec.labels.horizon_days)
    end = data_end(store, spec.cutoffs)
    column = prediction_column(model, spec.task)
    out = []
    for as_of_text in dates:
        as_of = pd.Timestamp(as_of_text, tz="UTC")
        if as_of + horizon > end:
            continue  # labels not matured yet
        scores_file = paths.scores / as_of_text / SCORES_FILE
        names = pq.read_schema(scores_file).names
        if column not in names:
            continue  # the model was not scored on that date
        columns = ["customer_id", column, *[c for c in ("group", "action_rule") if c in names]]
        scores = pd.read_parquet(scores_file, columns=columns)
        joined = scores.merge(realised_labels(store, as_of, model), on="customer_id")  # eligible only
        out.append((as_of, joined.rename(columns={column: "prediction"})))
    return out, spec, end


def _realised(model: str, dates: list[str], paths, store, cfg: MonitorConfig) -> tuple[pd.DataFrame, str]:
    """Realised performance per scored as-of whose label window has closed inside the data (AUC for a
    binary model, see ``_realised_amounts`` for a regression); plus a note when none has one."""
    from training.labels import contacted_rows, untreated_weights

    matured, spec, end = _matured_scores(model, dates, paths, store)
    if spec.task != "binary":
        return _realised_amounts(matured, spec, end, cfg)
    rows = []
    for as_of, joined in matured:
        positives = int(joined["label"].sum())
        negatives = len(joined) - positives
        value = untreated = float("nan")
        if min(positives, negatives) >= cfg.min_positives_for_auc:
            y, p = joined["label"].to_numpy(), joined["prediction"].to_numpy()
            value = auc(y, p)
            # Actions that work make treated customers leave less than scored: their outcomes say how
            # well the action did, not the model. The untreated view drops them and lets the rule's
            # control group stand in (inverse probability weights); it also drops customers an earlier
            # list's contact still acts on (within one horizon before this list: the rule training
            # applies to its labels, training.labels.contacted_rows), whose outcome is no cleaner.
            weights = untreated_weights(joined)
            stamped = joined[["customer_id"]].assign(event_timestamp=as_of)
            weights[contacted_rows(store, stamped, spec.labels.horizon_days)] = 0.0
            kept = weights > 0
            if len(np.unique(y[kept])) == 2:
                untreated = auc(y[kept], p[kept], weights[kept])
        rows.append({"as_of": as_of, "rows": len(joined), "positives": positives, "auc": value,
                     "auc_untreated": untreated})
    note = ""
    if not rows or all(np.isnan(r["auc"]) for r in rows):
        note = (f"no matured scores with enough outcomes yet: labels of a score mature "
                f"{spec.labels.horizon_days} days after its as-of (data ends {end:%Y-%m-%d})")
    return pd.DataFrame(rows, columns=REALISED_BINARY), note


def _realised_amounts(matured, spec, end, cfg: MonitorConfig) -> tuple[pd.DataFrame, str]:
    """A regression model's realised error per matured as-of: normalised Gini and top-10% capture of the
    realised amounts by the scored prediction, MAE and mean bias (predicted - realised), on the customers
    its label would include. Needs ``min_positives_for_auc`` buyers (amount > 0) and as many non-buyers.
    Treated customers are not separated out: an action changes their spend, so the error includes it."""
    from training.metrics import regression_metrics

    rows = []
    for as_of, joined in matured:
        y, pred = joined["label"].to_numpy(dtype=np.float64), joined["prediction"].to_numpy(dtype=np.float64)
        buyers = int((y > 0).sum())
        entry = {"as_of": as_of, "rows": len(joined), "positives": buyers, "mean_predicted": float(np.mean(pred)),
                 "mean_realised": float(np.mean(y))} if len(y) else {"as_of": as_of, "rows": 0, "positives": 0}
        if min(buyers, len(y) - buyers) >= cfg.min_positives_for_auc:
            m = regression_metrics(y, pred)
            entry.update(normalized_gini=m["normalized_gini"], capture_top10=m["top_decile_capture"], mae=m["mae"],
                         mean_bias=m["mean_bias"])
        rows.append(entry)
    frame = pd.DataFrame(rows, columns=REALISED_AMOUNTS)
    note = ""
    if frame["normalized_gini"].isna().all():
        note = (f"no matured scores with enough outcomes yet: amounts of a score mature "
                f"{spec.labels.horizon_days} days after its as-of (data ends {end:%Y-%m-%d})")
    return frame, note


def monitor(cfg: MonitorConfig | None = None, log_to_mlflow: bool = True, as_of: str | None = None) -> MonitorResult:
    """Compute every signal for each champion scored on the snapshot date, write the report, log metrics;
    return the verdict.

    The snapshot checked for drift is the newest scored as-of (or ``as_of``); realised AUC uses every
    scored as-of up to it whose labels have matured."""
    from core.events import EventStore
    from core.settings import project_paths
    from core.specs import model_names
    from serving.batch import FEATURE_SNAPSHOT
    from training.champion import load_model_version

    cfg = cfg or load_monitor_config()
    paths = project_paths()
    dates = paths.scored_dates()
    if not dates:
        raise PropensityError(f"nothing to monitor: no scores under {paths.scores} (run `propensity score` first)")
    if as_of is not None:
        wanted = f"{pd.Timestamp(as_of):%Y-%m-%d}"
        if wanted not in dates:
            raise PropensityError(f"--as-of {wanted}: no scores for that date under {paths.scores} (have {dates})")
        dates = [d for d in dates if d <= wanted]
    latest = dates[-1]
    snapshot_file = paths.scores / latest / FEATURE_SNAPSHOT
    if not snapshot_file.is_file():
        raise PropensityError(f"{snapshot_file} is missing: re-run `propensity score --as-of {latest}`")
    snapshot = pd.read_parquet(snapshot_file)
    snapshot_as_of = pd.Timestamp(latest, tz="UTC")
    store = EventStore(paths.events)
    if not store.has("orders"):
        raise PropensityError(f"no orders in the event store {paths.events}: realised AUC needs them")

    signals: list[ModelSignals] = []
    score_hists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scored = [m for m in model_names() if any(c.startswith(f"{m}__") for c in snapshot.columns)]
    for name in scored:
        loaded = load_model_version(name, alias="champion")
        sig = ModelSignals(model=name, version=str(loaded.version), holdout_auc=_holdout_score(name, loaded.task),
                           task=loaded.task)
        reference = reference_sample(loaded)
        features = list(loaded.feature_names)
        prefix = f"{name}__"
        # The snapshot holds each model's inputs under "<model>__<feature>" (the two services may differ).
        own = [c for c in snapshot.columns if c.startswith(prefix)]
        in_population = snapshot["customer_id"].isin(eligible_ids(store, snapshot_as_of, name))
        current = snapshot.loc[in_population, own].rename(columns={c: c[len(prefix):] for c in own})
        if len(current) < cfg.min_rows or len(reference) < cfg.min_rows:
            sig.notes.append(f"drift not computed: {len(current)} current / {len(reference)} reference rows "
                             f"(< min_rows {cfg.min_rows})")
        else:
            sig.drift = feature_drift(reference, current, features, cfg.psi_bins)
            ref_scores = loaded.predict(reference[features].astype("float64"))
            cur_scores = loaded.predict(current[features].astype("float64"))
            sig.score_psi = psi(ref_scores, cur_scores, cfg.psi_bins)
            score_hists[name] = (ref_scores, cur_scores)
        sig.realised, note = _realised(name, dates, paths, store, cfg)
        if note:
            sig.notes.append(note)
        signals.append(sig)

    result_verdict = verdict(signals, cfg.thresholds)
    out_dir = paths.reports / f"monitor-{latest}"
    report = write_report(signals, result_verdict, latest, score_hists, out_dir)
    result = MonitorResult(result_verdict, signals, report, latest, cfg.thresholds)
    if log_to_mlflow:
        result.mlflow_run_id = _log_to_mlflow(result, cfg)
    log.info("monitoring report: %s", report)
    log.info("verdict: %s", result_verdict.text)
    return result


def _holdout_score(name: str, task: str = "binary") -> float | None:
    """The champion's holdout AUC (binary) or holdout normalised Gini (regression: the holdout score
    when the spec's promotion metric was normalized_gini); None when the tag is missing."""
    from training.champion import TAG_HOLDOUT_AUC, TAG_HOLDOUT_METRIC, TAG_HOLDOUT_SCORE
    from training.tracking import client

    try:
        tags = client().get_model_version_by_alias(name, "champion").tags
        if task == "binary":
            value = tags.get(TAG_HOLDOUT_AUC)
        else:
            value = tags.get(TAG_HOLDOUT_SCORE) if tags.get(TAG_HOLDOUT_METRIC) == "normalized_gini" else None
        return float(value) if value not in (None, "") else None
    except Exception:  # an older registry without the tag: the drop check is skipped
        return None


def _log_to_mlflow(result: MonitorResult, cfg: MonitorConfig) -> str:
    """Aggregates only: PSI values, AUCs, the verdict and the report (which holds no customer ids)."""
    import mlflow

    from training.tracking import ensure_experiment

    experiment_id = ensure_experiment(cfg.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor-{result.snapshot_as_of}") as run:
        mlflow.set_tags({
            "snapshot_as_of": result.snapshot_as_of,
            "verdict": "retrain" if result.verdict.retrain else "ok",
            **{f"{s.model}_version": str(s.version) for s in result.signals},
        })
        mlflow.log_metrics(result.metrics())
        mlflow.log_text(json.dumps(result.verdict.reasons, indent=2), "verdict.json")
        mlflow.log_artifacts(str(result.report.parent), artifact_path="report")
        return run.info.run_id
