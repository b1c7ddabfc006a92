"""Cleaning rules (``configs/cleaning.yaml``): rows that are in an export but are not customer behaviour.

Bots, views too short to be read, test orders and absurd amounts, test accounts, cancellations and
returns, rows repeated in a file, the same complaint submitted twice, and rows missing a key field. A
rule never drops a row silently: every row it removes goes to the quarantine beside the store
(``pipelines.ingest.quarantine``) with the rule's name in its ``rule`` column and why in ``detail``.

Each rule has ``enabled`` and its thresholds; the defaults are business-neutral (nothing here knows the
generator). A column map may override any of them for its files (its ``cleaning:`` section), which is
how the online retail example says "lines without a customer are quarantined, whatever their share".

The rules run per file, in this order (a row is removed by the first rule that matches it):

1. ``missing_values`` (while parsing): a row without a key field is quarantined as
   ``missing_customer`` / ``missing_<column>``; empty non-key text fields are filled;
2. ``duplicate_rows`` (while parsing, before order lines are added up): a row repeating an earlier
   row of the file in every column;
3. ``test_accounts``; 4. ``cancellations`` (netted against their original); 5. ``test_orders``;
6. ``amount_outliers``; 7. ``content_duplicates``; 8. ``bots``; 9. ``short_views``.

Rules look at one file only, so the same file always gives the same result (re-ingesting it adds
nothing, to the store or to the quarantine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator

from core.config import StrictModel, config_path, load_config
from core.contract import ENTITY_KEY, STRING, TABLES, Column, Table
from core.errors import ConfigError

CENTS = 0.005  # amounts closer than half a cent are equal (float sums of order lines are not exact)
NO_ORIGINAL = "no original order found in this file"


class Rule(StrictModel):
    enabled: bool = Field(True, description="false switches the rule off")


class MissingValuesRule(Rule):
    """Empty required fields. Key fields (the table's id, customer_id, the time column; also numbers
    and fields with a fixed set of values) cannot be guessed: such a row is quarantined when few rows
    lack the field, and the ingest fails when many do (a broken export, not a few bad rows)."""

    max_share: float = Field(
        0.05, ge=0, le=1, description="largest share of a file's rows a key field may be missing in"
    )
    fill: str = Field("unknown", min_length=1, description="value put into empty non-key text fields")
    columns: dict[str, Literal["share", "quarantine", "fail", "fill"]] = Field(
        default_factory=dict,
        description="per '<table>.<column>': share (quarantine up to max_share, the default for keys), "
        "quarantine (whatever the share), fail (any empty value fails), fill (the default for other text)",
    )

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        for key, policy in value.items():
            table, _, name = key.partition(".")
            if table not in TABLES or name not in TABLES[table].names:
                raise ValueError(f"{key!r} is not '<table>.<column>' of the contract")
            col = TABLES[table].column(name)
            if policy == "fill" and (col.kind != STRING or col.allowed or is_key(TABLES[table], col)):
                raise ValueError(f"{key}: only a non-key text column can be filled")
        return value


class DuplicateRowsRule(Rule):
    """A row equal to an earlier row of the same file in every column (an order line exported twice).
    Page views, which have no id, are merged as one event instead (not quarantined)."""


class TestAccountsRule(Rule):
    """Every row of the listed customers (staff and QA accounts), in every table."""

    customer_ids: list[str] = Field(default_factory=list, description="ids of test accounts")
    patterns: list[str] = Field(
        default_factory=list, description="regular expressions an id must match in full, e.g. 'TEST-.*'"
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return value


class CancellationsRule(Rule):
    """Cancellations and returns: removed, and netted against the order they cancel when it is found
    (same customer, earlier, within ``within_days``); an original cancelled in full is removed too."""

    id_prefix: str | None = Field(None, description="an order id starting with this is a cancellation")
    negative_amount: bool = Field(True, description="an order with a negative amount is a cancellation")
    quantity_column: str | None = Field(
        None, description="a column of your file: an order with a negative value in it is a cancellation"
    )
    match: list[Literal["id", "amount", "covering"]] = Field(
        ["id", "amount"],
        description="how the original is found, tried in order: id (the cancellation's id is the "
        "original's with characters added, C123 or 123-R), amount (an order of exactly the cancelled "
        "amount), covering (the latest order whose amount covers it: partial returns)",
    )
    within_days: float | None = Field(365, ge=0, description="how far back the original may be (None: any)")


class TestOrdersRule(Rule):
    """Orders whose amount is one of the values test orders are placed with."""

    amounts: list[float] = Field([0.0, 999999.0], description="amounts that mark a test order")


class AmountOutliersRule(Rule):
    """Amounts beyond median + k x MAD of the file's orders (per ``group_by`` value when set)."""

    k: float = Field(10.0, gt=0, description="how many median absolute deviations above the median")
    scale: Literal["log", "linear"] = Field(
        "log", description="log: the bound on log(amount) (amounts are skewed); linear: on the amounts"
    )
    min_orders: int = Field(50, ge=3, description="fewer orders (per group) than this: no bound")
    group_by: str | None = Field(None, description="a column of orders: one bound per value (e.g. shop)")


class ContentDuplicatesRule(Rule):
    """The same content submitted twice under two ids: same customer and content columns, within
    ``window_minutes`` of the previous one. The first is kept."""

    window_minutes: float = Field(30.0, gt=0)
    # Empty in code (the ingest names no table, tests/pipelines/test_ingest_families.py); the shipped
    # configs/cleaning.yaml sets complaints: [channel, category, severity].
    tables: dict[str, list[str]] = Field(
        default_factory=dict,
        description="table -> the columns that make two rows the same content (besides the customer)",
    )

    @field_validator("tables")
    @classmethod
    def _tables_with_ids(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for table in value:
            if table not in TABLES or TABLES[table].id_column is None:
                with_ids = [t for t, s in TABLES.items() if s.id_column]
                raise ValueError(f"{table!r}: not a table with ids ({', '.join(with_ids)})")
        return value


class BotsRule(Rule):
    """A customer with more page views in one day (UTC) than a person makes."""

    max_page_views_per_day: int = Field(100, ge=1)
    scope: Literal["day", "customer"] = Field(
        "day", description="day: the views of the days over the cap; customer: every view of that customer"
    )


class ShortViewsRule(Rule):
    """Page views shorter than a person needs to see the page; the dwell is the time to the next view
    of the same session (the last view of a session has none and stays) unless the file has a column
    with it."""

    min_dwell_seconds: float = Field(3.0, gt=0)
    dwell_column: str | None = Field(
        None, description="a column of your page-view file with seconds on the page (not stored)"
    )


class CleaningConfig(StrictModel):
    """``configs/cleaning.yaml``: one section per rule, in the order they run."""

    missing_values: MissingValuesRule = MissingValuesRule()
    duplicate_rows: DuplicateRowsRule = DuplicateRowsRule()
    test_accounts: TestAccountsRule = TestAccountsRule()
    cancellations: CancellationsRule = CancellationsRule()
    test_orders: TestOrdersRule = TestOrdersRule()
    amount_outliers: AmountOutliersRule = AmountOutliersRule()
    content_duplicates: ContentDuplicatesRule = ContentDuplicatesRule()
    bots: BotsRule = BotsRule()
    short_views: ShortViewsRule = ShortViewsRule()

    @classmethod
    def disabled(cls) -> CleaningConfig:
        """Every rule off: the contract alone decides (an empty key field or a negative amount fails)."""
        return cls.model_validate({name: {"enabled": False} for name in cls.model_fields})

    def with_overrides(self, overrides: dict[str, Any] | None, where: str = "column map") -> CleaningConfig:
        """This config with a column map's ``cleaning:`` section laid over it (nested keys merge)."""
        if not overrides:
            return self
        try:
            return CleaningConfig.model_validate(_deep_merge(self.model_dump(), overrides))
        except ValidationError as exc:
            raise ConfigError(f"{where}: invalid cleaning section\n{_errors(exc)}") from exc

    @property
    def any_enabled(self) -> bool:
        return any(getattr(self, name).enabled for name in type(self).model_fields)


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate a column map's ``cleaning:`` section against the schema (a wrong key names itself)."""
    try:
        CleaningConfig.model_validate(_deep_merge(CleaningConfig().model_dump(), overrides))
    except ValidationError as exc:
        raise ValueError("\n" + _errors(exc)) from None
    return overrides


def _errors(exc: ValidationError) -> str:
    return "\n".join(
        f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
    )


def _deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_cleaning_config(path: str | Path | None = None) -> CleaningConfig:
    """configs/cleaning.yaml (or ``path``); the built-in defaults (the same values) when there is none."""
    if path is None:
        default = config_path("cleaning.yaml")
        if not default.is_file():
            return CleaningConfig()
        path = default
    return load_config(path, CleaningConfig)


# ---- what a rule removed ------------------------------------------------------------------------------------
RULE_COLUMN, DETAIL_COLUMN = "rule", "detail"


@dataclass
class Cleaned:
    """A frame after the rules: the rows kept and, per rule, the rows removed (with a detail column)."""

    frame: pd.DataFrame
    removed: list[pd.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def remove(self, mask: np.ndarray, rule: str, detail) -> None:
        """Move the rows under ``mask`` (positions of ``frame``) to ``removed`` under ``rule``."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        gone = self.frame[mask].copy()
        if isinstance(detail, np.ndarray | pd.Series | list):
            detail = np.asarray(detail, dtype=object)[mask] if len(detail) == len(mask) else detail
        gone.insert(0, DETAIL_COLUMN, detail)
        gone.insert(0, RULE_COLUMN, rule)
        self.removed.append(gone)
        self.frame = self.frame[~mask]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for frame in self.removed:
            for rule, n in frame[RULE_COLUMN].value_counts(sort=False).items():
                out[rule] = out.get(rule, 0) + int(n)
        return out


def is_key(spec: Table, col: Column) -> bool:
    return col.name in (spec.id_column, ENTITY_KEY, spec.time_column)


def missing_rule_name(column: str) -> str:
    return "missing_customer" if column == ENTITY_KEY else f"missing_{column}"


def missing_policy(config: CleaningConfig, spec: Table, col: Column) -> str:
    """share | quarantine | fail | fill for an empty value in ``col`` (see MissingValuesRule)."""
    rule = config.missing_values
    if not rule.enabled:
        return "fail"
    explicit = rule.columns.get(f"{spec.name}.{col.name}")
    if explicit:
        return explicit
    if is_key(spec, col) or col.kind != STRING or col.allowed:
        return "share"
    return "fill"


def duplicate_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows equal in every column to an earlier row (hashes find candidates, an exact comparison decides)."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    candidates = pd.Series(hashes).duplicated(keep=False).to_numpy()
    repeated = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        repeated[np.flatnonzero(candidates)] = frame[candidates].duplicated(keep="first").to_numpy()
    return repeated


# ---- the table rules ------------------------------------------------------------------------------------------
def clean_table(
    table: str,
    frame: pd.DataFrame,
    config: CleaningConfig,
    marks: dict[str, pd.Series] | None = None,
    label: str = "",
) -> Cleaned:
    """Apply rules 3-9 (module docstring) to a parsed file of ``table``; ``marks`` are per-row facts
    parsing found (negative quantities, a dwell column) aligned with ``frame``'s index."""
    marks = marks or {}
    out = Cleaned(frame)
    spec = TABLES[table]
    if config.test_accounts.enabled and ENTITY_KEY in frame.columns:
        _test_accounts(out, config.test_accounts)
    if "amount" in frame.columns and spec.id_column:
        if config.cancellations.enabled:
            _cancellations(out, spec, config.cancellations, marks, label)
        if config.test_orders.enabled and config.test_orders.amounts:
            _test_orders(out, config.test_orders)
        if config.amount_outliers.enabled:
            _amount_outliers(out, config.amount_outliers, label)
    if config.content_duplicates.enabled and table in config.content_duplicates.tables:
        _content_duplicates(out, spec, config.content_duplicates, label)
    if spec.id_column is None and "session_id" in frame.columns and len(frame):  # page views
        # Customer codes and times once for both rules (millions of rows: each pass counts).
        codes, times = _customer_codes(out.frame), _micros(out.frame[spec.time_column])
        if config.bots.enabled:
            kept = _bots(out, config.bots, codes, times)
            codes, times = codes[kept], times[kept]
        if config.short_views.enabled:
            _short_views(out, config.short_views, marks, codes, times)
    return out


def _test_accounts(out: Cleaned, rule: TestAccountsRule) -> None:
    if not rule.customer_ids and not rule.patterns:
        return
    ids = out.frame[ENTITY_KEY]
    hit = ids.isin(rule.customer_ids).to_numpy()
    for pattern in rule.patterns:
        hit |= ids.astype(str).str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)
    out.remove(hit, "test_accounts", "a listed test account")


def _test_orders(out: Cleaned, rule: TestOrdersRule) -> None:
    amount = out.frame["amount"].to_numpy(dtype=float)
    hit = np.zeros(len(amount), dtype=bool)
    for value in rule.amounts:
        hit |= np.abs(amount - value) < CENTS
    detail = np.empty(len(amount), dtype=object)
    for i in np.flatnonzero(hit):
        detail[i] = f"amount {amount[i]:,.2f} is a test amount"
    out.remove(hit, "test_orders", detail)


def _amount_outliers(out: Cleaned, rule: AmountOutliersRule, label: str) -> None:
    frame = out.frame
    if rule.group_by is not None and rule.group_by not in frame.columns:
        raise ConfigError(
            f"cleaning amount_outliers.group_by: {label} has no column {rule.group_by!r} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    amount = frame["amount"].to_numpy(dtype=float)
    groups = (
        pd.Series(np.zeros(len(frame), dtype=np.int64), index=frame.index)
        if rule.group_by is None
        else frame[rule.group_by]
    )
    hit = np.zeros(len(frame), dtype=bool)
    detail = np.empty(len(frame), dtype=object)
    for _, idx in groups.groupby(groups, sort=False, dropna=False).indices.items():
        values = amount[idx]
        usable = np.isfinite(values) & ((values > 0) if rule.scale == "log" else True)
        if usable.sum() < rule.min_orders:
            continue
        x = np.log(values[usable]) if rule.scale == "log" else values[usable]
        median = float(np.median(x))
        mad = float(np.median(np.abs(x - median)))
        if mad == 0:  # every amount alike: no spread to measure "far" by
            continue
        bound = median + rule.k * mad
        limit = float(np.exp(bound)) if rule.scale == "log" else bound
        over = np.zeros(len(idx), dtype=bool)
        over[usable] = x > bound
        hit[idx[over]] = True
        centre = float(np.exp(median)) if rule.scale == "log" else median
        for i in idx[over]:
            detail[i] = (
                f"amount {amount[i]:,.2f} over the bound {limit:,.2f} "
                f"(median {centre:,.2f} + {rule.k:g} MAD{', log scale' if rule.scale == 'log' else ''})"
            )
    out.remove(hit, "amount_outliers", detail)


def _content_duplicates(out: Cleaned, spec: Table, rule: ContentDuplicatesRule, label: str) -> None:
    frame = out.frame
    content = rule.tables[spec.name]
    missing = [c for c in content if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"cleaning content_duplicates.tables.{spec.name}: {label} has no column(s) {', '.join(missing)}"
        )
    if len(frame) < 2:
        return
    group = frame.groupby([ENTITY_KEY, *content], sort=False, dropna=False).ngroup().to_numpy()
    times = _micros(frame[spec.time_column])
    order = np.lexsort((np.arange(len(frame)), times, group))
    same = group[order][1:] == group[order][:-1]
    gap = np.diff(times[order])
    dup_sorted = np.concatenate([[False], same & (gap <= rule.window_minutes * 60e6)])
    hit = np.zeros(len(frame), dtype=bool)
    hit[order] = dup_sorted
    detail = np.empty(len(frame), dtype=object)
    ids = frame[spec.id_column].to_numpy(dtype=object)
    prev = np.concatenate([[0], order[:-1]])  # the row before each one in sorted order
    for k in np.flatnonzero(dup_sorted):
        i, j = order[k], prev[k]
        detail[i] = f"repeats {ids[j]} of {(times[i] - times[j]) / 60e6:.0f} min before"
    out.remove(hit, "content_duplicates", detail)


def _micros(times: pd.Series) -> np.ndarray:
    """Microseconds since the epoch (UTC) as int64; ``to_numpy()`` of a zoned column is slow objects."""
    utc = pd.to_datetime(times, utc=True).dt.tz_localize(None)
    return utc.to_numpy().astype("datetime64[us]").view(np.int64)


def _customer_codes(frame: pd.DataFrame) -> np.ndarray:
    return pd.factorize(frame[ENTITY_KEY], sort=False)[0]


def _bots(out: Cleaned, rule: BotsRule, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Quarantine bot days (or bots); return the mask of the rows kept, for the next rule."""
    days = times // 86_400_000_000  # UTC days
    first = days.min()
    key = codes.astype(np.int64) * (int(days.max() - first) + 1) + (days - first)
    per_key, keys = pd.factorize(key, sort=False)  # hashing: faster than np.unique's sort
    counts = np.bincount(per_key)
    over = counts > rule.max_page_views_per_day
    if not over.any():
        return np.ones(len(codes), dtype=bool)
    hit = over[per_key]
    if rule.scope == "customer":
        hit = np.isin(codes, np.unique(codes[hit]))
    detail = np.empty(len(codes), dtype=object)
    for i in np.flatnonzero(hit):
        detail[i] = f"{counts[per_key[i]]:,} page views on {np.datetime64(int(days[i]), 'D')} (UTC)"
    out.remove(hit, "bots", detail)
    return ~hit


def _short_views(
    out: Cleaned, rule: ShortViewsRule, marks: dict[str, pd.Series], codes: np.ndarray, times: np.ndarray
) -> None:
    frame = out.frame
    if len(frame) == 0:
        return
    if "dwell" in marks:
        dwell = marks["dwell"].reindex(frame.index).to_numpy(dtype=float)
    else:
        pair = _session_pairs(codes, pd.factorize(frame["session_id"], sort=False)[0])
        order = _by_session_and_time(pair, times)
        same = pair[order][1:] == pair[order][:-1]
        gap = np.where(same, np.diff(times[order]) / 1e6, np.nan)
        dwell = np.empty(len(frame))
        dwell[order] = np.concatenate([gap, [np.nan]])  # the last view of a session: no next view
    hit = dwell < rule.min_dwell_seconds  # NaN (unknown) compares False: kept
    detail = np.empty(len(frame), dtype=object)
    for i in np.flatnonzero(hit):
        detail[i] = f"{dwell[i]:g} s on the page"
    out.remove(hit, "short_views", detail)


def _session_pairs(codes: np.ndarray, session: np.ndarray) -> np.ndarray:
    """One code per (customer, session): the session code itself when no session id is shared."""
    owner = np.full(session.max() + 1, -1, dtype=np.int64)
    owner[session] = codes
    if (owner[session] == codes).all():
        return session.astype(np.int64)
    return pd.factorize(codes.astype(np.int64) * (int(session.max()) + 1) + session, sort=False)[0]


def _by_session_and_time(pair: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row order by (customer, session) pair, then time, then file position.

    One stable sort of a packed key (session pair, milliseconds) when it fits in 63 bits: exports are
    mostly in time order already, so that takes a tenth of a three-key lexsort. Views within one
    millisecond keep their file order.
    """
    ms = (times - times.min()) // 1000
    time_bits = max(1, int(ms.max()).bit_length())
    if int(pair.max()).bit_length() + time_bits <= 63:
        return np.argsort((pair << time_bits) | ms, kind="stable")
    return np.lexsort((np.arange(len(times)), times, pair))


def _cancellations(
    out: Cleaned, spec: Table, rule: CancellationsRule, marks: dict[str, pd.Series], label: str
) -> None:
    """Find cancellations, net each against its original (latest first), quarantine both when the
    original is cancelled in full; a partly returned original stays with its amount reduced."""
    frame = out.frame
    idc = spec.id_column
    ids = frame[idc].astype(str).to_numpy(dtype=object)
    amount = frame["amount"].to_numpy(dtype=float)
    cancel = np.zeros(len(frame), dtype=bool)
    if rule.id_prefix:
        cancel |= frame[idc].astype(str).str.startswith(rule.id_prefix).to_numpy()
    if rule.negative_amount:
        cancel |= np.nan_to_num(amount, nan=0.0) < 0
    if rule.quantity_column:
        if "negative_quantity" not in marks:
            raise ConfigError(
                f"cleaning cancellations.quantity_column: {label} has no column {rule.quantity_column!r}"
            )
        cancel |= marks["negative_quantity"].reindex(frame.index).fillna(False).to_numpy(dtype=bool)
    if not cancel.any():
        return

    customers = frame[ENTITY_KEY].to_numpy(dtype=object)
    times = _micros(frame[spec.time_column])
    window = None if rule.within_days is None else rule.within_days * 86_400e6
    wanted = set(customers[cancel])
    candidates = np.flatnonzero(~cancel & pd.Series(customers).isin(wanted).to_numpy())
    candidates = candidates[np.lexsort((candidates, times[candidates]))]  # oldest first
    by_customer: dict[object, list[int]] = {}
    for i in candidates:
        by_customer.setdefault(customers[i], []).append(int(i))
    by_id = {ids[i]: int(i) for i in candidates}

    remaining = amount.copy()
    cancelled = np.zeros(len(frame), dtype=bool)
    detail = np.empty(len(frame), dtype=object)
    pending = np.flatnonzero(cancel)
    for c in pending[np.lexsort((pending, times[pending]))]:
        value = abs(amount[c]) if np.isfinite(amount[c]) else np.nan

        def usable(i: int, c=c) -> bool:
            return (
                customers[i] == customers[c]
                and times[i] <= times[c]
                and (window is None or times[c] - times[i] <= window)
                and not cancelled[i]
            )

        found = None
        for how in rule.match:
            if how == "id":
                found = _original_by_id(ids[c], by_id, usable)
            elif np.isfinite(value) and value > 0:
                latest_first = reversed(by_customer.get(customers[c], []))
                if how == "amount":
                    found = next((i for i in latest_first if usable(i) and abs(remaining[i] - value) < CENTS), None)
                else:  # covering
                    found = next((i for i in latest_first if usable(i) and remaining[i] >= value - CENTS), None)
            if found is not None:
                break
        if found is None:
            detail[c] = "amount 0: nothing to net" if value == 0 else NO_ORIGINAL
            continue
        before = remaining[found]
        if np.isfinite(value):
            remaining[found] = round(before - value, 9)
        if not np.isfinite(value) or not np.isfinite(before) or remaining[found] < CENTS:
            cancelled[found] = True
            detail[found] = f"cancelled by {ids[c]}"
            detail[c] = f"netted into {ids[found]} (cancelled in full)"
        else:
            detail[c] = f"netted into {ids[found]} ({before:,.2f} -> {remaining[found]:,.2f})"
    reduced = ~cancel & ~cancelled & (remaining != amount) & np.isfinite(amount)
    if reduced.any():
        out.frame = out.frame.copy()
        out.frame.loc[out.frame.index[reduced], "amount"] = remaining[reduced]
        out.notes.append(f"{label}: {int(reduced.sum()):,} order(s) reduced by the returns netted into them")
    out.remove(cancel | cancelled, "cancellations", detail)


def _original_by_id(cancel_id: str, by_id: dict[str, int], usable) -> int | None:
    """The order whose id is the cancellation's id with characters added before or after it (C123,
    123-R) or the same id; the longest such id first."""
    # At least half the cancellation's id must be the original's, so short ids do not match by chance.
    for cut in range(len(cancel_id) // 2 + 1):
        for candidate in {cancel_id[cut:], cancel_id[: len(cancel_id) - cut]}:
            i = by_id.get(candidate)
            if i is not None and usable(i):
                return i
    return None
