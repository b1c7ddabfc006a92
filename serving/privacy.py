"""Forgotten customers reach the running service: `propensity forget` records a hash of each forgotten id
in the project (``ProjectPaths.forgotten_ids``), and every serving worker re-reads that file on its
poll when it changed, dropping those customers from what it keeps in memory (the staff page's recent
calls, ``predictor.RecentFlagged``).

The file holds SHA-256 hex digests, one a line, never the ids themselves: the point of forgetting is that
the project no longer stores them. (Ids that are easy to enumerate could be matched against the digests
by someone with the file; the file only ever confirms ids the project was asked to forget.)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from core.settings import ProjectPaths, project_paths

log = logging.getLogger("propensity.serving")


def id_hash(customer_id: str) -> str:
    # surrogatepass: an id from the command line may carry undecodable bytes as surrogates (Python's
    # surrogateescape); it must hash, not crash. Valid ids hash the same as their UTF-8 bytes.
    return hashlib.sha256(customer_id.encode("utf-8", "surrogatepass")).hexdigest()


def record_forgotten(customer_ids: Iterable[str], paths: ProjectPaths | None = None) -> int:
    """Append the hashes of ``customer_ids`` to the project's forgotten-ids file; returns how many were
    new. One ``write`` in append mode, so concurrent `forget` runs and readers never see a torn line
    (readers also ignore a last line without its newline)."""
    path = (paths or project_paths()).forgotten_ids
    known = _read(path)
    new = sorted({id_hash(c) for c in customer_ids} - known)
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as out:
            out.write("".join(f"{h}\n" for h in new))
            out.flush()
            os.fsync(out.fileno())
    return len(new)


def _read(path: Path) -> frozenset[str]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return frozenset()
    lines = text.split("\n")[:-1]  # the part after the last newline is a write still in progress
    return frozenset(line for line in lines if len(line) == 64)


class ForgottenIds:
    """The forgotten-ids file as seen by one worker: re-read only when its size or mtime changed."""

    def __init__(self, paths: ProjectPaths | None = None):
        self.path = (paths or project_paths()).forgotten_ids
        self.hashes: frozenset[str] = frozenset()
        self._stamp: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the set of hashes changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        hashes = _read(self.path)
        if hashes == self.hashes:
            return False
        self.hashes = hashes
        return True
