"""customer_rhythm and customer_spend_rhythm: the BG/NBD and Gamma-Gamma fits stored with every snapshot
and the readings derived from them (btyd_p_alive, btyd_expected_orders, btyd_p_no_order,
btyd_expected_spend), against fits on a summary computed here from the raw orders with pandas, offline
and online alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.settings import project_paths
from features import btyd
from features.build import build_features, built_dates, read_snapshot
from features.derived import add_derived
from features.retrieval import historical_features, model_feature_names, online_features
from features.settings import FeaturesConfig, RhythmConfig, SnapshotConfig
from features.store import apply, materialize
from tests.features.conftest import END, write_store

READINGS = ["btyd_p_alive", "btyd_expected_orders", "btyd_p_no_order"]
PARAMS = ["btyd_r", "btyd_alpha", "btyd_a", "btyd_b"]


def repeat_buyers(n: int = 300, days: int = 300, seed: int = 3) -> dict[str, pd.DataFrame]:
    """Customers buying at their own Poisson rate until they drop out (the BG/NBD story), orders ending
    before END; some buy twice on one day (one buying occasion for BG/NBD)."""
    rng = np.random.default_rng(seed)
    start = END - pd.Timedelta(days=days)
    rows = []
    for i in range(n):
        t = rng.uniform(0, days * 0.6)
        rate, quit_after = rng.gamma(1.5, 1 / 20), rng.geometric(0.2)
        nu = rng.gamma(3.0, 1 / 60)  # the customer's own value per order: Gamma(2, nu) (Gamma-Gamma's story)
        for k in range(50):
            rows.append((f"c{i:03d}", start + pd.Timedelta(days=t), rng.gamma(2.0, 1 / nu)))
            if rng.random() < 0.1:  # a second order an hour later
                rows.append((f"c{i:03d}", start + pd.Timedelta(days=t, hours=1), rng.gamma(2.0, 1 / nu)))
            t += rng.exponential(1 / rate)
            if k + 1 >= quit_after or t >= days:
                break
    orders = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "amount"])
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], utc=True).astype("datetime64[us, UTC]")
    orders["order_id"] = [f"o{k}" for k in range(len(orders))]
    return {"orders": orders}


def bgnbd_summary(events: pd.DataFrame, time_col: str, day: pd.Timestamp) -> pd.DataFrame:
    """BG/NBD's summary per customer from the events before ``day``, counted per UTC day."""
    before = events[events[time_col] < day]
    days = before.assign(d=before[time_col].dt.floor("D")).groupby("customer_id")["d"]
    out = pd.DataFrame({"x": days.nunique() - 1, "first": days.min(), "last": days.max()})
    out["t_x"] = (out["last"] - out["first"]).dt.days.astype(float)
    out["T"] = (day - out["first"]).dt.days.astype(float)
    return out


def summary_at(orders: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    """bgnbd_summary of the orders, and Gamma-Gamma's m."""
    out = bgnbd_summary(orders, "ordered_at", day)
    before = orders[orders["ordered_at"] < day]
    # Gamma-Gamma's m: the mean spend of the repeat order days (the first order day left out).
    spend = before.assign(d=before["ordered_at"].dt.floor("D")).groupby(["customer_id", "d"])["amount"].sum()
    first = spend.groupby(level=0).first()  # days sorted within each customer
    out["m"] = ((spend.groupby(level=0).sum() - first) / out["x"]).where(out["x"] > 0)
    return out


@pytest.fixture
def rhythm_home(project_home):
    tables = repeat_buyers()
    write_store(project_home, tables)
    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=28), rhythm=RhythmConfig(horizon_days=45))
    build_features(END.date(), config=config)
    return tables["orders"], config


def test_each_snapshot_stores_the_fit_of_its_own_history(rhythm_home):
    orders, _ = rhythm_home
    sources = project_paths().feature_sources
    for day in built_dates(sources):
        snap = read_snapshot(sources, day, "customer_rhythm")
        ref = summary_at(orders, pd.Timestamp(day, tz="UTC"))
        fit = btyd.fit(ref["x"], ref["t_x"], ref["T"])
        assert snap[PARAMS].nunique().eq(1).all()  # one fit per snapshot
        got = snap.iloc[0]
        # Both are maximum likelihood on the same summaries: the same optimum. a and b lie on a flat ridge
        # of the likelihood (only a / (a + b) is sharp here), so the likelihoods are compared, and r, alpha.
        stored = btyd.log_likelihood(tuple(got[p] for p in PARAMS), ref["x"], ref["t_x"], ref["T"]).sum()
        assert stored == pytest.approx(fit.log_likelihood, rel=1e-5)
        np.testing.assert_allclose([got["btyd_r"], got["btyd_alpha"]], [fit.r, fit.alpha], rtol=2e-2)
        order_days = snap.set_index("customer_id")["order_days"]
        assert (order_days.reindex(ref.index) == ref["x"] + 1).all()


def test_readings_offline_and_online_equal_the_fit_applied_to_the_summary(rhythm_home):
    orders, config = rhythm_home
    day = pd.Timestamp(max(built_dates(project_paths().feature_sources)), tz="UTC")
    ref = summary_at(orders, day)
    snap = read_snapshot(project_paths().feature_sources, day.date(), "customer_rhythm").iloc[0]
    model = btyd.BGNBD(*(snap[p] for p in PARAMS))
    want = pd.DataFrame({
        "btyd_p_alive": model.p_alive(ref["x"], ref["t_x"], ref["T"]),
        "btyd_expected_orders": model.expected_purchases(45.0, ref["x"], ref["t_x"], ref["T"]),
        "btyd_p_no_order": model.p_no_purchase(45.0, ref["x"], ref["t_x"], ref["T"]),
    }, index=ref.index)
    ids = list(ref.index)
    offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": day}), "churn_v2", config)
    np.testing.assert_allclose(offline[READINGS].to_numpy(), want.loc[ids].to_numpy(), rtol=1e-9)
    apply(config)
    materialize(config=config)
    online = online_features(ids, "churn_v2", as_of=day, config=config)
    np.testing.assert_allclose(online[READINGS].to_numpy(), want.loc[ids].to_numpy(), rtol=1e-9)
    # A customer of every kind is there: likely gone, surely alive (one order day: no dropout yet).
    assert want["btyd_p_alive"].min() < 0.5 and (want.loc[ref["x"] == 0, "btyd_p_alive"] == 1).all()


def test_readings_follow_the_date_asked_for(rhythm_home):
    """Like the day counts: a week after the snapshot with no new order, the customer looks less alive."""
    _, config = rhythm_home
    day = pd.Timestamp(max(built_dates(project_paths().feature_sources)), tz="UTC")
    snap = read_snapshot(project_paths().feature_sources, day.date(), "customer_rhythm")
    snap = snap[snap["order_days"] > 1].head(50)
    recency = read_snapshot(project_paths().feature_sources, day.date(), "customer_recency")
    cadence = read_snapshot(project_paths().feature_sources, day.date(), "customer_cadence")
    rows = snap.merge(recency, on=["customer_id", "event_timestamp"]).merge(cadence, on=["customer_id", "event_timestamp"])
    now, later = add_derived(rows, day, config), add_derived(rows, day + pd.Timedelta(days=7), config)
    assert (later["btyd_p_alive"] <= now["btyd_p_alive"] + 1e-12).all()
    assert (later["btyd_p_no_order"] >= now["btyd_p_no_order"] - 1e-12).all()
    assert (later["btyd_p_alive"] < now["btyd_p_alive"]).any()


def test_a_history_without_repeat_orders_gives_null_readings(project_home):
    orders = pd.DataFrame({"customer_id": [f"c{i}" for i in range(20)], "order_id": [f"o{i}" for i in range(20)],
                           "ordered_at": pd.to_datetime([END - pd.Timedelta(days=3 + i) for i in range(20)], utc=True)
                           .astype("datetime64[us, UTC]"), "amount": 5.0})
    write_store(project_home, {"orders": orders})
    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=0))
    build_features(END.date(), config=config)
    snap = read_snapshot(project_paths().feature_sources, END.date(), "customer_rhythm")
    assert snap[PARAMS].isna().all().all() and (snap["order_days"] == 1).all()
    got = historical_features(pd.DataFrame({"customer_id": ["c1"], "event_timestamp": END}), "churn_v2", config)
    assert got[READINGS].isna().all().all()


def test_spend_rhythm_stores_the_gamma_gamma_fit_and_the_expected_spend(rhythm_home):
    """customer_spend_rhythm: each customer's mean spend of the repeat order days, the snapshot's
    Gamma-Gamma fit on them, and btyd_expected_spend = expected order days x Gamma-Gamma's value per
    buying day, offline and online alike."""
    orders, config = rhythm_home
    sources = project_paths().feature_sources
    day = pd.Timestamp(max(built_dates(sources)), tz="UTC")
    ref = summary_at(orders, day)
    snap = read_snapshot(sources, day.date(), "customer_spend_rhythm").set_index("customer_id")
    got_m = snap["repeat_day_mean_spend"].reindex(ref.index)
    np.testing.assert_allclose(got_m.to_numpy(dtype=float), ref["m"].to_numpy(dtype=float), rtol=1e-9)
    assert got_m.isna().eq(ref["x"] == 0).all()  # null below two order days
    gg_cols = ["gg_p", "gg_q", "gg_gamma"]
    assert snap[gg_cols].nunique().eq(1).all()
    fitted = btyd.fit_gamma_gamma(ref["x"], ref["m"].fillna(0.0))
    stored = btyd.GammaGamma(*(snap.iloc[0][c] for c in gg_cols))
    keep = ref["x"] > 0
    ll = btyd.gamma_gamma_log_likelihood((stored.p, stored.q, stored.gamma), ref.loc[keep, "x"], ref.loc[keep, "m"])
    assert ll.sum() == pytest.approx(fitted.log_likelihood, rel=1e-6)

    rhythm = read_snapshot(sources, day.date(), "customer_rhythm").iloc[0]
    bg = btyd.BGNBD(*(rhythm[p] for p in PARAMS))
    want = (bg.expected_purchases(45.0, ref["x"], ref["t_x"], ref["T"])
            * stored.expected_value(ref["x"], ref["m"].fillna(0.0)))
    ids = list(ref.index)
    offline = historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": day}), "value_v1", config)
    np.testing.assert_allclose(offline["btyd_expected_spend"].to_numpy(), np.asarray(want), rtol=1e-9)
    apply(config)
    materialize(config=config)
    online = online_features(ids, "value_v1", as_of=day, config=config)
    np.testing.assert_allclose(online["btyd_expected_spend"].to_numpy(), np.asarray(want), rtol=1e-9)
    # The churn service has no spend view, so no expected spend among its inputs.
    assert "btyd_expected_spend" not in model_feature_names("churn_v2")
    assert "btyd_expected_spend" in model_feature_names("value_v1")


def test_a_log_without_amounts_gives_no_expected_spend(project_home):
    tables = repeat_buyers(n=100)
    tables["orders"] = tables["orders"].drop(columns=["amount"])
    write_store(project_home, tables)
    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=0))
    build_features(END.date(), config=config)
    snap = read_snapshot(project_paths().feature_sources, END.date(), "customer_spend_rhythm")
    assert snap[["repeat_day_mean_spend", "gg_p", "gg_q", "gg_gamma"]].isna().all().all()
    got = historical_features(pd.DataFrame({"customer_id": ["c001"], "event_timestamp": END}), "value_v1", config)
    assert got["btyd_expected_spend"].isna().all() and got["btyd_p_alive"].notna().all()


def test_p_no_purchase_agrees_with_the_model():
    """P(no purchase in t): 1 at t = 0, falls with t towards 1 - P(alive) (an active customer buys
    eventually), and never exceeds what the expected count allows (P(X > 0) <= E[X])."""
    model = btyd.BGNBD(r=0.8, alpha=40.0, a=0.7, b=3.0)
    x, t_x, T = np.array([0.0, 1, 4, 10]), np.array([0.0, 20, 90, 100]), np.array([30.0, 60, 120, 300])
    np.testing.assert_allclose(model.p_no_purchase(0.0, x, t_x, T), 1.0)
    ts = [1.0, 10, 60, 365, 1e6]
    p = np.array([model.p_no_purchase(t, x, t_x, T) for t in ts])
    assert (np.diff(p, axis=0) < 0).all()
    np.testing.assert_allclose(p[-1], 1.0 - model.p_alive(x, t_x, T), atol=1e-3)
    for t in ts[:-1]:
        assert (1.0 - model.p_no_purchase(t, x, t_x, T) <= model.expected_purchases(t, x, t_x, T) + 1e-12).all()


def test_the_fit_reads_a_fixed_sample_of_at_most_fit_customers(project_home):
    """rhythm.fit_customers: the fit reads the customers with the smallest md5 of their id, the same
    ones at every build; every customer still gets the readings."""
    import hashlib

    tables = repeat_buyers()
    write_store(project_home, tables)
    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=0), rhythm=RhythmConfig(fit_customers=100))
    build_features(END.date(), config=config)
    snap = read_snapshot(project_paths().feature_sources, END.date(), "customer_rhythm")
    ref = summary_at(tables["orders"], END)
    sample = sorted(ref.index, key=lambda c: hashlib.md5(c.encode()).hexdigest())[:100]
    fit = btyd.fit(ref.loc[sample, "x"], ref.loc[sample, "t_x"], ref.loc[sample, "T"])
    stored = btyd.log_likelihood(tuple(snap.iloc[0][p] for p in PARAMS), ref.loc[sample, "x"],
                                 ref.loc[sample, "t_x"], ref.loc[sample, "T"]).sum()
    assert stored == pytest.approx(fit.log_likelihood, rel=1e-6)
    everyone = btyd.fit(ref["x"], ref["t_x"], ref["T"])
    assert snap.iloc[0]["btyd_alpha"] != pytest.approx(everyone.alpha, rel=1e-3)  # not the fit on all 300
    got = historical_features(pd.DataFrame({"customer_id": list(ref.index), "event_timestamp": END}), "churn_v2",
                              config)
    assert got["btyd_p_alive"].notna().all()


# ---- customer_visit_rhythm: the same model on the days with a page view -------------------------------

VISIT_PARAMS = ["btyd_visit_r", "btyd_visit_alpha", "btyd_visit_a", "btyd_visit_b"]
VISIT_READINGS = ["btyd_visit_p_alive", "btyd_expected_visit_days"]


def repeat_visitors(n: int = 300, days: int = 300, seed: int = 4) -> dict[str, pd.DataFrame]:
    """repeat_buyers' orders, and visits in the BG/NBD story too: sessions of 1-4 page views at each
    customer's own rate until they stop visiting; some sessions run past midnight (one session, two visit
    days), and some customers never visit."""
    tables = repeat_buyers(n, days, seed)
    rng = np.random.default_rng(seed + 1)
    start = END - pd.Timedelta(days=days)
    rows = []
    for i in range(n):
        if rng.random() < 0.1:
            continue
        t = rng.uniform(0, days * 0.7)
        rate, quit_after = rng.gamma(2.0, 1 / 15), rng.geometric(0.1)
        for k in range(80):
            # Late evening now and then: the session's last views fall on the next day.
            at = start + pd.Timedelta(days=int(t), hours=23.9 if rng.random() < 0.1 else rng.uniform(8, 20))
            for v in range(int(rng.integers(1, 5))):
                rows.append((f"c{i:03d}", f"s{i}-{k}", at + pd.Timedelta(minutes=5 * v), "product"))
            t += rng.exponential(1 / rate)
            if k + 1 >= quit_after or t >= days:
                break
    views = pd.DataFrame(rows, columns=["customer_id", "session_id", "viewed_at", "page_type"])
    views["viewed_at"] = pd.to_datetime(views["viewed_at"], utc=True).astype("datetime64[us, UTC]")
    tables["page_views"] = views[views["viewed_at"] < END].reset_index(drop=True)
    return tables


@pytest.fixture
def visit_home(project_home):
    tables = repeat_visitors()
    write_store(project_home, tables)
    config = FeaturesConfig(snapshots=SnapshotConfig(history_days=14), rhythm=RhythmConfig(horizon_days=45))
    build_features(END.date(), config=config)
    return tables, config


def test_each_snapshot_stores_the_visit_fit_of_its_own_history(visit_home):
    tables, _ = visit_home
    views = tables["page_views"]
    assert (views.groupby("session_id")["viewed_at"].agg(lambda t: t.dt.floor("D").nunique()) > 1).any()
    sources = project_paths().feature_sources
    for day in built_dates(sources):
        snap = read_snapshot(sources, day, "customer_visit_rhythm")
        ref = bgnbd_summary(views, "viewed_at", pd.Timestamp(day, tz="UTC"))
        fit = btyd.fit(ref["x"], ref["t_x"], ref["T"])
        assert snap[VISIT_PARAMS].nunique().eq(1).all()  # one fit per snapshot
        got = snap.iloc[0]
        stored = btyd.log_likelihood(tuple(got[p] for p in VISIT_PARAMS), ref["x"], ref["t_x"], ref["T"]).sum()
        assert stored == pytest.approx(fit.log_likelihood, rel=1e-5)
        visit_days = snap.set_index("customer_id")["visit_days"]
        assert (visit_days.reindex(ref.index) == ref["x"] + 1).all()
        assert (visit_days.drop(ref.index) == 0).all() and len(visit_days) > len(ref)  # buyers who never visit
        # Not the orders' fit: the two rhythms are fitted apart.
        assert got["btyd_visit_r"] != read_snapshot(sources, day, "customer_rhythm").iloc[0]["btyd_r"]


def test_visit_readings_offline_and_online_equal_the_fit_applied_to_the_summary(visit_home):
    tables, config = visit_home
    day = pd.Timestamp(max(built_dates(project_paths().feature_sources)), tz="UTC")
    ref = bgnbd_summary(tables["page_views"], "viewed_at", day)
    snap = read_snapshot(project_paths().feature_sources, day.date(), "customer_visit_rhythm").iloc[0]
    model = btyd.BGNBD(*(snap[p] for p in VISIT_PARAMS))
    want = pd.DataFrame({
        "btyd_visit_p_alive": model.p_alive(ref["x"], ref["t_x"], ref["T"]),
        "btyd_expected_visit_days": model.expected_purchases(45.0, ref["x"], ref["t_x"], ref["T"]),
    }, index=ref.index)
    never = sorted(set(tables["orders"]["customer_id"]) - set(ref.index))[:5]
    ids = [*ref.index, *never]
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": day})
    for service in ("conversion_v2", "churn_v3"):
        assert set(VISIT_READINGS) <= set(model_feature_names(service))
        offline = historical_features(entity, service, config)
        np.testing.assert_allclose(offline[VISIT_READINGS].to_numpy()[: len(ref)], want.to_numpy(), rtol=1e-9)
        assert offline[VISIT_READINGS].iloc[len(ref):].isna().all(axis=None)  # never visited: no rhythm
    assert not set(VISIT_READINGS) & set(model_feature_names("churn_v2"))
    apply(config)
    materialize(config=config)
    online = online_features(ids, "conversion_v2", as_of=day, config=config)
    np.testing.assert_allclose(online[VISIT_READINGS].to_numpy()[: len(ref)], want.to_numpy(), rtol=1e-9)
    assert want["btyd_visit_p_alive"].min() < 0.5 and (want.loc[ref["x"] == 0, "btyd_visit_p_alive"] == 1).all()


def test_without_page_views_the_visit_rhythm_is_null(rhythm_home):
    snap = read_snapshot(project_paths().feature_sources, END.date(), "customer_visit_rhythm")
    assert snap[[*VISIT_PARAMS, "visit_days"]].isna().all(axis=None)
    _, config = rhythm_home
    got = historical_features(pd.DataFrame({"customer_id": ["c001"], "event_timestamp": END}), "churn_v3", config)
    assert got[VISIT_READINGS].isna().all(axis=None) and got["btyd_p_alive"].notna().all()
