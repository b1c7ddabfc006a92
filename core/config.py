"""Strict YAML config loading: every pipeline validates its YAML into a pydantic model that forbids
unknown keys, so a typo is an error naming the key and the file instead of a silently ignored setting."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def load_config(path: str | Path, model: type[M]) -> M:
    """Read ``path`` and validate it into ``model``; raise ConfigError naming the file and each bad field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {field}: {err['msg']}")
        raise ConfigError(f"{path}: invalid config\n" + "\n".join(problems)) from exc


def config_path(name: str) -> Path:
    """Path of ``configs/<name>`` for the current project."""
    from core.settings import project_paths

    return project_paths().configs / name
