"""One generator run: determinism, argument errors, and the `propensity generate` command."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from core.errors import PropensityError
from pipelines.synthetic import generate
from pipelines.synthetic.write import TABLE_FILES

TABLES = (*TABLE_FILES, "ground_truth")


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet"]  # no temporary files left


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
