"""pandera schemas of the canonical event tables, built from ``core.contract`` so the column list
exists once. The ingest validates every file against them before writing, and ``propensity validate``
re-checks a whole store with the same schemas.

``check_table`` turns pandera's failure cases into ``Problem`` objects (file, column, what is wrong, the
first offending rows with their values, and the count) so every caller reports bad data the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from core.contract import FLOAT, INT, STRING, TABLES, TIMESTAMP, Table

# Clocks drift and exports are stamped on other machines: allow this much beyond "now".
FUTURE_TOLERANCE = pd.Timedelta(hours=1)
# No customer event predates Unix time; an earlier date is a broken export (a 0 or a two-digit year).
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
UTC_US = pd.DatetimeTZDtype("us", "UTC")
SHOWN_ROWS = 5  # how many offending rows an error message lists


def future_limit(now: pd.Timestamp) -> pd.Timestamp:
    """The latest timestamp accepted at ``now``: later ones are 'in the future'."""
    return now + FUTURE_TOLERANCE


def in_the_future(limit: pd.Timestamp) -> str:
    """The wording of the future rule, the same from the ingest and from ``validate``."""
    return f"is in the future (after {limit:%Y-%m-%d %H:%M} UTC)"


def before_earliest(earliest: pd.Timestamp) -> str:
    return f"is before {earliest:%Y-%m-%d}"


_DTYPES = {STRING: object, TIMESTAMP: UTC_US, FLOAT: "float64", INT: "int64"}


@dataclass
class Problem:
    """One broken rule in one column of one file, with the first offending rows (1-based data rows)."""

    source: str
    column: str | None
    what: str
    count: int = 0
    rows: list[int] = field(default_factory=list)
    values: list = field(default_factory=list)

    def __str__(self) -> str:
        where = f"{self.source}: column '{self.column}'" if self.column else self.source
        if not self.rows:
            return f"{where}: {self.what}"
        shown = ", ".join(f"row {r}: {_show(v)}" for r, v in zip(self.rows, self.values, strict=False))
        more = f" (first {len(self.rows)} shown)" if self.count > len(self.rows) else ""
        return f"{where}: {self.what} in {self.count} row(s){more}: {shown}"


def _show(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return "<empty>"
    return repr(value) if isinstance(value, str) else str(value)


def problem_from_mask(source: str, column: str | None, what: str, mask, values: pd.Series) -> Problem | None:
    """A Problem for the rows where ``mask`` is True (row numbers from the frame's 0-based RangeIndex)."""
    mask = np.asarray(mask, dtype=bool)
    count = int(mask.sum())
    if count == 0:
        return None
    positions = np.flatnonzero(mask)[:SHOWN_ROWS]
    return Problem(
        source, column, what, count, rows=[int(p) + 1 for p in positions], values=list(values.iloc[positions])
    )


def table_schema(
    table: str | Table, now: pd.Timestamp | None = None, earliest: pd.Timestamp | None = None
) -> pa.DataFrameSchema:
    """The pandera schema of a canonical table. With ``now``, timestamps later than now + tolerance fail;
    with ``earliest``, timestamps before it fail."""
    spec = TABLES[table] if isinstance(table, str) else table
    columns = {}
    for col in spec.columns:
        checks = []
        if col.allowed is not None:
            allowed = list(col.allowed)
            checks.append(pa.Check.isin(allowed, error=f"must be one of {', '.join(map(str, allowed))}"))
        if col.min_value is not None:
            checks.append(pa.Check.ge(col.min_value, error=f"must be >= {col.min_value:g}"))
        if col.kind == FLOAT:
            checks.append(pa.Check(lambda s: np.isfinite(s), element_wise=False, error="must be finite"))
        if col.kind == TIMESTAMP and now is not None:
            limit = future_limit(now)
            checks.append(pa.Check.le(limit, error=in_the_future(limit)))
        if col.kind == TIMESTAMP and earliest is not None:
            checks.append(pa.Check.ge(earliest, error=before_earliest(earliest)))
        columns[col.name] = pa.Column(
            _DTYPES[col.kind],
            checks=checks,
            # An optional column a file lacked is stored as nulls: the store allows them there.
            nullable=col.nullable or not col.required,
            required=col.required,
            unique=col.name == spec.id_column,
        )
    wide_checks = []
    if spec.time_order is not None:
        wide_checks.append(_order_check(*spec.time_order))
    return pa.DataFrameSchema(
        columns, checks=wide_checks, strict=not spec.extra_columns_allowed, name=spec.name, coerce=False
    )


def _order_check(earlier: str, later: str) -> pa.Check:
    def ordered(df: pd.DataFrame) -> pd.Series:
        if later not in df.columns:
            return pd.Series(True, index=df.index)
        return df[later].isna() | (df[later] >= df[earlier])

    return pa.Check(ordered, error=f"{later} is before {earlier}", name=later)


def check_table(
    df: pd.DataFrame,
    table: str | Table,
    source: str,
    now: pd.Timestamp | None = None,
    row_label: Callable[[int], tuple[str, int]] | None = None,
    earliest: pd.Timestamp | None = None,
) -> list[Problem]:
    """Validate ``df`` (0-based RangeIndex) against the table's schema; return the problems found.

    ``row_label`` maps a frame index to (source, 1-based row) when the frame was put together from several
    files (the store's month partitions), so each problem names the file that holds the row.
    """
    try:
        table_schema(table, now, earliest).validate(df, lazy=True)
    except SchemaErrors as exc:
        return _problems(exc.failure_cases, df, source, row_label)
    return []


def _problems(cases: pd.DataFrame, df: pd.DataFrame, source: str, row_label) -> list[Problem]:
    problems: list[Problem] = []
    cases = cases.copy()
    wide = cases["schema_context"] == "DataFrameSchema"
    # A frame-wide check reports every column of a failing row; keep one entry per row, named by the check.
    cases.loc[wide, "column"] = cases.loc[wide, "check"].str.split(" ").str[0]
    cases = cases.drop_duplicates(subset=["column", "check", "index"])
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        column = None if pd.isna(column) else str(column)
        indexed = group[group["index"].notna()]
        if indexed.empty:  # dtype, missing column or strictness: no rows to point at
            problems.append(Problem(source, column, _describe(check, group)))
            continue
        index = indexed["index"].astype("int64").sort_values()
        shown = index.iloc[:SHOWN_ROWS].tolist()
        values = [df[column].iloc[i] if column in df.columns else None for i in shown]
        what = "duplicate value" if check == "field_uniqueness" else str(check)
        by_source: dict[str, list[tuple[int, object]]] = {}
        for i, v in zip(shown, values, strict=True):
            src, row = row_label(i) if row_label else (source, i + 1)
            by_source.setdefault(src, []).append((row, v))
        for src, items in by_source.items():
            problems.append(
                Problem(
                    src,
                    column,
                    what,
                    count=len(index),
                    rows=[r for r, _ in items],
                    values=[v for _, v in items],
                )
            )
    return problems


def _describe(check: str, group: pd.DataFrame) -> str:
    found = ", ".join(str(v) for v in group["failure_case"].tolist())
    if check.startswith("column_in_dataframe"):
        return "required column is missing"
    if check.startswith("column_in_schema"):
        return f"unexpected column(s): {found}"
    if check.startswith("dtype"):
        return f"wrong type: {found}, expected {check}"
    return f"{check}: {found}"
