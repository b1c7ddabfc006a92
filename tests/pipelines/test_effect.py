"""`propensity effect` on a constructed history with a known effect: lists whose treated customers churn
at 0.35 and whose control customers at 0.50 for one rule (a true difference of -0.15), and no difference
for another rule; the report's intervals must contain the truth, and a rule with too few customers says so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.events import EventStore
from core.settings import SCORES_FILE, project_paths


def _history(rng, rules: dict[str, tuple[float, float]], weeks: int, per_rule: int):
    """Lists (one per week) and the orders after them: per rule (treated churn rate, control churn rate)."""
    start = pd.Timestamp("2025-01-06", tz="UTC")
    orders, lists = [], {}
    for w in range(weeks):
        as_of = start + pd.Timedelta(weeks=w)
        rows = []
        for rule, (p_treated, p_control) in rules.items():
            for i in range(per_rule):
                cid = f"{rule}-{w}-{i}"
                group = "control" if i % 5 == 0 else "treatment"  # 20% held out
                churns = rng.random() < (p_control if group == "control" else p_treated)
                rows.append((cid, rule, group))
                orders.append((cid, as_of - pd.Timedelta(days=20), 30.0))  # active before the list
                if not churns:
                    orders.append((cid, as_of + pd.Timedelta(days=int(rng.integers(1, 59))), 50.0))
        lists[f"{as_of:%Y-%m-%d}"] = pd.DataFrame(rows, columns=["customer_id", "action_rule", "group"])
    # Someone orders at the very end so every list's 60-day window has matured.
    orders.append(("tail", start + pd.Timedelta(weeks=weeks + 12), 1.0))
    frame = pd.DataFrame(orders, columns=["customer_id", "ordered_at", "amount"])
    frame["order_id"] = [f"o{i}" for i in range(len(frame))]
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True).astype("datetime64[us, UTC]")
    return frame, lists


def test_the_interval_contains_the_true_effect_and_zero_for_a_rule_without_one(project_home):
    from pipelines.effect import effect
    from serving.actions import load_actions_config

    rules = [r.name for r in load_actions_config().rules if r.explain == "churn"]
    assert len(rules) >= 3
    effective, useless, tiny = rules[:3]
    rng = np.random.default_rng(11)
    orders, lists = _history(rng, {effective: (0.35, 0.50), useless: (0.45, 0.45)}, weeks=12, per_rule=400)
    small, small_lists = _history(rng, {tiny: (0.3, 0.5)}, weeks=1, per_rule=20)
    paths = project_paths()
    EventStore(paths.events).replace_months({"orders": pd.concat([orders, small.assign(
        order_id=lambda f: "s" + f["order_id"])], ignore_index=True)}, {"families": {"orders": "present"}})
    for day, listed in lists.items():
        folder = paths.scores / day
        folder.mkdir(parents=True)
        extra = small_lists.get(day)
        pd.concat([listed, extra] if extra is not None else [listed]).to_parquet(folder / SCORES_FILE)

    report = effect(min_customers=50, log_to_mlflow=True)
    by_rule = {e.rule: e for e in report.rules}
    hit = by_rule[effective]
    assert hit.lists == 12 and hit.treated > 3 * hit.control > 0
    assert hit.ci_low < -0.15 < hit.ci_high and hit.ci_high < 0  # contains the truth, excludes 0
    assert hit.number_needed_to_treat is not None
    none = by_rule[useless]
    assert none.ci_low < 0 < none.ci_high and none.number_needed_to_treat is None
    assert "too few customers" in by_rule[tiny].note and by_rule[tiny].difference is None
    assert hit.revenue_difference is not None and hit.revenue_difference > 0  # fewer churners, more spend
    assert (report.report.parent / "report.json").is_file() and report.mlflow_run_id
