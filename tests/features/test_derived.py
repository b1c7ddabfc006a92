"""Derived features: day counts, RFM scores and segments, lifecycle stages; the features config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.errors import ConfigError
from features.derived import add_derived
from features.settings import FeaturesConfig

AS_OF = pd.Timestamp("2026-06-01 12:00", tz="UTC")


def unix(days_before: float | None) -> float:
    return np.nan if days_before is None else (AS_OF - pd.Timedelta(days=days_before)).timestamp()


def test_scores_segments_and_stages_follow_the_config():
    rows = pd.DataFrame(
        {
            # recent big spender, lapsed big spender, recent one-off, new prospect, unknown
            "last_order_at": [unix(3), unix(400), unix(10), unix(None), np.nan],
            "signup_at": [unix(900), unix(900), unix(100), unix(5), np.nan],
            "orders_365d": [12, 9, 1, 0, np.nan],
            "spend_365d": [2000.0, 1500.0, 20.0, 0.0, np.nan],
        }
    )
    out = add_derived(rows, AS_OF, FeaturesConfig())
    assert out["days_since_last_order"].tolist()[:3] == [3, 400, 10]
    assert out["r_score"].tolist()[:4] == [5, 1, 5, 1]
    assert out["f_score"].tolist()[:4] == [5, 5, 1, 1]
    assert out["m_score"].tolist()[:4] == [5, 5, 1, 1]
    assert out["rfm_segment"].tolist() == [
        "important_value", "important_to_retain", "general_to_develop", "general_to_win_back", None
    ]
    assert out["lifecycle_stage"].tolist() == ["active", "lapsed", "active", "new", None]
    assert np.isnan(out.loc[4, "r_score"]) and np.isnan(out.loc[4, "tenure_days"])


def test_day_counts_use_each_rows_own_date():
    rows = pd.DataFrame({"last_order_at": [unix(0.5)] * 2, "orders_365d": [1, 1], "spend_365d": [1.0, 1.0]})
    out = add_derived(rows, pd.Series([AS_OF, AS_OF + pd.Timedelta(days=30)]), FeaturesConfig())
    assert out["days_since_last_order"].tolist() == [0, 30]
    assert out["lifecycle_stage"].isna().all()  # no signup_at: no tenure, no stage


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "features.yaml"
    bad.write_text("snapshots:\n  cadense_days: 7\n")
    with pytest.raises(ConfigError, match="snapshots.cadense_days"):
        load_config(bad, FeaturesConfig)
    bad.write_text("rfm:\n  recency_days: [30, 14, 60, 120]\n")
    with pytest.raises(ConfigError, match="recency_days"):
        load_config(bad, FeaturesConfig)


def test_gap_ratios_set_the_current_gap_against_the_customers_own_rhythm():
    rows = pd.DataFrame(
        {
            # weekly buyer 40 days out, quarterly buyer 40 days out, one order only, orders all at one
            # instant (mean gap 0), unknown customer
            "last_order_at": [unix(40.2), unix(40.2), unix(3), unix(10), np.nan],
            "first_order_at": [unix(400.5), unix(400.5), unix(3), unix(10), np.nan],
            "orders_mean_gap_days": [7.0, 90.0, np.nan, 0.0, np.nan],
            "last_visit_at": [unix(2), np.nan, unix(1), unix(6), np.nan],
            "first_visit_at": [unix(30), np.nan, unix(1), unix(9), np.nan],
            "visit_mean_gap_days": [4.0, np.nan, np.nan, 1.5, np.nan],
            "orders_365d": [5, 4, 1, 3, np.nan],
            "spend_365d": [100.0, 80.0, 5.0, np.nan, np.nan],  # the fourth: orders without amounts
        }
    )
    out = add_derived(rows, AS_OF, FeaturesConfig())
    np.testing.assert_array_equal(out["gap_ratio"], [40 / 7, 40 / 90, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(out["visit_gap_ratio"], [2 / 4, np.nan, np.nan, 6 / 1.5, np.nan])
    np.testing.assert_array_equal(out["days_since_first_order"], [400, 400, 3, 10, np.nan])
    np.testing.assert_array_equal(out["days_since_first_visit"], [30, np.nan, 1, 9, np.nan])
    # Unknown spend: no monetary score and no segment (r and f are still scored).
    assert np.isnan(out.loc[3, "m_score"]) and out.loc[3, "rfm_segment"] is None
    assert out.loc[3, "r_score"] == 5 and out.loc[0, "rfm_segment"] is not None


def test_rows_of_several_snapshots_are_read_with_each_ones_own_fit():
    """A training set mixes snapshots, each with its BG/NBD fit: each row gets the readings of its own
    fit, as it would alone (rows interleaved, one without a fit)."""
    from features.derived import derive_arrays

    fits = [(0.9, 45.0, 1.5, 18.0), (1.2, 30.0, 0.8, 9.0)]
    which = [0, 1, 0, 1, 1, None]
    columns = {name: np.array([np.nan if w is None else fits[w][k] for w in which])
               for k, name in enumerate(("btyd_r", "btyd_alpha", "btyd_a", "btyd_b"))}
    columns.update(first_order_at=np.array([unix(300), unix(200), unix(100), unix(90), unix(30), unix(30)]),
                   last_order_at=np.array([unix(20), unix(40), unix(5), unix(60), unix(2), unix(2)]),
                   order_days=np.array([6.0, 3.0, 9.0, 2.0, 4.0, 4.0]))
    seconds = np.full(len(which), AS_OF.timestamp())
    together = derive_arrays(columns, seconds, FeaturesConfig())
    for i, w in enumerate(which):
        alone = derive_arrays({k: v[i:i + 1] for k, v in columns.items()}, seconds[i:i + 1], FeaturesConfig())
        for name in ("btyd_p_alive", "btyd_expected_orders", "btyd_p_no_order"):
            if w is None:
                assert np.isnan(together[name][i]), name
            else:
                assert together[name][i] == alone[name][0], (name, i)
    # Read with the other snapshot's fit, a row gets another answer: a mixed-up fit would show.
    swapped = {k: v[1:2].copy() for k, v in columns.items()}
    for k, name in enumerate(("btyd_r", "btyd_alpha", "btyd_a", "btyd_b")):
        swapped[name][:] = fits[0][k]
    other = derive_arrays(swapped, seconds[1:2], FeaturesConfig())
    assert abs(other["btyd_p_alive"][0] - together["btyd_p_alive"][1]) > 1e-3
