"""Model behaviour on concrete customers whose answer is known, with the session's champions (trained on
the generator's data through the real chain, small budget).

Each case takes real customers of the model's test split at the test cutoff, with the features Feast
gives them, and the same customers had one more thing happened before the cutoff: the event is added
to a copy of the event store and the feature build computes their features again, so every feature
moves exactly as it would in the data (checked first), not only the columns a monotone constraint holds.

- churn: an open severity-3 complaint, opened a day before the cutoff. In the generator complaints,
  recent and unresolved ones above all, raise the hazard of leaving: churn risk must not fall.
- conversion: the customer's latest session goes deeper, two product pages and a cart page more. In the
  generator product and cart pages mark a customer closer to buying: the chance to buy must not fall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from core.events import EventStore
from core.settings import ProjectPaths
from tests.training.business import features_with_events, point_env_at
from tests.training.conftest import small_config

pytestmark = pytest.mark.behaviour

TOLERANCE = 1e-9  # "does not fall": equal is fine, float noise is not a fall


class ProbabilityFell(AssertionError):
    """A probability fell where the behaviour says it must not (raised by ``assert_never_falls``)."""


@dataclass
class Case:
    model: object            # training.champion.LoadedModel
    before: pd.DataFrame     # model features from Feast, index customer_id
    after: pd.DataFrame      # the same customers with the added events, from the feature build

    def delta(self, ids) -> pd.Series:
        ids = list(ids)
        p0 = self.model.predict_proba(self.before.loc[ids])
        p1 = self.model.predict_proba(self.after.loc[ids])
        return pd.Series(p1 - p0, index=ids)


def champion_and_test_split(model: str):
    """Champion, and the test split's rows (customer_id, cutoff, model features) from Feast."""
    from training.champion import load_model_version
    from training.labels import TEST
    from training.tracking import configure_mlflow
    from training.train import build_training_set

    configure_mlflow()
    champion = load_model_version(model, alias="champion")
    part = build_training_set(small_config(model)).part(TEST)
    cutoff = part["event_timestamp"].iloc[0]
    assert (part["event_timestamp"] == cutoff).all()
    return champion, part.set_index("customer_id")[champion.feature_names], cutoff


def assert_moved(case: Case, expected: dict) -> None:
    """``expected``: feature -> function(before, after) -> bool Series that must hold for every customer;
    every other model feature must be unchanged."""
    before, after = case.before, case.after.loc[case.before.index]
    for name in case.model.feature_names:
        if name in expected:
            ok = expected[name](before[name], after[name])
            assert ok.all(), f"{name}: {before.loc[~ok, name].head().to_dict()} -> {after.loc[~ok, name].head().to_dict()}"
        else:
            same = np.isclose(before[name].to_numpy(), after[name].to_numpy(), rtol=1e-9, equal_nan=True)
            assert same.all(), (f"{name} changed although the added events do not touch it: "
                                f"{before.loc[~same, name].head().to_dict()} -> {after.loc[~same, name].head().to_dict()}")


def assert_never_falls(case: Case, ids, what: str) -> pd.Series:
    delta = case.delta(ids)
    fallen = delta[delta < -TOLERANCE].sort_values()
    if len(fallen):
        raise ProbabilityFell(f"{what}: probability fell for {len(fallen)} of {len(delta)} customers, e.g. "
                              f"{fallen.head(5).round(4).to_dict()}")
    return delta


# ---- churn: an open severity-3 complaint ------------------------------------------------------------
@pytest.fixture(scope="module")
def complaint_case(_trained_session, tmp_path_factory) -> Case:
    home = _trained_session[0]
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, home)
        model, before, cutoff = champion_and_test_split("churn")
        # Customers without a complaint in the last 90 days and none open, so the new one is their only one,
        # and signed up before it (a complaint before the signup would move the signup).
        quiet = before[(before["complaints_90d"].fillna(0) == 0) & (before["open_complaints"].fillna(0) == 0)
                       & (before["tenure_days"] >= 2)]
        ids = quiet.index.tolist()
        complaints = pd.DataFrame({
            "complaint_id": [f"k-behaviour-{i}" for i in range(len(ids))],
            "customer_id": ids,
            "opened_at": cutoff - pd.Timedelta(days=1),
            "channel": "email",
            "category": "delivery",
            "severity": 3,
            "resolved_at": pd.NaT,
        })
        after = features_with_events(home, tmp_path_factory.mktemp("complaint") / "project",
                                     {"complaints": complaints}, ids, cutoff, model.feature_service)
    case = Case(model, quiet, after[model.feature_names].astype("float64"))
    plus_one = lambda b, a: a == b.fillna(0) + 1  # noqa: E731
    assert_moved(case, {
        "complaints_30d": plus_one, "complaints_90d": plus_one, "open_complaints": plus_one,
        "high_severity_complaints_90d": plus_one,
        "days_since_last_complaint": lambda b, a: a == 1.0,
    })
    return case


def test_a_first_complaint_never_lowers_churn_risk(complaint_case):
    """Customers who never complained get their first complaint."""
    first = complaint_case.before.index[complaint_case.before["days_since_last_complaint"].isna()]
    assert len(first) >= 50
    delta = assert_never_falls(complaint_case, first, "first complaint")
    assert delta.mean() > 0.02  # complaints drive churn in the generator: the model must react


def test_a_new_complaint_long_after_an_old_one_never_lowers_churn_risk(complaint_case):
    """Customers whose last complaint is more than 90 days old complain again."""
    again = complaint_case.before.index[complaint_case.before["days_since_last_complaint"].notna()]
    assert len(again) >= 20
    assert_never_falls(complaint_case, again, "new complaint after an old one")


# ---- conversion: a deeper latest session ------------------------------------------------------------
DEEPER = ("product", "product", "cart")


@pytest.fixture(scope="module")
def browsing_case(_trained_session, tmp_path_factory) -> Case:
    home = _trained_session[0]
    with pytest.MonkeyPatch.context() as mp:
        point_env_at(mp, home)
        model, before, cutoff = champion_and_test_split("conversion")
        views = EventStore(ProjectPaths(home).events).read("page_views")
        views = views[views["customer_id"].isin(before.index) & (views["viewed_at"] < cutoff)]
        latest = views.sort_values("viewed_at", kind="stable").groupby("customer_id").tail(1)
        # Pages 20 s apart after the session's last page; sessions ending in the last minute are left out.
        latest = latest[latest["viewed_at"] + pd.Timedelta(seconds=20 * len(DEEPER)) < cutoff]
        extra = pd.DataFrame([
            (row.customer_id, row.session_id, row.viewed_at + pd.Timedelta(seconds=20 * (k + 1)), page, None)
            for row in latest.itertuples() for k, page in enumerate(DEEPER)
        ], columns=["customer_id", "session_id", "viewed_at", "page_type", "product_id"])
        ids = latest["customer_id"].tolist()
        after = features_with_events(home, tmp_path_factory.mktemp("browsing") / "project",
                                     {"page_views": extra}, ids, cutoff, model.feature_service)
    within_7d = (cutoff - latest.set_index("customer_id")["viewed_at"]) < pd.Timedelta(days=7)
    case = Case(model, before.loc[ids], after[model.feature_names].astype("float64"))
    b = case.before
    n = len(DEEPER)
    assert_moved(case, {
        "page_views_30d": lambda b_, a: a == b_ + n,
        "page_views_7d": lambda b_, a: a == b_ + n * within_7d.loc[b_.index],
        "pages_per_session_30d": lambda b_, a: np.isclose(a, (b["page_views_30d"] + n) / b["sessions_30d"]),
        "pages_per_session_7d": lambda b_, a: np.isclose(
            a, (b["page_views_7d"] + n * within_7d.loc[b_.index]) / b["sessions_7d"], equal_nan=True),
        "max_session_depth_30d": lambda b_, a: (a >= b_) & (a <= b_ + n),
        "product_views_30d": lambda b_, a: a == b_ + 2,
        "cart_views_30d": lambda b_, a: a == b_ + 1,
        "abandoned_carts_30d": lambda b_, a: (a == b_) | (a == b_ + 1),  # +1 unless it already had a cart view
        "days_since_last_product_view": lambda b_, a: (a <= b_) | b_.isna(),
        # The session ends up to a minute later: a whole day less only when that crosses midnight.
        "days_since_last_visit": lambda b_, a: (a == b_) | (a == b_ - 1),
    })
    return case


def test_deeper_browsing_never_lowers_conversion(browsing_case):
    """Customers who viewed a product page before browse deeper in their latest session."""
    seen = browsing_case.before.index[browsing_case.before["days_since_last_product_view"].notna()]
    assert len(seen) >= 50
    delta = assert_never_falls(browsing_case, seen, "deeper browsing")
    assert delta.mean() > 0  # browse depth carries signal in the generator


def test_first_product_views_never_lower_conversion(browsing_case):
    """Customers who never viewed a product page see their first ones."""
    first = browsing_case.before.index[browsing_case.before["days_since_last_product_view"].isna()]
    assert len(first) >= 5
    assert_never_falls(browsing_case, first, "first product views")
