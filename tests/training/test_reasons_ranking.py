"""Cause ranking against the population with the customer's daily past (``shap_z_event``): fresh events
found in a daily history, how common they are in the population, the ranking they give, and the fallback
to ``shap_z`` when no daily past is at hand (the API)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from core.settings import REPO_ROOT
from training.reasons import History, cause_scale, explain, history_of, load_templates, ranking_method

# One feature per conversion cause, so a cause's sum is its feature's contribution.
FEATURES = ["page_views_7d", "sessions_7d", "product_views_30d", "cart_views_30d"]


@pytest.fixture(scope="module")
def templates():
    return load_templates()


def _history(events: np.ndarray, causes: tuple[str, ...]) -> History:
    """A daily History whose only content that matters is ``events`` (steps x rows x causes)."""
    steps, n, _ = events.shape
    dates = [pd.Timestamp("2026-10-12", tz="UTC") - pd.Timedelta(days=k) for k in range(steps, -1, -1)]
    raw = np.zeros((steps + 1, n))
    return History(dates, raw, 1 / (1 + np.exp(-raw)), np.zeros((steps + 1, n, len(causes))),
                   np.ones((steps + 1, n), dtype=bool), causes, events)


def _contributions(rows: list[list[float]]) -> np.ndarray:
    return np.array([[*r, -1.0] for r in rows])  # last column: the base value


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"page_views_7d": [5.0] * n, "sessions_7d": [2.0] * n, "product_views_30d": [4.0] * n,
                         "cart_views_30d": [1.0] * n, "abandoned_carts_30d": [1.0] * n})


def test_a_rare_fresh_event_outranks_a_larger_common_one(templates):
    """Population of 10: product pages viewed by 8 of them in the last days, a cart by 1. Customer 0 did
    both: shap_z names product interest (its contribution is the more unusual), shap_z_event names the
    cart, the rarer fresh event. Customer 1 only viewed products: product interest either way."""
    causes = templates.cause_map("conversion", FEATURES).causes
    b, v, p, c = (causes.index(x) for x in ("browse_depth", "recent_visit", "product_interest", "cart_intent"))
    population = _contributions([[0.1, 0.2, 0.6, 0.03], [0.1, 0.2, 0.5, 0.0]] +
                                [[0.1 * (k % 2), 0.1 * (k % 4), 0.1 * (k % 3), 0.02 * (k % 2)]
                                 for k in range(8)])
    events = np.zeros((3, 10, len(causes)), dtype=bool)
    events[:, :8, p] = [[True] * 8, [False] * 8, [False] * 8]  # 8 of 10 viewed products two days ago
    events[2, 0, c] = True  # customer 0 viewed a cart yesterday
    events[1, :, v] = True  # everyone visited
    scale = cause_scale(population, "conversion", FEATURES, templates, history=_history(events, causes))
    # Add-one smoothed shares of the population with an event per cause, over the 3 daily steps.
    assert scale.event_steps == 3
    assert scale.event_rate[p] == pytest.approx(9 / 12) and scale.event_rate[c] == pytest.approx(2 / 12)
    # The history's last date is today: its cause sums give the same scale without the contributions.
    today = _history(events, causes)
    today.cause_sums[-1] = population[:, :-1] @ templates.cause_map("conversion", FEATURES).onehot
    from_history = cause_scale(None, "conversion", FEATURES, templates, history=today)
    np.testing.assert_allclose(from_history.mean, scale.mean)
    np.testing.assert_allclose(from_history.std, scale.std)
    np.testing.assert_array_equal(from_history.event_rate, scale.event_rate)
    assert scale.event_rate[v] == pytest.approx(11 / 12) and scale.event_rate[b] == pytest.approx(1 / 12)

    flagged = population[:2]
    history = _history(events[:, :2], causes)
    assert ranking_method(templates, "conversion", history, scale) == "shap_z_event"
    z_only = explain(flagged, _frame(2), FEATURES, "conversion", templates=templates, scale=scale)
    with_events = explain(flagged, _frame(2), FEATURES, "conversion", templates=templates, history=history,
                          scale=scale)
    assert [z_only[0][0].cause, z_only[1][0].cause] == ["product_interest", "product_interest"]
    assert [with_events[0][0].cause, with_events[1][0].cause] == ["cart_intent", "product_interest"]
    # The score behind customer 0: z of today's sum plus -log(share with the event), per cause.
    sums = flagged[0, :-1]
    sd = np.where(scale.std > 0, scale.std, 1.0)
    z_cart = (sums[c] - scale.mean[c]) / sd[c] - math.log(2 / 12)
    z_product = (sums[p] - scale.mean[p]) / sd[p] - math.log(9 / 12)
    assert z_cart > z_product
    # Only raising causes are named, and the fresh event carries no "risk rose in the week to" date.
    assert all(r.direction == "raises" for r in with_events[0][:2]) and with_events[0][0].rose is None


def test_without_a_daily_past_the_ranking_is_shap_z(templates):
    """The API has no daily past: the same scale without event rates, or no history, ranks by shap_z."""
    population = _contributions([[0.1, 0.2, 0.6, 0.03], [0.0, 0.1, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    scale = cause_scale(population, "conversion", FEATURES, templates)
    assert scale.event_rate is None
    assert ranking_method(templates, "conversion", None, scale) == "shap_z"
    assert ranking_method(templates, "conversion", None, None) == "shap_sum"


def test_event_windows_of_population_and_customer_must_match(templates):
    causes = templates.cause_map("conversion", FEATURES).causes
    population = _contributions([[0.1, 0.2, 0.6, 0.03], [0.0, 0.1, 0.1, 0.0]])
    scale = cause_scale(population, "conversion", FEATURES, templates,
                        history=_history(np.zeros((3, 2, len(causes)), dtype=bool), causes))
    short = _history(np.zeros((2, 1, len(causes)), dtype=bool), causes)
    with pytest.raises(ValueError, match="daily steps"):
        explain(population[:1], _frame(1), FEATURES, "conversion", templates=templates, history=short, scale=scale)


class _LinearModel:
    """A stand-in for LoadedModel: contributions linear in the features, except that the sessions
    feature's contribution also moves with page views (an interaction, as TreeSHAP shows one)."""

    name = "conversion"
    feature_names = FEATURES

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[FEATURES].to_numpy(dtype=np.float64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(FEATURES) + 1))
        out[:, 0] = 0.1 * X[:, 0]
        out[:, 1] = 0.1 * X[:, 1] + 0.05 * X[:, 0]  # echo of page views
        out[:, 2] = -0.2 * X[:, 2]  # more product views lower the score in this toy model
        out[:, 3] = 0.3 * X[:, 3]
        out[:, -1] = -1.0
        return out

    def from_contributions(self, contributions: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-contributions.sum(axis=1)))


def test_history_of_finds_events_where_a_value_moved_and_its_contribution_rose(templates):
    """Row 0: page views and a cart view rose (events in browse depth and cart intent); its sessions'
    contribution rose only as an echo of page views (no event), product views rose but lower the score
    (no event). Row 1 had no features the day before (not yet a customer): no event at all."""
    model = _LinearModel()
    causes = templates.cause_map("conversion", FEATURES).causes
    day0 = pd.DataFrame({"page_views_7d": [3.0, np.nan], "sessions_7d": [1.0, np.nan],
                         "product_views_30d": [2.0, np.nan], "cart_views_30d": [0.0, np.nan]})
    day1 = pd.DataFrame({"page_views_7d": [6.0, 4.0], "sessions_7d": [1.0, 1.0],
                         "product_views_30d": [3.0, 1.0], "cart_views_30d": [1.0, 1.0]})
    dates = [pd.Timestamp("2026-10-11", tz="UTC"), pd.Timestamp("2026-10-12", tz="UTC")]
    history = history_of(model, [day0, day1], dates, templates)
    assert history.events.shape == (1, 2, len(causes))
    fresh = {causes[c] for c in np.flatnonzero(history.events[0, 0])}
    assert fresh == {"browse_depth", "cart_intent"}
    assert not history.events[0, 1].any()
    assert not history.take(np.array([False, True])).events.any()
    assert history.take(np.array([True, False])).cause_sums.shape == (2, 1, len(causes))


def test_an_unknown_population_ranking_is_an_error_naming_it(tmp_path):
    text = (REPO_ROOT / "configs" / "reasons.yaml").read_text(encoding="utf-8")
    old = "population: shap_z_event"
    assert old in text
    path = tmp_path / "reasons.yaml"
    path.write_text(text.replace(old, "population: shap_z_news", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="population"):
        load_templates(path)
