"""The column map (``--column-map``): how your files differ from the canonical tables, and applying it.

``ColumnMap`` has one ``TableMap`` per table of ``core.contract.TABLES`` (built from it, so a new family
gets its section without an edit here) and the settings that hold for every file: time zone, default
date format, CSV dialect and encoding, the sane date range, the largest field accepted, and overrides
of the cleaning rules for these files.

A canonical column is either a column of your file (``amount: Total``) or computed from several
(``amount: {multiply: [Quantity, UnitPrice]}``). A file with one row per order line says so under
``lines:``; its lines are added up into orders by the order id.
"""

from __future__ import annotations

import codecs
import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, create_model, field_validator, model_validator

from core.config import StrictModel, load_config
from core.contract import FLOAT, INT, TABLES, Table
from core.schemas import EARLIEST, Problem
from pipelines.ingest.cleaning import check_overrides

EPOCH_FORMATS = {"epoch_s": "s", "epoch_ms": "ms"}
MAX_FIELD_BYTES = 1_000_000  # one CSV field or Parquet string: more is a broken export, not data


class Multiply(StrictModel):
    """A canonical column computed as the product of columns of your file (amount = quantity x price)."""

    multiply: list[str] = Field(min_length=2, description="columns of your file whose product is the value")


class Lines(StrictModel):
    """The file has one row per order line: lines with the same id are one order (amounts added up,
    the first line's time)."""

    keep: list[str] = Field(
        default_factory=list,
        description="columns of your file kept on the order, with its first line's value (others are "
        "line details and are not stored)",
    )


class TableMap(StrictModel):
    """How one of your files differs from the canonical table."""

    columns: dict[str, str | Multiply] = Field(
        default_factory=dict,
        description="canonical column name -> the column's name in your file, or {multiply: [a, b]}",
    )
    lines: Lines | None = Field(None, description="the file lists order lines, not orders")
    date_format: str | None = Field(
        None,
        description="strftime format of every timestamp column of this file, 'ISO8601', 'epoch_s' or 'epoch_ms'",
    )
    date_formats: dict[str, str] = Field(
        default_factory=dict, description="per canonical column, overrides date_format"
    )
    drop: list[str] = Field(default_factory=list, description="columns of your file to ignore")

    @property
    def renames(self) -> dict[str, str]:
        """canonical -> your column, for the columns taken as they are."""
        return {c: f for c, f in self.columns.items() if isinstance(f, str)}

    @property
    def computed(self) -> dict[str, Multiply]:
        return {c: f for c, f in self.columns.items() if isinstance(f, Multiply)}

    def sources(self) -> list[str]:
        """Every column of your file the map names (renamed or used in a computation)."""
        names = list(self.renames.values())
        for how in self.computed.values():
            names += [n for n in how.multiply if n not in names]
        return names


class _ColumnMapBase(StrictModel):
    """A ``--column-map`` YAML: foreign column names, date formats and CSV dialect, per table."""

    timezone: str = Field("UTC", description="time zone of timestamps written without an offset")
    date_format: str | None = Field(None, description="default date format for every table")
    delimiter: str = Field(",", description="CSV field separator (one character)")
    decimal: str = Field(".", description="CSV decimal mark")
    encoding: str = Field(
        "utf-8", description="text encoding of CSV files (e.g. iso-8859-1, cp1252); one byte per ASCII character"
    )
    earliest: dt.date = Field(
        EARLIEST.date(), description="timestamps before this day (UTC) are rejected as broken"
    )
    max_field_bytes: int = Field(
        MAX_FIELD_BYTES, ge=1, description="largest CSV field / Parquet string accepted, in bytes"
    )
    cleaning: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of configs/cleaning.yaml for these files (same keys, nested keys merge)",
    )

    @field_validator("cleaning")
    @classmethod
    def _cleaning_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_overrides(value)

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, value: str) -> str:
        try:
            name = codecs.lookup(value).name
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, iso-8859-1, cp1252)") from exc
        # The CSV structure scan reads bytes: separators, quotes and line ends must be single ASCII bytes.
        if ',";\n\r\t'.encode(name, errors="replace") != b',";\n\r\t':
            raise ValueError(f"{value!r} is not ASCII-compatible (UTF-16 and the like): save the export as UTF-8")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')"
            ) from exc
        return value

    @field_validator("delimiter", "decimal")
    @classmethod
    def _one_character(cls, value: str) -> str:
        # The CSV structure check scans bytes for the separator: it must be one ASCII character.
        if len(value) != 1 or not value.isascii():
            raise ValueError(f"must be one ASCII character, got {value!r}")
        return value

    @model_validator(mode="after")
    def _names_match_contract(self) -> _ColumnMapBase:
        for name, spec in TABLES.items():
            tmap: TableMap = getattr(self, name)
            for canonical in tmap.columns:
                if canonical not in spec.names and not spec.extra_columns_allowed:
                    raise ValueError(
                        f"{name}.columns: {canonical!r} is not a column of {name} (columns: {', '.join(spec.names)})"
                    )
            for canonical in tmap.computed:
                if canonical in spec.names and spec.column(canonical).kind not in (FLOAT, INT):
                    raise ValueError(f"{name}.columns.{canonical}: only a number can be computed (multiply)")
            foreign = list(tmap.renames.values())
            if len(set(foreign)) != len(foreign):
                raise ValueError(f"{name}.columns: a column of your file is mapped twice")
            factors = {f for how in tmap.computed.values() for f in how.multiply}
            if factors & set(foreign):
                both = ", ".join(sorted(factors & set(foreign)))
                raise ValueError(f"{name}.columns: {both} is both renamed and multiplied (keep it under its own name)")
            if tmap.lines is not None and (spec.id_column is None or "amount" not in spec.names):
                raise ValueError(f"{name}.lines: only a table with ids and amounts (orders) has lines")
            timestamps = set(spec.timestamp_names)
            for canonical in tmap.date_formats:
                if canonical not in timestamps:
                    raise ValueError(
                        f"{name}.date_formats: {canonical!r} is not a timestamp column (those are: {', '.join(sorted(timestamps))})"
                    )
        return self

    def table(self, name: str) -> TableMap:
        return getattr(self, name)

    def date_format_for(self, table: str, column: str) -> str | None:
        tmap = self.table(table)
        return tmap.date_formats.get(column) or tmap.date_format or self.date_format

    @property
    def earliest_timestamp(self) -> pd.Timestamp:
        return pd.Timestamp(self.earliest, tz="UTC")

    def describe(self, table: str) -> str:
        """The map applied to a table, for error messages: 'column map applied: a <- A, ...'."""
        tmap = self.table(table)
        if not tmap.columns and not tmap.drop:
            return f"no column map for {table}"
        parts = [
            f"{c} <- {f}" if isinstance(f, str) else f"{c} <- {' x '.join(f.multiply)}"
            for c, f in tmap.columns.items()
        ]
        text = f"column map applied: {', '.join(parts) or '(no renames)'}"
        return text + (f"; dropped: {', '.join(tmap.drop)}" if tmap.drop else "")


# One section per table of the contract: a new family is mapped like the others.
ColumnMap = create_model(
    "ColumnMap",
    __base__=_ColumnMapBase,
    __doc__=_ColumnMapBase.__doc__,
    **{name: (TableMap, Field(default_factory=TableMap)) for name in TABLES},
)


def load_column_map(path: str | Path | None) -> _ColumnMapBase:
    """The validated column map at ``path``; the identity map (canonical names, ISO dates, UTC) when None."""
    if path is None:
        return ColumnMap()
    return load_config(path, ColumnMap)


def map_columns(
    raw: pd.DataFrame, spec: Table, cmap: _ColumnMapBase, label: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Rename and drop the file's columns as the map says; the problems when the file does not fit.

    Every message about a missing column lists the file's own column names and the map applied, which
    is what the user needs to see to fix either the file or the map.
    """
    tmap = cmap.table(spec.name)
    own = list(raw.columns)
    context = f"columns in the file: {', '.join(own)}; {cmap.describe(spec.name)}"
    renames = tmap.renames
    renamed_away = set(renames.values())
    problems: list[Problem] = []
    for canonical, how in tmap.computed.items():
        for foreign in how.multiply:
            if foreign not in own:
                problems.append(
                    Problem(
                        label,
                        foreign,
                        f"not in the file, but the column map multiplies it for {spec.name}.{canonical} ({context})",
                    )
                )
        if canonical in own and canonical not in tmap.drop:
            problems.append(
                Problem(
                    label,
                    canonical,
                    f"the column map computes {canonical}, but the file also has a column '{canonical}' "
                    f"(list it under {spec.name}.drop)",
                )
            )
    if tmap.lines is not None and spec.id_column not in renames and spec.id_column not in own:
        problems.append(
            Problem(
                label,
                spec.id_column,
                f"order lines need the order id: map your column for {spec.name}.{spec.id_column} ({context})",
            )
        )
    for canonical, foreign in renames.items():
        if foreign not in own:
            problems.append(
                Problem(
                    label,
                    foreign,
                    f"not in the file, but the column map names it for {spec.name}.{canonical} ({context})",
                )
            )
        elif (
            canonical != foreign
            and canonical in own
            and canonical not in renamed_away
            and canonical not in tmap.drop
        ):
            problems.append(
                Problem(
                    label,
                    foreign,
                    f"the column map renames it to {canonical}, but the file also has a column '{canonical}' "
                    f"(list one of them under {spec.name}.drop)",
                )
            )
    mapped = raw.drop(columns=[c for c in tmap.drop if c in own])
    mapped = mapped.rename(columns={f: c for c, f in renames.items()})

    derivable = {spec.id_column} if spec.id_derivable and tmap.lines is None else set()
    for col in spec.required_names:
        if col not in mapped.columns and col not in derivable and col not in tmap.columns:
            problems.append(
                Problem(
                    label,
                    col,
                    f"required column is missing ({context}); map your name for it in the column map",
                )
            )
    if not spec.extra_columns_allowed:
        consumed = {n for how in tmap.computed.values() for n in how.multiply}
        for col in [c for c in mapped.columns if c not in spec.names and c not in consumed]:
            problems.append(
                Problem(
                    label,
                    col,
                    f"unexpected column in {spec.name}; list it under {spec.name}.drop in the column map "
                    "to ignore it",
                )
            )
    return (None, problems) if problems else (mapped, [])
