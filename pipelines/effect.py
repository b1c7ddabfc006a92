"""``propensity effect``: did the actions work? Treated against control, per rule.

Every follow-up list holds, per rule, a treatment group (the customers the team contacts) and a random
control group (held out, no contact: ``serving.actions.assign_groups``). Once a list's outcome window has
passed, the difference between the two groups is the effect of the action, free of the selection that
put the customers on the list: both groups were chosen by the same rule, the split between them is a
coin toss.

Per rule: the outcome is the label of the model the rule explains with (``labels.positive`` of its spec:
e.g. no order within the horizon, or an order within it), measured from the list's
as-of date over that model's horizon, for every listed customer (not only the model's training
population). Reported: each group's rate, the difference (treated - control) with a 95% interval (normal
approximation, unpooled), the number needed to treat when the interval excludes 0, and when orders carry
amounts the revenue per customer in the window, treated - control, with its interval. A rule with fewer
than ``min_customers`` in either group says so instead of printing noise. HTML + JSON in
``data/reports/effect-<date>/``, logged to MLflow (aggregates only).
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import PropensityError

log = logging.getLogger("propensity.effect")

Z95 = 1.959963984540054


@dataclass
class RuleEffect:
    rule: str
    model: str
    outcome: str  # what the rate counts, e.g. "no order within 60 days"
    lists: int
    treated: int
    control: int
    treated_rate: float | None = None
    control_rate: float | None = None
    difference: float | None = None  # treated - control
    ci_low: float | None = None
    ci_high: float | None = None
    number_needed_to_treat: float | None = None
    revenue_difference: float | None = None  # per customer, treated - control
    revenue_ci_low: float | None = None
    revenue_ci_high: float | None = None
    note: str = ""


@dataclass
class EffectReport:
    since: str | None
    until: str
    rules: list[RuleEffect] = field(default_factory=list)
    report: Path | None = None
    mlflow_run_id: str | None = None


def difference_interval(treated: np.ndarray, control: np.ndarray) -> tuple[float, float, float]:
    """Mean(treated) - mean(control) and its 95% interval (normal approximation, unpooled variances):
    for 0/1 outcomes the usual Wald interval of a difference of proportions, for amounts Welch's."""
    t, c = np.asarray(treated, dtype="float64"), np.asarray(control, dtype="float64")
    diff = float(t.mean() - c.mean())
    se = float(np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c)))
    return diff, diff - Z95 * se, diff + Z95 * se


def outcomes(store, as_of: pd.Timestamp, customer_ids: pd.Series, horizon_days: int) -> pd.DataFrame:
    """Per customer: orders and spend in [as_of, as_of + horizon) (0 when none), from the event store."""
    import duckdb

    from core.contract import TABLES

    has_amount = "amount" in store.columns("orders") if store.has("orders") else False
    spend = "coalesce(sum(amount), 0)" if has_amount else "NULL"
    ids = pd.DataFrame({"customer_id": customer_ids.astype(str).unique()})
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("ids", ids)
    time_col = TABLES["orders"].time_column
    got = con.execute(
        f"SELECT customer_id, count(*) AS orders, {spend} AS spend FROM read_parquet('{store.glob('orders')}') "
        f"WHERE {time_col} >= $start AND {time_col} < $end AND customer_id IN (SELECT customer_id FROM ids) "
        "GROUP BY customer_id",
        {"start": as_of.to_pydatetime(), "end": (as_of + pd.Timedelta(days=horizon_days)).to_pydatetime()},
    ).df()
    out = ids.merge(got, on="customer_id", how="left")
    out["orders"] = out["orders"].fillna(0).astype("int64")
    out["spend"] = out["spend"].astype("float64").fillna(0.0) if has_amount else np.nan
    return out


def effect(rule: str | None = None, since: str | None = None, min_customers: int = 50,
           log_to_mlflow: bool = True) -> EffectReport:
    """Compare treated with control for every rule (or ``rule``) over the lists since ``since`` whose
    outcome window has passed; write the report."""
    import pyarrow.parquet as pq

    from core.events import EventStore
    from core.settings import SCORES_FILE, project_paths
    from core.specs import load_spec
    from serving.actions import CONTROL, TREATMENT, load_actions_config
    from training.labels import data_end

    paths = project_paths()
    store = EventStore(paths.events)
    if not store.has("orders"):
        raise PropensityError(f"no orders in the event store {paths.events}: outcomes need them")
    cfg = load_actions_config()
    rules = {r.name: r for r in cfg.rules}
    if rule is not None and rule not in rules:
        raise PropensityError(f"--rule {rule!r}: not a rule of configs/actions.yaml ({', '.join(rules)})")
    wanted = [rules[rule]] if rule else list(rules.values())
    specs = {r.explain: load_spec(r.explain) for r in wanted}
    end = data_end(store, next(iter(specs.values())).cutoffs)
    dates = [d for d in paths.scored_dates() if since is None or d >= since]
    pooled: dict[str, list[pd.DataFrame]] = {r.name: [] for r in wanted}
    for day in dates:
        path = paths.scores / day / SCORES_FILE
        if "group" not in pq.read_schema(path).names:
            continue  # listed before control groups existed
        listed = pd.read_parquet(path, columns=["customer_id", "action_rule", "group"])
        as_of = pd.Timestamp(day, tz="UTC")
        for r in wanted:
            horizon = specs[r.explain].labels.horizon_days
            if as_of + pd.Timedelta(days=horizon) > end:
                continue  # outcome window not over yet
            rows = listed[(listed["action_rule"] == r.name) & listed["group"].isin([TREATMENT, CONTROL])]
            if rows.empty:
                continue
            seen = outcomes(store, as_of, rows["customer_id"], horizon)
            pooled[r.name].append(rows.merge(seen, on="customer_id", how="left").assign(as_of=day))

    results = []
    for r in wanted:
        spec = specs[r.explain]
        positive = getattr(spec.labels, "positive", "order")
        horizon = spec.labels.horizon_days
        what = f"{'no order' if positive == 'no_order' else 'an order'} within {horizon} days"
        frames = pooled[r.name]
        if not frames:
            results.append(RuleEffect(r.name, r.explain, what, 0, 0, 0, note="no list with a matured outcome window"))
            continue
        rows = pd.concat(frames, ignore_index=True)
        y = (rows["orders"] == 0) if positive == "no_order" else (rows["orders"] > 0)
        treated, control = (rows["group"] == TREATMENT).to_numpy(), (rows["group"] == CONTROL).to_numpy()
        res = RuleEffect(r.name, r.explain, what, len(frames), int(treated.sum()), int(control.sum()))
        if min(res.treated, res.control) < min_customers:
            res.note = (f"too few customers to say: {res.treated} treated, {res.control} control "
                        f"(need {min_customers} in each)")
            results.append(res)
            continue
        yv = y.to_numpy(dtype="float64")
        res.treated_rate, res.control_rate = float(yv[treated].mean()), float(yv[control].mean())
        res.difference, res.ci_low, res.ci_high = difference_interval(yv[treated], yv[control])
        if res.ci_low > 0 or res.ci_high < 0:
            res.number_needed_to_treat = float(1.0 / abs(res.difference))
        if rows["spend"].notna().any():
            spend = rows["spend"].to_numpy(dtype="float64")
            res.revenue_difference, res.revenue_ci_low, res.revenue_ci_high = difference_interval(
                spend[treated], spend[control])
        results.append(res)

    report = EffectReport(since, f"{end - pd.Timedelta(days=1):%Y-%m-%d}", results)
    report.report = write_report(report, paths.reports / f"effect-{report.until}")
    if log_to_mlflow:
        report.mlflow_run_id = _log_to_mlflow(report)
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_report(report: EffectReport, folder: Path) -> Path:
    """report.json and index.html, written into a temp folder and swapped in."""
    import json

    from core.io import atomic_path

    rows = "".join(
        f"<tr><td>{html.escape(e.rule)}</td><td>{html.escape(e.outcome)}</td><td>{e.lists}</td>"
        f"<td>{e.treated}</td><td>{e.control}</td><td>{_fmt(e.treated_rate)}</td><td>{_fmt(e.control_rate)}</td>"
        f"<td>{_fmt(e.difference)} [{_fmt(e.ci_low)}, {_fmt(e.ci_high)}]</td><td>{_fmt(e.number_needed_to_treat, 1)}</td>"
        f"<td>{_fmt(e.revenue_difference, 2)}</td><td>{html.escape(e.note)}</td></tr>"
        for e in report.rules
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>propensity: effect of the actions</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd}</style></head><body><h1>Effect of the actions: treated against control</h1>"
        f"<p>Lists since {html.escape(report.since or 'the first')} whose outcome window ended by {report.until}. "
        "Difference = treated rate - control rate, 95% interval.</p><table><tr><th>rule</th><th>outcome</th>"
        "<th>lists</th><th>treated</th><th>control</th><th>treated rate</th><th>control rate</th>"
        "<th>difference [95% CI]</th><th>number needed to treat</th><th>revenue / customer, treated - control</th>"
        f"<th>note</th></tr>{rows}</table></body></html>"
    )
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "report.json").write_text(json.dumps(
            {"since": report.since, "until": report.until, "rules": [asdict(e) for e in report.rules]}, indent=2))
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return folder / "index.html"


def _log_to_mlflow(report: EffectReport) -> str:
    import mlflow

    from training.tracking import ensure_experiment

    with mlflow.start_run(experiment_id=ensure_experiment("effect"), run_name=f"effect-{report.until}") as run:
        for e in report.rules:
            for key in ("treated_rate", "control_rate", "difference", "ci_low", "ci_high", "revenue_difference"):
                value = getattr(e, key)
                if value is not None:
                    mlflow.log_metric(f"{e.rule}.{key}", value)
            mlflow.log_metric(f"{e.rule}.treated", e.treated)
            mlflow.log_metric(f"{e.rule}.control", e.control)
        mlflow.log_artifacts(str(report.report.parent), artifact_path="effect")
        return run.info.run_id
