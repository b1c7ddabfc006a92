"""The served champions: ``ModelSet`` (one immutable snapshot per request) and ``ModelRegistry``, which
loads ``models:/<name>@<alias>`` and follows the alias with a polling thread (hot reload)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PropensityError

log = logging.getLogger("propensity.serving")


class RegistryUnavailable(PropensityError):
    """The MLflow registry database cannot be read; ``transient`` when waiting may help (a lock)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def tracking_db_file(uri: str | None = None) -> Path | None:
    """The SQLite file behind the tracking URI (``sqlite:///rel`` or ``sqlite:////abs``), else None."""
    if uri is None:
        from core.settings import project_paths

        uri = project_paths().tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def check_registry_db(uri: str | None = None, timeout: float = 1.0) -> None:
    """Raise RegistryUnavailable, one line naming the file, when the registry's SQLite file is corrupt or
    locked. Through MLflow the same file gives a multi-line SQLAlchemy error, and a lock only after
    SQLAlchemy's retries (10-30 s); sqlite3 itself answers in ``timeout``. A file that does not exist
    yet is fine (MLflow creates it); other tracking stores are not checked."""
    import sqlite3

    path = tracking_db_file(uri)
    if path is None or not path.exists():
        return
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise RegistryUnavailable(f"MLflow registry database {path} is locked by another process; "
                                      "retrying", transient=True) from None
        raise RegistryUnavailable(f"MLflow registry database {path} cannot be read: {exc}", transient=True) from None
    except sqlite3.DatabaseError as exc:
        raise RegistryUnavailable(f"MLflow registry database {path} is not readable ({exc}): corrupt? restore "
                                  "it from a backup or point MLFLOW_TRACKING_URI elsewhere", transient=False) from None


def one_line(exc: BaseException) -> str:
    """An exception as one log line: SQLAlchemy's messages carry the SQL and a link on further lines."""
    if isinstance(exc, PropensityError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass(frozen=True)
class ModelSet:
    """The champions one request is answered with: swapped as a whole, never mutated."""

    models: dict[str, Any]  # name -> training.champion.LoadedModel

    def versions(self) -> dict[str, str]:
        return {name: m.version for name, m in self.models.items()}


class ModelRegistry:
    """Loads ``models:/<name>@<alias>`` for every served model and follows the alias.

    A background thread polls the registry; when an alias points at a new version it loads that version
    first and then replaces the whole ModelSet in one assignment, so requests in flight finish on the old
    models and none is dropped or answered with a half-swapped pair.
    """

    def __init__(self, names: Sequence[str], alias: str = "champion", loader: Callable[..., Any] | None = None):
        self.names = list(names)
        self.alias = alias
        self._loader = loader
        self.current: ModelSet | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self, name: str) -> Any:
        if self._loader is None:
            from training.champion import load_model_version

            self._loader = load_model_version
        return self._loader(name, alias=self.alias)

    def load(self) -> ModelSet:
        self.current = ModelSet({name: self._load(name) for name in self.names})
        self.last_error = None
        log.info("serving models %s", self.current.versions())
        return self.current

    def _alias_versions(self) -> dict[str, str]:
        from training.tracking import client

        mlflow_client = client()
        return {n: str(mlflow_client.get_model_version_by_alias(n, self.alias).version) for n in self.names}

    def refresh(self) -> bool:
        """Check the aliases once; load and swap in what moved. True when something changed."""
        try:
            check_registry_db()
            if self.current is None:
                self.load()
                return True
            wanted = self._alias_versions()
            have = self.current.versions()
            moved = [n for n in self.names if wanted[n] != have.get(n)]
            if not moved:
                return False
            models = dict(self.current.models)
            for name in moved:
                models[name] = self._load(name)
            self.current = ModelSet(models)  # one assignment: atomic for readers
            self.last_error = None
            log.info("champion moved: now serving %s", self.current.versions())
            return True
        except Exception as exc:  # the registry being briefly unreachable must not kill the poller
            self.last_error = self._describe(exc)
            log.warning("model refresh failed: %s", self.last_error)
            return False

    @staticmethod
    def _describe(exc: BaseException) -> str:
        """One line naming the file when the registry database is the problem (a failure part-way, with
        the file locked meanwhile, reaches here as SQLAlchemy's error: the check names it)."""
        if not isinstance(exc, RegistryUnavailable):
            try:
                check_registry_db(timeout=0.1)
            except RegistryUnavailable as db_problem:
                return str(db_problem)
        return one_line(exc)

    def start_polling(self, interval: float, also: Sequence[Callable[[], Any]] = ()) -> None:
        """Poll the registry every ``interval`` seconds, and run each of ``also`` on the same beat (the
        forgotten-ids check): one thread per worker for everything that follows files."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()
                for task in also:
                    try:
                        task()
                    except Exception:  # one failing task must not stop the poller
                        log.exception("poll task %s failed", getattr(task, "__name__", task))

        self._thread = threading.Thread(target=loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
