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

from core.contract import ENTITY_KEY, FLOAT, INT, STRING, TABLES, TIMESTAMP, Column, Table
from core.schemas import SHOWN_ROWS, Problem, before_earliest, future_limit, in_the_future, problem_from_mask
from pipelines.ingest.cleaning import (
    DETAIL_COLUMN,
    RULE_COLUMN,
    CleaningConfig,
    duplicate_rows,
    missing_policy,
    missing_rule_name,
)
from pipelines.ingest.columns import EPOCH_FORMATS, ColumnMap, Lines, map_columns
from pipelines.ingest.files import read_file

# Products and sums of amounts are rounded to this many decimals: 6 x 2.55 is 15.299999999999999 in
# binary floats, and no currency has more decimals than this.
COMPUTED_DECIMALS = 6
_NULL_DTYPES = {TIMESTAMP: "datetime64[us, UTC]", FLOAT: "float64", INT: "Int64", STRING: object}
# What pandas' nanosecond timestamps can hold (to the microsecond, as Python's datetime has it).
_PANDAS_LATEST = pd.Timestamp.max.floor("us").to_pydatetime()
_PANDAS_EARLIEST = pd.Timestamp.min.ceil("us").to_pydatetime()


@dataclass
class Source:
    """One input file after parsing: canonical frame and its problems.

    ``frame``'s index is the file row - 1 (an order made of lines: its first line's), also after the
    cleaning rules removed rows; ``removed`` holds those rows (with ``rule`` and ``detail`` columns) for
    the quarantine. ``marks`` are per-row facts the rules need but the store does not keep (a negative
    line quantity, a dwell column), aligned with ``frame``'s index.
    """

    table: str
    path: Path
    frame: pd.DataFrame | None
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)
    # Canonical columns the file carried (an optional column it lacked is in ``frame`` as nulls): a
    # re-export updates only these, the stored values of the others stay.
    columns: frozenset[str] = frozenset()
    removed: list[pd.DataFrame] = field(default_factory=list)
    marks: dict[str, pd.Series] = field(default_factory=dict)
    rows_read: int = 0  # rows of the file (order lines, when it lists lines)


def read_source(
    path: str | Path,
    table: str,
    cmap: ColumnMap,
    now: pd.Timestamp | None = None,
    cleaning: CleaningConfig | None = None,
) -> Source:
    """Read one file, map its columns and parse them into canonical types; collect what is wrong.

    With ``cleaning`` (the rules, the column map's overrides applied), empty fields follow its
    missing-value policy and repeated rows are quarantined; without it, an empty required field is a
    problem. Order lines (the map's ``lines``) are added up into orders here.
    """
    path = Path(path)
    spec = TABLES[table]
    label = str(path)
    rules = cleaning if cleaning is not None else CleaningConfig.disabled()
    raw_file = read_file(path, cmap.delimiter, cmap.max_field_bytes, cmap.encoding)
    if raw_file.frame is None:
        return Source(table, path, None, raw_file.problems)
    raw = raw_file.frame.reset_index(drop=True)
    if raw.empty:
        return Source(table, path, None, [Problem(label, None, f"has a header but no rows ({table})")])
    rows_read = len(raw)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    marks: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    dwell = rules.short_views.dwell_column if rules.short_views.enabled else None
    if dwell and "session_id" in spec.names and dwell in raw.columns:
        # Read for the short-view rule, not stored: page views take no other columns.
        seconds, problems = _parse_column(raw[dwell], Column(dwell, FLOAT), label, cmap, table, now)
        marks["dwell"] = seconds
        raw = raw.drop(columns=[dwell])
    raw, found = map_columns(raw, spec, cmap, label)
    problems += found
    if raw is None:
        return Source(table, path, None, problems)

    tmap = cmap.table(table)
    computed = tmap.computed
    out = pd.DataFrame(index=raw.index)
    missing: dict[str, pd.Series] = {}  # canonical column -> empty in the file
    for col in spec.columns:
        if col.name in computed:
            parsed, found, empty = _product(raw, computed[col.name].multiply, label, cmap, table, now)
        elif col.name in raw.columns:
            parsed, found = _parse_column(raw[col.name], col, label, cmap, table, now)
            empty = raw[col.name].isna()
        else:
            continue
        problems += found
        if not col.nullable:
            missing[col.name] = empty
        out[col.name] = parsed
    consumed = {n for how in computed.values() for n in how.multiply}
    for name, how in computed.items():  # a computed attribute of customers / orders (revenue: ...)
        if name not in spec.names:
            out[name] = _product(raw, how.multiply, label, cmap, table, now)[0]
    extras = [c for c in raw.columns if c not in spec.names and c not in computed]
    if not spec.extra_columns_allowed:
        extras = [c for c in extras if c not in consumed]
    for col in extras:  # optional attributes of customers / orders: numbers when every value is one
        out[col] = _attribute(raw[col])
    out, gone, found, notes = apply_missing_values(out, raw, missing, spec, rules, label, rows_read)
    problems += found
    if problems:
        return Source(table, path, None, problems)
    removed = [gone] if gone is not None else []

    id_in_file = spec.id_column is not None and spec.id_column in out.columns
    if rules.duplicate_rows.enabled and id_in_file:
        # The same record exported twice (every column equal); a file without ids keeps equal rows
        # apart instead: two equal purchases on one day are two orders.
        repeated = duplicate_rows(out)
        if repeated.any():
            gone = out[repeated].copy()
            gone.insert(0, DETAIL_COLUMN, "repeats an earlier row of the file")
            gone.insert(0, RULE_COLUMN, "duplicate_rows")
            removed.append(gone)
            out = out[~repeated]
    quantity = rules.cancellations.quantity_column if rules.cancellations.enabled else None
    if quantity is not None and quantity in out.columns:
        marks["negative_quantity"] = pd.to_numeric(out[quantity], errors="coerce") < 0
    if tmap.lines is not None:
        out, found, marks = _orders_from_lines(out, spec, tmap.lines, marks, label)
        if found:
            return Source(table, path, None, found)
        notes.append(f"{label}: {rows_read:,} order lines added up into {len(out):,} orders")

    carried = set(out.columns)
    for col in spec.columns:  # optional columns not in the file: stored as nulls, so every file has them all
        if not col.required and col.name not in out.columns:
            out[col.name] = pd.Series(None, index=out.index, dtype=_NULL_DTYPES[col.kind])
    if spec.id_derivable and spec.id_column not in out.columns:
        out.insert(0, spec.id_column, _derive_ids(out, spec))
        carried.add(spec.id_column)
        notes.append(
            f"{label}: no {spec.id_column} column; ids derived from the row content (stable on re-ingest)"
        )
    for col in spec.columns:  # nulls were removed above: the strict numpy integer type is safe now
        if col.kind == INT and col.name in carried and not col.nullable:
            out[col.name] = out[col.name].astype("int64")
    ordered = [c for c in spec.names if c in out.columns] + [c for c in out.columns if c not in spec.names]
    return Source(
        table, path, out[ordered], [], notes, frozenset(carried), removed, marks, rows_read=rows_read
    )


def apply_missing_values(
    out: pd.DataFrame,
    raw: pd.DataFrame,
    missing: dict[str, pd.Series],
    spec: Table,
    rules: CleaningConfig,
    label: str,
    rows_read: int,
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[Problem], list[str]]:
    """Empty required fields, by the missing-value policy (``cleaning.MissingValuesRule``).

    Returns the frame (filled, without the quarantined rows), the quarantined rows (rule
    ``missing_customer`` / ``missing_<column>``, the first empty key field of the row), the problems
    (an empty field the policy does not allow, or a key field empty in more than ``max_share`` of the
    rows) and notes (what was filled).
    """
    policy = rules.missing_values
    problems: list[Problem] = []
    notes: list[str] = []
    rule_of = pd.Series(None, index=out.index, dtype=object)
    for name, empty in missing.items():
        count = int(empty.sum())
        if not count:
            continue
        col = spec.column(name)
        how = missing_policy(rules, spec, col)
        shown = raw[name] if name in raw.columns else out[name]
        if how == "fill":
            out.loc[empty.to_numpy(), name] = policy.fill
            notes.append(f"{label}: {count:,} empty value(s) of {spec.name}.{name} filled with {policy.fill!r}")
            continue
        share = count / rows_read
        what = "missing value"
        if how == "share" and share > policy.max_share:
            what = (
                f"missing value in {count:,} of {rows_read:,} rows ({share:.1%}), more than the "
                f"{policy.max_share:.0%} the missing_values rule quarantines (max_share in configs/cleaning.yaml; "
                f"or in the column map: cleaning: {{missing_values: {{columns: {{{spec.name}.{name}: quarantine}}}}}})"
            )
        elif how in ("share", "quarantine"):
            rule_of = rule_of.where(rule_of.notna() | ~empty, missing_rule_name(name))
            continue
        problem = problem_from_mask(label, name, what, empty.to_numpy(), shown)
        if problem:
            problems.append(problem)
    hit = rule_of.notna().to_numpy()
    if problems or not hit.any():
        return out, None, problems, notes
    gone = out[hit].copy()
    rule = rule_of[hit]
    gone.insert(0, DETAIL_COLUMN, [f"{r.removeprefix('missing_')} is empty" for r in rule])
    gone.insert(0, RULE_COLUMN, rule.to_numpy())
    gone[DETAIL_COLUMN] = np.where(
        gone[RULE_COLUMN] == "missing_customer", f"{ENTITY_KEY} is empty", gone[DETAIL_COLUMN]
    )
    return out[~hit], gone, [], notes


def _product(
    raw: pd.DataFrame, names: list[str], label: str, cmap: ColumnMap, table: str, now: pd.Timestamp
) -> tuple[pd.Series, list[Problem], pd.Series]:
    """The product of columns of the file (each parsed as a number); problems name the file's column."""
    product = None
    problems: list[Problem] = []
    empty = pd.Series(False, index=raw.index)
    for name in names:
        parsed, found = _parse_column(raw[name], Column(name, FLOAT), label, cmap, table, now)
        problems += found
        empty |= raw[name].isna()
        product = parsed if product is None else product * parsed
    return product.round(COMPUTED_DECIMALS), problems, empty


def _orders_from_lines(
    lines: pd.DataFrame, spec: Table, how: Lines, marks: dict[str, pd.Series], label: str
) -> tuple[pd.DataFrame, list[Problem], dict[str, pd.Series]]:
    """Order lines -> orders: one per order id, amounts added up, the first line's time, the ``keep``
    columns' first value. Lines of one order naming two customers are a problem."""
    idc = spec.id_column
    unknown = [c for c in how.keep if c not in lines.columns]
    if unknown:
        return lines, [
            Problem(label, c, f"lines.keep names it, but the file has no such column (columns: "
                    f"{', '.join(map(str, lines.columns))})") for c in unknown
        ], marks
    if lines.empty:
        return lines[[c for c in lines.columns if c in spec.names or c in how.keep]], [], marks
    group = lines.groupby(idc, sort=False)  # groups in order of their first line
    first = lines.index[group.cumcount().to_numpy() == 0]
    customers = group[ENTITY_KEY].nunique()
    if (customers > 1).any():
        bad = np.flatnonzero((customers > 1).to_numpy())
        return lines, [
            Problem(
                label,
                ENTITY_KEY,
                "the lines of one order name more than one customer",
                len(bad),
                [int(first[i]) + 1 for i in bad[:SHOWN_ROWS]],
                [customers.index[i] for i in bad[:SHOWN_ROWS]],
            )
        ], marks
    agg: dict[str, str] = {}
    for col in spec.columns:
        if col.name == idc or col.name not in lines.columns:
            continue
        agg[col.name] = "sum" if col.name == "amount" else "min" if col.name == spec.time_column else "first"
    for col in how.keep:
        agg.setdefault(col, "first")
    orders = group.agg(agg).reset_index()
    orders.index = first
    if "amount" in orders.columns:
        orders["amount"] = orders["amount"].round(COMPUTED_DECIMALS)
    if "negative_quantity" in marks:
        negative = marks["negative_quantity"].reindex(lines.index).fillna(False)
        marks = {**marks, "negative_quantity": negative.groupby(lines[idc].to_numpy(), sort=False).any().set_axis(first)}
    return orders, [], marks


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
