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
