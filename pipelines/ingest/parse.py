"""One export file -> a canonical frame: read it, apply the column map, parse every column into its
contract type, and collect every problem with its file, column and rows.

Values are never coerced silently: a value that is present but does not parse is a problem, and so is
a timestamp outside the sane range (before the column map's ``earliest``, default 1970-01-01, or later
than now plus the clock tolerance), including those pandas cannot even hold (after 2262, before 1677),
which would otherwise read as "unparsable".
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import FLOAT, INT, STRING, TABLES, TIMESTAMP, Column, Table
from core.schemas import Problem, before_earliest, future_limit, in_the_future, problem_from_mask
from pipelines.ingest.columns import EPOCH_FORMATS, ColumnMap, map_columns
from pipelines.ingest.files import read_file

_NULL_DTYPES = {TIMESTAMP: "datetime64[us, UTC]", FLOAT: "float64", INT: "Int64", STRING: object}
# What pandas' nanosecond timestamps can hold (to the microsecond, as Python's datetime has it).
_PANDAS_LATEST = pd.Timestamp.max.floor("us").to_pydatetime()
_PANDAS_EARLIEST = pd.Timestamp.min.ceil("us").to_pydatetime()


@dataclass
class Source:
    """One input file after parsing: canonical frame (0-based RangeIndex = file row - 1) and its problems."""

    table: str
    path: Path
    frame: pd.DataFrame | None
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)
    # Canonical columns the file carried (an optional column it lacked is in ``frame`` as nulls): a
    # re-export updates only these, the stored values of the others stay.
    columns: frozenset[str] = frozenset()


def read_source(path: str | Path, table: str, cmap: ColumnMap, now: pd.Timestamp | None = None) -> Source:
    """Read one file, map its columns and parse them into canonical types; collect what is wrong."""
    path = Path(path)
    spec = TABLES[table]
    label = str(path)
    raw_file = read_file(path, cmap.delimiter, cmap.max_field_bytes)
    if raw_file.frame is None:
        return Source(table, path, None, raw_file.problems)
    raw = raw_file.frame.reset_index(drop=True)
    if raw.empty:
        return Source(table, path, None, [Problem(label, None, f"has a header but no rows ({table})")])
    raw, problems = map_columns(raw, spec, cmap, label)
    if raw is None:
        return Source(table, path, None, problems)

    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    out = pd.DataFrame(index=raw.index)
    for col in spec.columns:
        if col.name not in raw.columns:
            continue
        parsed, found = _parse_column(raw[col.name], col, label, cmap, table, now)
        problems += found
        if not col.nullable:
            problem = problem_from_mask(label, col.name, "missing value", raw[col.name].isna(), raw[col.name])
            if problem:
                problems.append(problem)
        out[col.name] = parsed
    extras = [c for c in raw.columns if c not in spec.names]
    for col in extras:  # optional attributes of customers / orders: numbers when every value is one
        out[col] = _attribute(raw[col])
    if problems:
        return Source(table, path, None, problems)
    carried = set(out.columns)
    notes: list[str] = []
    for col in spec.columns:  # optional columns not in the file: stored as nulls, so every file has them all
        if not col.required and col.name not in out.columns:
            out[col.name] = pd.Series(None, index=out.index, dtype=_NULL_DTYPES[col.kind])
    if spec.id_derivable and spec.id_column not in out.columns:
        out.insert(0, spec.id_column, _derive_ids(out, spec))
        carried.add(spec.id_column)
        notes.append(
            f"{label}: no {spec.id_column} column; ids derived from the row content (stable on re-ingest)"
        )
    for col in spec.columns:  # nulls were rejected above: the strict numpy integer type is safe now
        if col.kind == INT and col.name in carried and not col.nullable:
            out[col.name] = out[col.name].astype("int64")
    ordered = [c for c in spec.names if c in out.columns] + [c for c in out.columns if c not in spec.names]
    return Source(table, path, out[ordered], [], notes, frozenset(carried))


def _parse_column(
    values: pd.Series, col: Column, source: str, cmap: ColumnMap, table: str, now: pd.Timestamp
) -> tuple[pd.Series, list[Problem]]:
    """Parse one column into its canonical type; problems list values that are present but do not parse
    (and, for timestamps, values outside the sane range)."""
    present = values.notna()
    if col.kind == STRING:
        return _as_strings(values), []
    if col.kind == TIMESTAMP:
        return _parse_timestamp_column(values, col.name, source, cmap, table, now)
    numbers = values
    if cmap.decimal != "." and pd.api.types.is_object_dtype(values):
        numbers = values.str.replace(cmap.decimal, ".", regex=False)
    if pd.api.types.is_bool_dtype(values):  # True/False is no amount or severity
        numbers = pd.Series(np.nan, index=values.index)
    parsed = pd.to_numeric(numbers, errors="coerce")
    what = "not a number"
    if col.kind == INT:
        fractional = parsed.notna() & (parsed != np.floor(parsed))
        parsed = parsed.where(~fractional)
        what = "not a whole number"
        parsed = parsed.astype("Int64")
    elif col.kind == FLOAT:
        parsed = parsed.astype("float64")
    problem = problem_from_mask(source, col.name, what, present & parsed.isna(), values)
    return parsed, [problem] if problem else []


def _parse_timestamp_column(
    values: pd.Series, column: str, source: str, cmap: ColumnMap, table: str, now: pd.Timestamp
) -> tuple[pd.Series, list[Problem]]:
    fmt = cmap.date_format_for(table, column)
    parsed = _parse_timestamps(values, fmt, cmap.timezone)
    failed = values.notna() & parsed.isna()
    late = np.zeros(len(values), dtype=bool)
    early = np.zeros(len(values), dtype=bool)
    if failed.any() and not (fmt not in EPOCH_FORMATS and pd.api.types.is_numeric_dtype(values)):
        # Outside pandas' range (1677-2262) to_datetime gives up; tell those apart from real garbage.
        for i in np.flatnonzero(failed.to_numpy()):
            side = _out_of_range(values.iloc[i], fmt)
            late[i], early[i] = side == "late", side == "early"
    limit, earliest = future_limit(now), cmap.earliest_timestamp
    late |= (parsed > limit).fillna(False).to_numpy(dtype=bool)
    early |= (parsed < earliest).fillna(False).to_numpy(dtype=bool)

    hint = f"format {fmt!r}" if fmt else "ISO 8601 (set date_format in the column map for other formats)"
    what = f"unparsable timestamp, expected {hint}"
    if fmt not in EPOCH_FORMATS and pd.api.types.is_numeric_dtype(values):
        what = (
            "a number, not a timestamp (date_format: epoch_s or epoch_ms in the column map reads Unix times)"
        )
    checks = [
        (what, failed.to_numpy() & ~late & ~early),
        (in_the_future(limit), late),
        (before_earliest(earliest), early),
    ]
    problems = [p for w, m in checks if (p := problem_from_mask(source, column, w, m, values))]
    return parsed, problems


def _out_of_range(value, fmt: str | None) -> str | None:
    """'late' / 'early' when ``value`` is a real timestamp beyond what pandas can hold, else None."""
    if fmt in EPOCH_FORMATS:
        number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
        if pd.isna(number):
            return None
        seconds = float(number) / (1000.0 if fmt == "epoch_ms" else 1.0)
        if seconds > pd.Timestamp.max.timestamp():
            return "late"
        return "early" if seconds < pd.Timestamp.min.timestamp() else None
    text = str(value).strip()
    try:
        if fmt in (None, "ISO8601"):
            stamp = dt.datetime.fromisoformat(text)
        else:
            stamp = dt.datetime.strptime(text, fmt)
    except ValueError:
        return None
    naive = stamp.replace(tzinfo=None)
    if naive > _PANDAS_LATEST:
        return "late"
    return "early" if naive < _PANDAS_EARLIEST else None


def _as_strings(values: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(values):
        # Parquet ids read as float (1.0) when a column had nulls: keep '1', not '1.0'.
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            values = values.astype("Int64")
    if pd.api.types.is_object_dtype(values) and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "empty",
    ):
        return values
    return values.astype("string").astype(object).where(values.notna(), None)


def _parse_timestamps(values: pd.Series, fmt: str | None, timezone: str) -> pd.Series:
    if fmt in EPOCH_FORMATS:
        numbers = pd.to_numeric(values, errors="coerce")
        parsed = pd.to_datetime(numbers, unit=EPOCH_FORMATS[fmt], utc=True, errors="coerce")
    elif pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        # Numbers are not timestamps unless the column map says they are epoch seconds / milliseconds.
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    else:
        text = values.astype(object)
        if timezone == "UTC":
            parsed = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
        else:
            # Naive values are wall-clock times in ``timezone``; values with an offset keep it. Mixed
            # offsets come back as objects (with a warning): then each value is converted on its own.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    parsed = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
                except (ValueError, TypeError):
                    parsed = None
            if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
                parsed = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
    if getattr(parsed.dt, "tz", None) is None:
        # Wall-clock times in a zone with DST: an ambiguous hour is read as standard time.
        parsed = parsed.dt.tz_localize(
            timezone, ambiguous=np.zeros(len(parsed), dtype=bool), nonexistent="shift_forward"
        )
    parsed = parsed.dt.tz_convert("UTC")
    return parsed.astype("datetime64[us, UTC]")


def _attribute(values: pd.Series) -> pd.Series:
    if not pd.api.types.is_object_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else values


def _derive_ids(df: pd.DataFrame, spec: Table) -> pd.Series:
    """Stable ids from the row content; the n-th identical row of a file gets the n-th id, so two equal
    purchases on the same day stay two orders and a re-ingest of the same file gives the same ids."""
    key = df[[c for c in spec.names if c in df.columns and c != spec.id_column]]
    ordinal = key.groupby(list(key.columns), sort=False, dropna=False).cumcount()
    hashes = pd.util.hash_pandas_object(key.assign(_n=ordinal), index=False)
    return ("d" + hashes.astype("uint64").astype(str)).astype(object)
