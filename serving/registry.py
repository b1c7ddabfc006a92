"""The served champions: ``ModelSet`` (one immutable snapshot per request) and ``ModelRegistry``, which
loads ``models:/<name>@<alias>`` and follows the alias with a polling thread (hot reload)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("propensity.serving")


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
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model refresh failed: %s", self.last_error)
            return False

    def start_polling(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
