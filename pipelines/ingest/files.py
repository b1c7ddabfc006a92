"""Reading one export file (CSV or Parquet) into a raw frame, refusing what is not a sound table.

A CSV is checked for its structure before pandas reads it, because pandas is silent where a broken
export should be loud: a NUL byte ends the value it is in ('1\\x000.5' read as 1), a duplicate header
becomes ``customer_id.1``, a short row is padded with empty values, a row longer than the header
shifts every column, and a file of zero bytes reads as "a header without rows".

The check is in two steps so that a sound file costs one vectorised pass over its bytes (numpy, a
sixth of pandas' own read time on the demo's page views): that pass counts each record's fields
(quote-aware), the longest record, and control bytes. Only when it finds something suspect does the exact step re-read the file
with the ``csv`` module (the same quoting rules as pandas) to name each offending row and column.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from core.errors import DataError
from core.schemas import SHOWN_ROWS, Problem

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
SAMPLE_BYTES = 1 << 16  # enough of a file to tell text from binary
CHUNK_BYTES = 1 << 24  # the structure scan reads this much at a time

# C0 control characters except tab, line feed and carriage return (CSV structure), and DEL.
CONTROL_CODES = [*range(0, 9), 11, 12, *range(14, 32), 127]
CONTROL_BYTES = bytes(CONTROL_CODES)
CONTROL_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in CONTROL_CODES) + "]")
CONTROL_RE2 = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"  # the same set, for Arrow's RE2
_NOT_CONTROL = bytes(b for b in range(256) if b not in CONTROL_CODES)  # bytes.translate deletes these
_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 11: "VT", 12: "FF", 27: "ESC", 127: "DEL"}

# Signatures of files that end up named .csv by mistake.
MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx?)",
    b"\xd0\xcf\x11\xe0": "an Office document (an Excel .xls?)",
    b"PAR1": "a Parquet file (name it .parquet)",
    b"\x1f\x8b": "gzip-compressed (name it .csv.gz)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"SQLite format 3": "a SQLite database",
}


@dataclass
class RawFile:
    """A file as read: all columns (CSV: as text), or the problems that kept it from being read."""

    frame: pd.DataFrame | None
    problems: list[Problem]


def read_file(path: Path, delimiter: str, max_field_bytes: int, encoding: str = "utf-8") -> RawFile:
    """Read ``path`` by its suffix; each problem names the file (and row and column where there is one).

    ``encoding`` is that of CSV text (the column map's ``encoding``): UTF-8 unless the map says otherwise.
    """
    label = str(path)
    name = path.name.lower()
    if not path.is_file():
        return RawFile(None, [Problem(label, None, "file not found")])
    if path.stat().st_size == 0:
        return RawFile(None, [Problem(label, None, "file is empty")])
    try:
        if name.endswith(CSV_SUFFIXES):
            sep = "\t" if name.endswith(".tsv") else delimiter
            return _read_csv(path, sep, max_field_bytes, label, _text_encoding(encoding))
        if name.endswith(PARQUET_SUFFIXES):
            return _read_parquet(path, max_field_bytes, label)
    except DataError as exc:
        return RawFile(None, [Problem(label, None, str(exc))])
    return RawFile(
        None, [Problem(label, None, "unknown file type; use .csv, .tsv, .csv.gz, .parquet or .pq")]
    )


def control_name(text: str) -> str:
    """The first control character of ``text``, named: 'NUL', 'ESC', 'U+0001'."""
    match = CONTROL_RE.search(text)
    code = ord(match.group()) if match else 0
    return _NAMES.get(code, f"U+{code:04X}")


# ---- CSV ----------------------------------------------------------------------------------------------------
def _opener(path: Path) -> Callable[..., IO]:
    return gzip.open if path.name.lower().endswith(".gz") else open


def _text_encoding(encoding: str) -> str:
    """The codec to open CSV text with: UTF-8 with an optional BOM, or the encoding the map names."""
    import codecs

    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def _read_csv(path: Path, sep: str, limit: int, label: str, encoding: str = "utf-8-sig") -> RawFile:
    opener = _opener(path)
    try:
        with opener(path, "rb") as fh:
            sample = fh.read(SAMPLE_BYTES)
    except (OSError, EOFError) as exc:  # a broken .gz
        raise DataError(f"cannot read the file: {exc}") from exc
    if not sample:
        raise DataError("file is empty")
    _sniff(sample, complete=len(sample) < SAMPLE_BYTES, encoding=encoding)

    try:
        header = _header(path, sep, encoding)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the header line: {exc}") from exc
    duplicates = _duplicate_names(header, label)
    if duplicates:
        return RawFile(None, duplicates)
    scan = _scan(path, sep.encode())
    if scan.ragged or scan.longest_record > limit or scan.control:
        problems = _diagnose(path, sep, limit, label, encoding)
        if problems:
            return RawFile(None, problems)
    try:
        # Everything as text: ids like '007' keep their zeros and each column gets parsed by its contract.
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            index_col=False,
            encoding=encoding,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError("file is empty") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not {_encoding_name(encoding)} text (byte 0x{exc.object[exc.start]:02x} past the first "
            f"{SAMPLE_BYTES // 1024} KB); {_encoding_hint(encoding)}"
        ) from exc
    except Exception as exc:  # the parser raises many types; all mean the file cannot be read
        raise DataError(f"cannot read the file: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return RawFile(frame, [])


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8-sig" else encoding


def _encoding_hint(encoding: str) -> str:
    if encoding == "utf-8-sig":
        return "save the export as UTF-8, or set encoding in the column map (e.g. encoding: iso-8859-1)"
    return "check the column map's encoding"


def _sniff(sample: bytes, complete: bool, encoding: str = "utf-8-sig") -> None:
    """Raise DataError when the file's first bytes are not text in ``encoding``."""
    for magic, kind in MAGIC.items():
        if sample.startswith(magic):
            raise DataError(f"not a text/CSV file (looks like {kind})")
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            "not UTF-8 text (UTF-16, as Excel's 'Unicode text' writes it); save the export as UTF-8"
        )
    controls = len(sample) - len(sample.translate(None, CONTROL_BYTES))
    if controls > max(3, len(sample) // 20):
        raise DataError(f"not a text/CSV file ({controls:,} control bytes in its first {len(sample):,})")
    try:
        sample.decode(encoding)
    except UnicodeDecodeError as exc:
        if not complete and exc.start >= len(sample) - 3:  # a character cut by the sample's end
            return
        line = sample[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not {_encoding_name(encoding)} text (byte 0x{sample[exc.start]:02x} on line {line}); "
            f"{_encoding_hint(encoding)}"
        ) from exc


def _header(path: Path, sep: str, encoding: str = "utf-8-sig") -> list[str]:
    with _opener(path)(path, "rt", encoding=encoding, newline="") as fh:
        return next((r for r in csv.reader(fh, delimiter=sep) if r), [])  # pandas skips blank lines


def _duplicate_names(header: list[str], label: str) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for i, raw in enumerate(header, start=1):
        name = raw.strip()
        if name in seen:
            problems.append(
                Problem(label, name, f"duplicate column name in the header (columns {seen[name]} and {i})")
            )
        else:
            seen[name] = i
    return problems


@dataclass
class _Scan:
    ragged: bool = False  # some record has another field count than the header
    longest_record: int = 0  # bytes: no field can be longer
    control: bool = False  # a control byte somewhere


def _scan(path: Path, sep: bytes) -> _Scan:
    """One vectorised pass over the bytes: field counts per record, longest record, control bytes.

    A separator or line feed counts only outside quotes; being inside quotes is the parity of the
    quote characters before it (a doubled quote inside a quoted field flips it twice). A quote in the
    middle of an unquoted field (``5" screen``) misleads the parity: the scan then reports a suspect
    record and the exact step decides.
    """
    result = _Scan()
    quote, newline, delim = ord('"'), ord("\n"), sep[0]
    inside = 0  # quote parity carried across chunks
    delims_in_record = 0  # separators of the record still open at the end of a chunk
    record_start = 0  # absolute offset of that record's first byte
    header: int | None = None
    offset = 0
    last_byte = -1  # the previous chunk's last byte
    with _opener(path)(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            arr = np.frombuffer(chunk, dtype=np.uint8)
            result.control |= len(chunk.translate(None, _NOT_CONTROL)) > 0
            quotes = np.flatnonzero(arr == quote)
            ends = np.flatnonzero(arr == newline)
            seps = np.flatnonzero(arr == delim)
            if inside or len(quotes):
                # Inside quotes = an odd number of quote characters before the byte (this chunk's plus
                # the parity carried over): looked up only at the separators, not for every byte.
                ends = ends[((np.searchsorted(quotes, ends) + inside) & 1) == 0]
                seps = seps[((np.searchsorted(quotes, seps) + inside) & 1) == 0]
                inside = (len(quotes) + inside) & 1
            if len(ends):
                counts = np.diff(np.searchsorted(seps, ends), prepend=0)
                counts[0] += delims_in_record
                starts = np.concatenate([[record_start - offset], ends[:-1] + 1])
                lengths = ends - starts
                before = np.where(ends > 0, arr[np.maximum(ends - 1, 0)], last_byte)  # CR of a CRLF
                carriage = before == ord("\r")
                blank = (lengths == 0) | ((lengths == 1) & carriage)  # pandas skips empty lines too
                fields = counts[~blank] + 1
                if len(fields):
                    if header is None:
                        header, fields = int(fields[0]), fields[1:]
                    result.ragged |= bool((fields != header).any())
                result.longest_record = max(result.longest_record, int(lengths.max()))
                delims_in_record = len(seps) - int(np.searchsorted(seps, ends[-1]))
                record_start = offset + int(ends[-1]) + 1
            else:
                delims_in_record += len(seps)
            offset += len(arr)
            last_byte = int(arr[-1])
    tail = offset - record_start  # a last record without a line feed
    if tail > 0:
        result.longest_record = max(result.longest_record, tail)
        if header is not None and delims_in_record + 1 != header:
            result.ragged = True
    return result


def _diagnose(path: Path, sep: str, limit: int, label: str, encoding: str = "utf-8-sig") -> list[Problem]:
    """The exact step: read every record with the csv module and name what is wrong where."""
    ragged: list[tuple[int, int]] = []
    big: dict[str, list[tuple[int, int]]] = {}
    control: dict[str, list[tuple[int, str]]] = {}
    previous = csv.field_size_limit()
    csv.field_size_limit(max(4 * limit, previous))  # characters; a field over it is over the byte limit too
    row = 0
    codec = "utf-8" if encoding == "utf-8-sig" else encoding  # sizes in the file's bytes, no BOM
    try:
        with _opener(path)(path, "rt", encoding=encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=sep)
            header = [h.strip() for h in next((r for r in reader if r), [])]
            width = len(header)
            if CONTROL_RE.search("".join(header)):
                return [
                    Problem(
                        label,
                        None,
                        f"the header contains a control character ({control_name(''.join(header))})",
                    )
                ]
            try:
                for record in reader:
                    if not record:
                        continue  # an empty line: pandas skips it and does not count it as a row
                    row += 1
                    if len(record) != width:
                        ragged.append((row, len(record)))
                        continue
                    has_control = CONTROL_RE.search("".join(record)) is not None
                    for name, value in zip(header, record, strict=True):
                        if len(value) * 4 > limit and len(value.encode(codec)) > limit:
                            big.setdefault(name, []).append((row, len(value.encode(codec))))
                        elif has_control and CONTROL_RE.search(value):
                            control.setdefault(name, []).append((row, value))
            except csv.Error as exc:  # a field longer than even the csv module's limit
                return [
                    Problem(
                        label,
                        None,
                        f"row {row + 1}: a field over the limit of {limit:,} bytes "
                        f"(max_field_bytes in the column map) ({exc})",
                    )
                ]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not {_encoding_name(encoding)} text (after row {row}); {_encoding_hint(encoding)}"
        ) from exc
    finally:
        csv.field_size_limit(previous)

    problems = []
    if ragged:
        first_row, fields = ragged[0]
        what = f"row {first_row} has {fields} fields, the header has {width}"
        if len(ragged) > 1:
            more = ", ".join(str(r) for r, _ in ragged[1:SHOWN_ROWS])
            what += f"; {len(ragged) - 1} more row(s) with another number of fields (rows {more}"
            what += ", ...)" if len(ragged) > SHOWN_ROWS else ")"
        problems.append(Problem(label, None, what))
    for name, hits in big.items():
        problems.append(
            Problem(
                label,
                name,
                f"field over the limit of {limit:,} bytes (max_field_bytes in the column map)",
                len(hits),
                [r for r, _ in hits[:SHOWN_ROWS]],
                [f"<{n:,} bytes>" for _, n in hits[:SHOWN_ROWS]],
            )
        )
    for name, hits in control.items():
        problems.append(
            Problem(
                label,
                name,
                f"contains a control character ({control_name(hits[0][1])}), which cuts the "
                "value short when read; remove it from the export",
                len(hits),
                [r for r, _ in hits[:SHOWN_ROWS]],
                [v for _, v in hits[:SHOWN_ROWS]],
            )
        )
    return problems


# ---- Parquet --------------------------------------------------------------------------------------------------
def _read_parquet(path: Path, limit: int, label: str) -> RawFile:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        duplicates = _duplicate_names([str(n) for n in pq.read_schema(path).names], label)
        if duplicates:
            return RawFile(None, duplicates)
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types; all mean the file cannot be read
        raise DataError(f"cannot read the file: {exc}") from exc
    problems = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        name = str(name).strip()
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        sizes = pc.binary_length(column)
        if (pc.max(sizes).as_py() or 0) > limit:
            over = np.flatnonzero(
                pc.fill_null(pc.greater(sizes, limit), False).to_numpy(zero_copy_only=False)
            )
            problems.append(
                Problem(
                    label,
                    name,
                    f"field over the limit of {limit:,} bytes (max_field_bytes in the column map)",
                    len(over),
                    [int(i) + 1 for i in over[:SHOWN_ROWS]],
                    [f"<{sizes[int(i)].as_py():,} bytes>" for i in over[:SHOWN_ROWS]],
                )
            )
            continue
        hits = pc.fill_null(pc.match_substring_regex(column, CONTROL_RE2), False)
        if pc.any(hits).as_py():
            rows = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
            values = [column[int(i)].as_py() for i in rows[:SHOWN_ROWS]]
            problems.append(
                Problem(
                    label,
                    name,
                    f"contains a control character ({control_name(values[0])}); remove it from the export",
                    len(rows),
                    [int(i) + 1 for i in rows[:SHOWN_ROWS]],
                    values,
                )
            )
    if problems:
        return RawFile(None, problems)
    frame = table.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    return RawFile(frame, [])
