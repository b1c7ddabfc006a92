"""One source of truth: a code default equals what the shipped YAML sets, so a key left out of a YAML
behaves exactly like the shipped file. An empty default (None, {}, "") means "not set" and may be set.
For model specs the default is what a new spec gets: it must equal the value every shipped spec uses
(a field the specs set differently is per model)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from core.settings import REPO_ROOT
from core.specs import ModelSpec, model_names

CONFIGS = REPO_ROOT / "configs"


def _sub_model(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def leaf_values(model_cls: type[BaseModel], raw: dict, prefix: str = ""):
    """(dotted field, code default, YAML value) for every field the YAML sets and the code defaults."""
    for name, field in model_cls.model_fields.items():
        if name not in raw:
            continue
        sub = _sub_model(field.annotation)
        if sub is not None and isinstance(raw[name], dict):
            yield from leaf_values(sub, raw[name], f"{prefix}{name}.")
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            continue  # required: the YAML is the only source
        default = field.get_default(call_default_factory=True)
        if default in (None, {}, [], ""):
            continue
        yield f"{prefix}{name}", default, TypeAdapter(field.annotation).validate_python(raw[name])


def _classes():
    from features.settings import FeaturesConfig
    from pipelines.monitor import MonitorConfig
    from pipelines.run import RunConfig
    from serving.actions import ActionsConfig
    from serving.config import ServingConfig, StaffPageConfig

    return {"features.yaml": FeaturesConfig, "serving.yaml": ServingConfig, "actions.yaml": ActionsConfig,
            "monitor.yaml": MonitorConfig, "run.yaml": RunConfig, "staff_page.yaml": StaffPageConfig}


@pytest.mark.parametrize("name", ["features.yaml", "serving.yaml", "actions.yaml", "monitor.yaml", "run.yaml",
                                  "staff_page.yaml"])
def test_code_defaults_equal_the_shipped_yaml(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    wrong = [f"{f}: code {d!r}, {name} {v!r}" for f, d, v in leaf_values(_classes()[name], raw) if d != v]
    assert not wrong, "\n".join(wrong)


def test_spec_defaults_equal_what_every_shipped_spec_uses():
    values: dict[str, list] = {}
    defaults: dict[str, object] = {}
    names = model_names()
    assert len(names) >= 2
    for spec in names:
        raw = yaml.safe_load((CONFIGS / "models" / f"{spec}.yaml").read_text())
        for field, default, value in leaf_values(ModelSpec, raw):
            values.setdefault(field, []).append(value)
            defaults[field] = default
    shared = {f: v[0] for f, v in values.items() if len(v) == len(names) and all(x == v[0] for x in v)}
    wrong = [f"{f}: code {defaults[f]!r}, every spec {v!r}" for f, v in shared.items() if defaults[f] != v]
    assert not wrong, "\n".join(wrong)
