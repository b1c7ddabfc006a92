"""Atomic writes: the one way files are written here. Readers see the old file or the new one, never a
half-written one, and a failure leaves the old file in place (write to a temp path beside the target,
then rename: ``os.replace`` is atomic on one filesystem)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_path_for(path: Path) -> Path:
    """A hidden, unique sibling of ``path`` (same folder, so the final rename stays on one filesystem)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s new content to; on success it replaces ``path``.

    Works for a file or a folder: a folder target that exists is swapped out and removed afterwards.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = temp_path_for(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp)`` to write the content, then move it to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str))


def write_parquet(path: str | Path, frame) -> Path:
    """A pandas DataFrame or an Arrow table as Parquet (no index)."""
    if hasattr(frame, "to_parquet"):
        return write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))
    import pyarrow.parquet as pq

    return write_with(path, lambda tmp: pq.write_table(frame, tmp))
