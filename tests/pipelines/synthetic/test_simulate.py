"""The day-by-day simulation: believable, consistent events; the behaviour shift; the stated base rates
(docs/generator.md) measured on realised outcomes."""

from __future__ import annotations

import pandas as pd
import pytest

from core.contract import PAGE_TYPES
from pipelines.synthetic import generate


def test_events_are_believable_and_consistent(sample):
    customers = pd.read_parquet(sample.files["customers"])
    orders = pd.read_parquet(sample.files["orders"])
    views = pd.read_parquet(sample.files["page_views"])
    complaints = pd.read_parquet(sample.files["complaints"])
    window_start = pd.Timestamp(sample.start, tz="UTC")
    window_end = pd.Timestamp(sample.end, tz="UTC") + pd.Timedelta(days=1)

    assert customers.customer_id.is_unique and orders.order_id.is_unique and complaints.complaint_id.is_unique
    # Some customers joined before the window, most during it; nobody after it.
    assert 0.2 < (customers.signup_at < window_start).mean() < 0.6
    assert customers.signup_at.max() < window_end
    known = set(customers.customer_id)
    for frame in (orders, views, complaints):
        assert set(frame.customer_id) <= known
    # Events stay inside the window (a customer's last order before it is the one exception).
    assert views.viewed_at.between(window_start, window_end, inclusive="left").all()
    assert (orders.ordered_at < window_end).all()
    assert complaints.opened_at.between(window_start, window_end, inclusive="left").all()
    # Orders: positive amounts, mostly after a cart/checkout session.
    assert (orders.amount > 0).all()
    assert 20 < orders.amount.median() < 120
    assert (orders.channel == "web").mean() > 0.6
    checkout_sessions = views[views.page_type == "checkout"].session_id.nunique()
    assert checkout_sessions >= (orders.channel == "web").sum() * 0.9
    # Sessions of varying depth over all seven page types; product pages carry a product id.
    assert set(views.page_type) == set(PAGE_TYPES)
    depth = views.groupby("session_id").size()
    assert depth.min() == 1 and depth.max() >= 10 and 2 < depth.mean() < 8
    assert views.loc[views.page_type == "product", "product_id"].notna().all()
    assert views.loc[views.page_type != "product", "product_id"].isna().all()
    # Complaints: severities 1-3, resolution after opening, some never resolved.
    assert set(complaints.severity) <= {1, 2, 3} and len(set(complaints.severity)) == 3
    resolved = complaints.dropna(subset=["resolved_at"])
    assert (resolved.resolved_at > resolved.opened_at).all()
    assert 0.02 < complaints.resolved_at.isna().mean() < 0.4
    # Event volume fit for the feature build: a few dozen to ~100 events per customer-year.
    per_year = (len(orders) + len(views) + len(complaints)) / len(customers) * 365 / sample.days
    assert 20 < per_year < 130


def test_shift_changes_behaviour_from_the_date_on(tmp_path):
    plain = generate(2000, 120, seed=4, out=tmp_path / "plain", progress=False)
    shifted = generate(2000, 120, seed=4, out=tmp_path / "shift", shift_at="2026-09-01", progress=False)
    cut = pd.Timestamp("2026-09-01", tz="UTC")

    def daily(report, table, column):
        frame = pd.read_parquet(report.files[table], columns=[column])
        before = (frame[column] < cut).sum() / (cut - pd.Timestamp(report.start, tz="UTC")).days
        after = (frame[column] >= cut).sum() / 61
        return before, after

    # Identical before the shift (same random stream), different after it.
    p_before, p_after = daily(plain, "page_views", "viewed_at")
    s_before, s_after = daily(shifted, "page_views", "viewed_at")
    assert s_before == p_before
    assert s_after < 0.9 * p_after
    amounts = {}
    for name, report in (("plain", plain), ("shift", shifted)):
        orders = pd.read_parquet(report.files["orders"])
        amounts[name] = orders.loc[orders.ordered_at >= cut, "amount"].mean()
    assert amounts["shift"] < 0.92 * amounts["plain"]


# ---- statistical sanity (ranges stated in docs/generator.md) -----------------------------------------
@pytest.mark.behaviour
def test_base_rates_are_in_the_stated_ranges(labelled):
    active = labelled[labelled.active]
    churn_rate = 1 - active.order_60d.mean()
    assert 0.15 <= churn_rate <= 0.45, churn_rate
    browsers = labelled[labelled.page_views_7d > 0]
    conversion = browsers.order_14d.mean()
    assert 0.20 <= conversion <= 0.55, conversion
    # Browsing customers convert more than the rest.
    assert conversion > labelled[labelled.page_views_7d == 0].order_14d.mean() + 0.1


@pytest.mark.behaviour
def test_complaints_raise_churn(labelled):
    active = labelled[labelled.active]
    with_complaint = active[active.complaints_30d > 0]
    without = active[active.complaints_30d == 0]
    assert len(with_complaint) > 500
    assert (1 - with_complaint.order_60d.mean()) > (1 - without.order_60d.mean()) + 0.05
    truth = active.groupby(active.churn_driver).p_churn.mean()
    assert truth["complaints"] > truth["none"]


@pytest.mark.behaviour
def test_deeper_browsing_converts_more(labelled):
    browsers = labelled[labelled.page_views_7d > 0]
    shallow = browsers[browsers.page_views_7d <= browsers.page_views_7d.quantile(0.25)]
    deep = browsers[browsers.page_views_7d >= browsers.page_views_7d.quantile(0.75)]
    assert deep.order_14d.mean() > shallow.order_14d.mean() + 0.03
    # In the truth, customers in a buying stage carry a conversion driver and convert far more.
    driven = labelled[labelled.convert_driver != "none"]
    assert driven.order_14d.mean() > 2 * labelled[labelled.convert_driver == "none"].order_14d.mean()
