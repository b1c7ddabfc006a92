"""configs/generate.yaml: strict schema, and the shipped file says what the built-in defaults say."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from pipelines.synthetic import GeneratorConfig, load_generator_config


def test_config_file_is_strict(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("funnel:\n  entry_rate: 0.05\n")
    assert load_generator_config(good).funnel.entry_rate == 0.05
    bad = tmp_path / "bad.yaml"
    bad.write_text("funnel:\n  entry_rte: 0.05\n")
    with pytest.raises(ConfigError, match="entry_rte"):
        load_generator_config(bad)


def test_project_config_matches_the_built_in_defaults():
    from core.settings import REPO_ROOT

    assert load_generator_config(REPO_ROOT / "configs" / "generate.yaml") == GeneratorConfig()
