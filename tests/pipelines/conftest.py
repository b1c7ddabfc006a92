"""Fixtures of the pipelines tests: a tiny, valid event log (four tables) and writers for CSV / Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def tiny_event_log() -> dict[str, pd.DataFrame]:
    """Three customers over two months (Jan-Feb 2026), every family present, every value valid."""
    ts = pd.to_datetime
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3"],
            "signup_at": ts(["2025-12-01T08:00:00Z", "2025-12-15T09:30:00Z", "2026-01-02T10:00:00Z"]),
            "country": ["DE", "FR", "DE"],
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4"],
            "customer_id": ["c1", "c1", "c2", "c3"],
            "ordered_at": ts(
                [
                    "2026-01-05T12:00:00Z",
                    "2026-02-03T12:00:00Z",
                    "2026-01-20T18:45:00Z",
                    "2026-02-10T07:00:00Z",
                ]
            ),
            "amount": [25.5, 40.0, 12.25, 99.9],
        }
    )
    page_views = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3", "c3"],
            "session_id": ["s1", "s1", "s2", "s3", "s3"],
            "viewed_at": ts(
                [
                    "2026-01-05T11:50:00Z",
                    "2026-01-05T11:55:00Z",
                    "2026-01-20T18:40:00Z",
                    "2026-02-10T06:50:00Z",
                    "2026-02-10T06:55:00Z",
                ]
            ),
            "page_type": ["home", "product", "cart", "category", "checkout"],
            "product_id": [None, "p9", "p3", None, None],
        }
    )
    complaints = pd.DataFrame(
        {
            "complaint_id": ["k1", "k2"],
            "customer_id": ["c2", "c3"],
            "opened_at": ts(["2026-01-25T09:00:00Z", "2026-02-12T15:00:00Z"]),
            "channel": ["email", "phone"],
            "category": ["delivery", "billing"],
            "severity": [2, 3],
            "resolved_at": ts(["2026-01-28T10:00:00Z", None]),
        }
    )
    return {"customers": customers, "orders": orders, "page_views": page_views, "complaints": complaints}


def write_table(df: pd.DataFrame, folder: Path, name: str, fmt: str) -> Path:
    """Write ``df`` as a business export would: CSV with ISO timestamps, or Parquet as typed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.fixture
def event_log() -> dict[str, pd.DataFrame]:
    return tiny_event_log()


@pytest.fixture(params=["csv", "parquet"])
def fmt(request) -> str:
    """Run a test once with CSV exports and once with Parquet exports."""
    return request.param


@pytest.fixture
def exports(tmp_path, event_log, fmt) -> dict[str, Path]:
    """The tiny event log written as four export files in ``fmt``."""
    return {name: write_table(df, tmp_path / "raw", name, fmt) for name, df in event_log.items()}
