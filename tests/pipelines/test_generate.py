"""The synthetic behaviour generator: output contract, determinism, and statistical sanity of the
simulation and of its ground truth (calibration against realised outcomes)."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.contract import PAGE_TYPES
from core.errors import ConfigError, PropensityError
from pipelines.generate import (
    CHURN_DRIVERS,
    CONVERT_DRIVERS,
    GeneratorConfig,
    generate,
    load_generator_config,
)

TABLES = ("customers", "orders", "page_views", "complaints", "ground_truth")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """3k customers x 200 days, generated once for the module (about 4 s)."""
    out = tmp_path_factory.mktemp("generated")
    report = generate(3000, 200, seed=11, out=out, progress=False)
    return report


@pytest.fixture(scope="module")
def labelled(sample):
    """Ground-truth rows whose 60-day future lies inside the window, with realised outcomes and behaviour."""
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"create view {t} as select * from read_parquet('{sample.files[t]}')")
    end = pd.Timestamp(sample.end, tz="UTC") + pd.Timedelta(days=1)
    return con.execute(
        """
        select gt.*,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at >= gt.as_of and o.ordered_at < gt.as_of + interval 60 day) as order_60d,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at >= gt.as_of and o.ordered_at < gt.as_of + interval 14 day) as order_14d,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at < gt.as_of and o.ordered_at >= gt.as_of - interval 90 day) as active,
          (select count(*) from complaints c where c.customer_id = gt.customer_id
                 and c.opened_at < gt.as_of and c.opened_at >= gt.as_of - interval 30 day) as complaints_30d,
          (select count(*) from page_views v where v.customer_id = gt.customer_id
                 and v.viewed_at < gt.as_of and v.viewed_at >= gt.as_of - interval 7 day) as page_views_7d
        from ground_truth gt
        where gt.as_of + interval 60 day <= ?
        """,
        [end.to_pydatetime()],
    ).df()


# ---- output contract ---------------------------------------------------------------------------------
def test_tables_have_the_canonical_columns_and_types(sample):
    expected = {
        "customers": {"customer_id": "string", "signup_at": "timestamp[us, tz=UTC]"},
        "orders": {
            "order_id": "string",
            "customer_id": "string",
            "ordered_at": "timestamp[us, tz=UTC]",
            "amount": "double",
        },
        "page_views": {
            "customer_id": "string",
            "session_id": "string",
            "viewed_at": "timestamp[us, tz=UTC]",
            "page_type": "string",
            "product_id": "string",
        },
        "complaints": {
            "complaint_id": "string",
            "customer_id": "string",
            "opened_at": "timestamp[us, tz=UTC]",
            "channel": "string",
            "category": "string",
            "severity": "int64",
            "resolved_at": "timestamp[us, tz=UTC]",
        },
        "ground_truth": {
            "customer_id": "string",
            "as_of": "timestamp[us, tz=UTC]",
            "p_churn": "double",
            "p_convert": "double",
            "churn_driver": "string",
            "convert_driver": "string",
        },
    }
    for table, columns in expected.items():
        schema = pq.read_schema(sample.files[table])
        actual = {name: str(schema.field(name).type) for name in schema.names}
        for name, kind in columns.items():
            assert actual.get(name) == kind, f"{table}.{name}: {actual.get(name)} != {kind}"
        assert sample.rows[table] > 0, table


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


def test_ground_truth_is_weekly_bounded_and_uses_the_vocabulary(sample):
    truth = pd.read_parquet(sample.files["ground_truth"])
    customers = pd.read_parquet(sample.files["customers"]).set_index("customer_id")
    assert truth.p_churn.between(0, 1).all() and truth.p_convert.between(0, 1).all()
    assert set(truth.churn_driver) <= set(CHURN_DRIVERS) and set(truth.convert_driver) <= set(CONVERT_DRIVERS)
    # Every non-trivial driver occurs.
    assert set(truth.churn_driver) == set(CHURN_DRIVERS)
    assert set(truth.convert_driver) == set(CONVERT_DRIVERS)
    as_of = truth.as_of.drop_duplicates().sort_values()
    assert (as_of.dt.weekday == 0).all() and (as_of == as_of.dt.normalize()).all()
    assert as_of.diff().dropna().eq(pd.Timedelta(days=7)).all()
    assert len(as_of) == 28  # 200 days ending 2026-10-31 hold 28 Mondays
    # One row per customer who signed up before as_of, and only those.
    signup = customers.loc[truth.customer_id, "signup_at"].to_numpy()
    assert (signup < truth.as_of.to_numpy()).all()
    last = truth[truth.as_of == as_of.iloc[-1]]
    assert len(last) == (customers.signup_at < as_of.iloc[-1]).sum()
    assert not truth.duplicated(["customer_id", "as_of"]).any()
    # A customer who has churned never orders again: p_churn 1, p_convert 0.
    gone = truth[truth.p_churn >= 1 - 1e-9]
    assert len(gone) > 0 and (gone.p_convert <= 1e-9).all()


# ---- determinism ---------------------------------------------------------------------------------------
def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(tmp_path):
    a = generate(400, 45, seed=5, out=tmp_path / "a", progress=False)
    b = generate(400, 45, seed=5, out=tmp_path / "b", progress=False)
    c = generate(400, 45, seed=6, out=tmp_path / "c", progress=False)
    assert _digests(a.out) == _digests(b.out)
    assert set(_digests(a.out)) == {f"{t}.parquet" for t in TABLES}
    for table in TABLES:
        assert not pd.read_parquet(a.files[table]).equals(pd.read_parquet(c.files[table])), table
    # The end date pins the calendar: the same seed and size end on the date asked for.
    d = generate(400, 45, seed=5, out=tmp_path / "d", end="2025-06-30", progress=False)
    assert pd.read_parquet(d.files["page_views"]).viewed_at.max() < pd.Timestamp("2025-07-01", tz="UTC")


def test_csv_format_writes_the_same_rows(tmp_path):
    parquet = generate(300, 40, seed=2, out=tmp_path / "p", progress=False)
    csv = generate(300, 40, seed=2, out=tmp_path / "c", fmt="csv", progress=False)
    for table in ("customers", "orders", "page_views", "complaints"):
        assert csv.files[table].suffix == ".csv"
        from_csv = pd.read_csv(csv.files[table])
        assert len(from_csv) == parquet.rows[table] == csv.rows[table]
        assert list(from_csv.columns) == list(pd.read_parquet(parquet.files[table]).columns)
    assert csv.files["ground_truth"].suffix == ".parquet"


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


# ---- errors and atomic output ------------------------------------------------------------------------
def test_bad_arguments_name_the_option_and_leave_earlier_output_alone(tmp_path):
    (tmp_path / "orders.parquet").write_bytes(b"earlier run")
    with pytest.raises(PropensityError, match="--days"):
        generate(10, 0, seed=1, out=tmp_path, progress=False)
    with pytest.raises(PropensityError, match="--shift-at"):
        generate(10, 30, seed=1, out=tmp_path, shift_at="2020-01-01", progress=False)
    with pytest.raises(PropensityError, match="--end"):
        generate(10, 30, seed=1, out=tmp_path, end="31/10/2026", progress=False)
    assert (tmp_path / "orders.parquet").read_bytes() == b"earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet"]  # no staging folder left


def test_config_file_is_strict(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("funnel:\n  entry_rate: 0.05\n")
    assert load_generator_config(good).funnel.entry_rate == 0.05
    bad = tmp_path / "bad.yaml"
    bad.write_text("funnel:\n  entry_rte: 0.05\n")
    with pytest.raises(ConfigError, match="entry_rte"):
        load_generator_config(bad)


def test_project_config_matches_the_built_in_defaults():
    from core.settings import REPO_ROOT

    assert load_generator_config(REPO_ROOT / "configs" / "generate.yaml") == GeneratorConfig()


def test_cli_writes_into_data_raw(project_home):
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--customers", "200", "--days", "30", "--seed", "3", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    raw = project_home / "data" / "raw"
    assert {p.name for p in raw.iterdir()} == {f"{t}.parquet" for t in TABLES}
    assert len(pd.read_parquet(raw / "customers.parquet")) == 200


# ---- statistical sanity (ranges stated in docs/generator.md) -----------------------------------------
@pytest.mark.behaviour
def test_ground_truth_is_calibrated_against_realised_outcomes(labelled):
    # The truth is the simulation's own probability: on average it must match what happened.
    assert len(labelled) > 30_000
    assert abs(labelled.p_churn.mean() - (1 - labelled.order_60d.mean())) < 0.02
    assert abs(labelled.p_convert.mean() - labelled.order_14d.mean()) < 0.02
    # ... and per decile of p_churn, not only overall.
    deciles = pd.qcut(labelled.p_churn, 10, duplicates="drop")
    by_decile = labelled.groupby(deciles, observed=True).agg(
        p=("p_churn", "mean"), realised=("order_60d", "mean")
    )
    assert (by_decile.p - (1 - by_decile.realised)).abs().max() < 0.06


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


def roc_auc_score(labels, scores) -> float:
    """AUC by the rank-sum (Mann-Whitney) formula; avoids importing scikit-learn for one number."""
    labels = np.asarray(labels, dtype=bool)
    ranks = pd.Series(np.asarray(scores)).rank().to_numpy()
    positives, negatives = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)


@pytest.mark.behaviour
def test_truth_ranks_outcomes_well(labelled):
    # The oracle's ranking is far better than chance: the ceiling later models are measured against.
    assert roc_auc_score(~labelled.order_60d, labelled.p_churn) > 0.75
    assert roc_auc_score(labelled.order_14d, labelled.p_convert) > 0.75
    assert np.isfinite(labelled[["p_churn", "p_convert"]].to_numpy()).all()
