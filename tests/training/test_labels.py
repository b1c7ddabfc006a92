"""Labels, eligibility, the time split and the minimum-data guard, on crafted event logs."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from core.errors import ConfigError, NotEnoughDataError
from core.events import EventStore
from core.specs import ActiveBuyersLabels, BrowsersLabels, Cutoffs, MinData, ModelSpec, Split
from training.labels import TEST, TRAIN, VALIDATION, build_labels, check_min_data, label_rows, plan_split

CUTOFF = pd.Timestamp("2026-06-01", tz="UTC")


def at(days: float) -> pd.Timestamp:
    return CUTOFF + pd.Timedelta(days=days)


def write_store(root, orders, views=()) -> EventStore:
    store = EventStore(root)
    tables = {"orders": pd.DataFrame(
        [(f"o{i}", c, t, 10.0) for i, (c, t) in enumerate(orders)],
        columns=["order_id", "customer_id", "ordered_at", "amount"])}
    if views:
        tables["page_views"] = pd.DataFrame(
            [(c, f"s{i}", t, "product") for i, (c, t) in enumerate(views)],
            columns=["customer_id", "session_id", "viewed_at", "page_type"])
    store.replace_months(tables)
    return store


def one_cutoff() -> pd.DataFrame:
    return pd.DataFrame({"cutoff": pd.Series([CUTOFF]).astype("datetime64[us, UTC]"), "split": [TEST]})


def test_churn_eligibility_and_label_windows(tmp_path):
    store = write_store(tmp_path, [
        ("stays", at(-10)), ("stays", at(5)),        # active, orders again: not churned
        ("leaves", at(-100)),                          # active, no order in 60 days: churned
        ("too_old", at(-181)), ("too_old", at(-200)),  # no order in the prior 180 days: not eligible
        ("at_cutoff", at(0)),                          # an order at the cutoff is after it: not eligible
        ("late", at(-30)), ("late", at(60)),          # next order exactly at the horizon end: churned
        ("edge", at(-180)), ("edge", at(59.9)),       # first day of the window counts; order inside horizon
    ])
    labels = build_labels(store, ActiveBuyersLabels(kind="active_buyers"), one_cutoff()).set_index("customer_id")["label"]
    assert labels.to_dict() == {"stays": 0, "leaves": 1, "late": 1, "edge": 0}


def test_conversion_eligibility_and_labels(tmp_path):
    store = write_store(
        tmp_path,
        orders=[("buyer", at(3)), ("recent_buyer", at(-20)), ("recent_buyer", at(2)), ("slow", at(14))],
        views=[("buyer", at(-2)), ("recent_buyer", at(-1)), ("idle", at(-5)), ("old_visit", at(-15)),
               ("slow", at(-1)), ("old_visit", at(1))],
    )
    labels = build_labels(store, BrowsersLabels(kind="browsers"), one_cutoff()).set_index("customer_id")["label"]
    # recent_buyer ordered in the prior 30 days, old_visit browsed only before the 14-day window
    assert labels.to_dict() == {"buyer": 1, "idle": 0, "slow": 0}


def test_windows_come_from_config(tmp_path):
    store = write_store(tmp_path, [("a", at(-100)), ("a", at(20))])
    short = ActiveBuyersLabels(kind="active_buyers", active_window_days=90, horizon_days=60)
    long_horizon_short_window = ActiveBuyersLabels(kind="active_buyers", active_window_days=120, horizon_days=10)
    assert build_labels(store, short, one_cutoff()).empty
    assert build_labels(store, long_horizon_short_window, one_cutoff())["label"].tolist() == [1]


def test_split_is_by_time_with_purged_gaps():
    end = pd.Timestamp("2026-11-01", tz="UTC")
    plan = plan_split(end, 60, Cutoffs(every_days=7), Split(validation_cutoffs=3, train_cutoffs=5))
    horizon = pd.Timedelta(days=60)
    assert plan.test + horizon <= end < plan.test + horizon + pd.Timedelta(days=7)  # latest matured
    assert max(plan.validation) + horizon <= plan.test
    assert max(plan.train) + horizon <= min(plan.validation)
    assert len(plan.train) == 5 and len(plan.validation) == 3
    assert all((plan.test - c) % pd.Timedelta(days=7) == pd.Timedelta(0) for c in plan.train + plan.validation)


def test_no_label_window_reaches_a_later_split(tmp_path):
    # Weekly orders for two customers across a year; one stops mid-way.
    days = pd.date_range("2025-09-01", "2026-10-31", freq="7D", tz="UTC")
    orders = [("steady", d) for d in days] + [("stops", d) for d in days if d < pd.Timestamp("2026-07-01", tz="UTC")]
    store = write_store(tmp_path, orders)
    labels = ActiveBuyersLabels(kind="active_buyers", horizon_days=60)
    plan, rows = label_rows(store, labels, Cutoffs(), Split(validation_cutoffs=2, train_cutoffs=4))
    horizon = pd.Timedelta(days=60)
    first_val = rows.loc[rows["split"] == VALIDATION, "event_timestamp"].min()
    test_cutoff = rows.loc[rows["split"] == TEST, "event_timestamp"].min()
    assert (rows.loc[rows["split"] == TRAIN, "event_timestamp"] + horizon <= first_val).all()
    assert (rows.loc[rows["split"] == VALIDATION, "event_timestamp"] + horizon <= test_cutoff).all()
    assert test_cutoff + horizon <= plan.data_end


def test_min_data_guard_names_what_is_missing():
    rows = pd.DataFrame({"split": [TRAIN] * 10 + [VALIDATION] * 5 + [TEST] * 5,
                         "label": [1, 0] * 5 + [0] * 5 + [1] * 5})
    with pytest.raises(NotEnoughDataError) as err:
        check_min_data(rows, MinData(train_rows=10, train_positives=6, validation_rows=5, validation_positives=1,
                                     test_rows=6, test_positives=1), "churn")
    msg = str(err.value)
    assert "train split has 5 positive labels, needs >= 6" in msg
    assert "validation split has 0 positive labels, needs >= 1" in msg
    assert "test split has 5 rows, needs >= 6" in msg
    assert "configs/models/churn.yaml" in msg


def test_too_short_history_says_so(tmp_path):
    store = write_store(tmp_path, [("a", at(-10)), ("a", at(-3))])
    with pytest.raises(NotEnoughDataError, match="no cutoff has matured labels"):
        label_rows(store, ActiveBuyersLabels(kind="active_buyers"), Cutoffs(), Split())


def test_config_rejects_unknown_key(tmp_path):
    from core.config import load_config

    path = tmp_path / "churn.yaml"
    path.write_text("name: churn\nfeature_service: churn_v1\nlabels: {kind: active_buyers, horizon_dayz: 30}\n"
                    "tuning: {search_space: {}}\nbands: {high: 0.6, medium: 0.3}\n"
                    "baseline: {feature: days_since_last_order, higher_means_positive: true}\n")
    with pytest.raises(ConfigError, match=r"labels\.active_buyers\.horizon_dayz"):
        load_config(path, ModelSpec)


def test_short_history_adapts_then_says_what_it_needs():
    end = pd.Timestamp("2024-07-01", tz="UTC")
    cutoffs = Cutoffs(anchor=dt.date(2024, 7, 1))
    # 280 days, 90-day horizon with purge: 3 validation cutoffs leave no train cutoff, 2 do.
    plan = plan_split(end, 90, cutoffs, Split(validation_cutoffs=3), earliest=end - pd.Timedelta(days=280))
    assert len(plan.validation) == 2 and plan.train  # one fewer is enough here
    assert plan.train[-1] + pd.Timedelta(days=90) <= plan.validation[0]
    with pytest.raises(NotEnoughDataError) as err:
        plan_split(end, 90, cutoffs, Split(), earliest=end - pd.Timedelta(days=200), config_file="my/churn.yaml")
    msg = str(err.value)
    assert "needs about" in msg and "the data has 200 days" in msg and "my/churn.yaml" in msg
    assert "split.purge" in msg and "labels.horizon_days" in msg


def test_future_spend_labels_sum_the_amount_in_the_horizon(tmp_path):
    from core.specs import FutureSpendLabels

    store = write_store(tmp_path, [("a", at(-10)), ("a", at(5)), ("a", at(40)), ("b", at(-3)), ("c", at(5))])
    labels = build_labels(store, FutureSpendLabels(kind="future_spend", horizon_days=30), one_cutoff())
    spend = labels.set_index("customer_id")["label"]
    assert labels["label"].dtype == "float64"
    # a: one order of 10.0 inside the 30 days after the cutoff (day 40 is beyond); b: none; c: not
    # active before the cutoff, so not in the population.
    assert spend.to_dict() == {"a": 10.0, "b": 0.0}


def test_without_purge_test_validation_sits_right_before_the_test_cutoff():
    """What the backtest uses: no gap between validation and the internal test; train stays purged."""
    end = pd.Timestamp("2026-11-01", tz="UTC")
    horizon, week = pd.Timedelta(days=60), pd.Timedelta(days=7)
    purged = plan_split(end, 60, Cutoffs(every_days=7), Split(validation_cutoffs=3, train_cutoffs=5))
    plan = plan_split(end, 60, Cutoffs(every_days=7), Split(validation_cutoffs=3, train_cutoffs=5, purge_test=False))
    assert plan.test == purged.test
    assert max(plan.validation) == plan.test - week
    assert max(plan.train) + horizon <= min(plan.validation)
    assert min(plan.train) - min(purged.train) >= horizon - week  # training moves a horizon closer to the test
