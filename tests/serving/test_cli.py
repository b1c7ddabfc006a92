"""`propensity serve`: registered with help on every option, and the command line / environment it runs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


def test_serve_is_registered_with_help():
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers"):
        assert option in result.output


def test_serve_command_and_environment(project_home):
    from core.settings import REPO_ROOT
    from pipelines.cli.serve import serve_command, serve_environment

    cmd = serve_command("127.0.0.1", 3123)
    # bentoml's own `serve` command, run through serving.launch (a metrics folder per process).
    assert cmd[1:3] == ["-m", "serving.launch"]
    assert cmd[3:5] == ["serve", "serving.service:PropensityService"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "3123"
    assert cmd[cmd.index("--working-dir") + 1] == str(REPO_ROOT)
    env = serve_environment(workers=3, threads=1)
    assert env["PROPENSITY_SERVING_WORKERS"] == "3" and env["OMP_NUM_THREADS"] == "1"
    assert env["BENTOML_DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["BENTOML_HOME"].startswith(str(project_home))


def _configs(tmp_path, edit: dict[str, tuple[str, str]]):
    """A copy of the shipped configs with text replacements per file: {relative path: (old, new)}."""
    import shutil

    from core.settings import REPO_ROOT

    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    for name, (old, new) in edit.items():
        text = (configs / name).read_text(encoding="utf-8")
        assert old in text, (name, old)
        (configs / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    return configs


@pytest.mark.parametrize(
    ("name", "old", "new", "field"),
    [
        ("reasons.yaml", "{complaints_30d:.0f} complaints in the last 30 days",
         "{complaints_30d:.0q} complaints in the last 30 days", "features.complaints_30d.en"),
        ("serving.yaml", "max_batch_size: 100", "max_batch_size: 0", "max_batch_size"),
        ("actions.yaml", "    high_at_least: 4", "    high_at_least: four", "layers.activity"),
        ("models/churn.yaml", "bands: {high_top_fraction: 0.15, medium_top_fraction: 0.4}",
         "bands: {high_top_fraction: 0.5, medium_top_fraction: 0.4}", "bands"),
    ],
)
def test_serving_config_is_checked_whole_before_start(tmp_path, monkeypatch, project_home, name, old, new, field):
    from core.errors import ConfigError
    from serving.config import validate_serving_setup

    monkeypatch.setenv("PROPENSITY_CONFIGS", str(_configs(tmp_path, {name: (old, new)})))
    with pytest.raises(ConfigError) as err:
        validate_serving_setup()
    assert name.rsplit("/", 1)[-1] in str(err.value) and field in str(err.value)


def test_serve_exits_2_on_a_bad_template_without_starting_workers(tmp_path, project_home):
    """Before: the workers crash-looped on the template at start-up."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    configs = _configs(tmp_path, {"reasons.yaml": ("{complaints_30d:.0f} complaints", "{complaints_30d:.0q} complaints")})
    env = {**os.environ, "PROPENSITY_HOME": str(project_home), "PROPENSITY_CONFIGS": str(configs),
           "PROPENSITY_API_KEY": "k", "COLUMNS": "400"}  # COLUMNS: the log line is not wrapped
    propensity = Path(sys.executable).parent / "propensity"
    # Its own process group: were the check to pass, the server it starts is stopped whole.
    proc = subprocess.Popen([str(propensity), "serve", "--host", "127.0.0.1", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2, output[-2000:]
    assert "reasons.yaml" in output and "features.complaints_30d.en" in output
    assert "Traceback" not in output and "Starting" not in output


def test_serve_refuses_a_corrupt_registry_db_in_one_line(tmp_path, project_home, monkeypatch):
    from core.errors import PropensityError
    from serving.config import validate_serving_setup

    db = project_home / "mlruns" / "mlflow.db"
    db.write_bytes(b"garbage" * 1000)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(PropensityError) as err:
        validate_serving_setup()
    assert str(db) in str(err.value) and "\n" not in str(err.value)


def test_each_serve_process_gets_its_own_metrics_folder(project_home):
    """Before: every `bentoml serve` of a project wiped and reused BENTOML_HOME/prometheus_multiproc_dir,
    so a second server erased the first one's metrics."""
    import os
    import subprocess

    from serving.launch import metrics_dir_for

    dead = subprocess.Popen(["true"])  # a finished process: its pid is free
    dead.wait()
    first, second = metrics_dir_for(dead.pid), metrics_dir_for(dead.pid + 1)
    assert first != second and first.parent == second.parent
    assert str(first).startswith(str(project_home))
    first.mkdir(parents=True)
    (first / f"counter_{dead.pid}.db").write_bytes(b"x")
    # A folder whose process is gone is cleared when the next server starts; a live one is kept.
    live = metrics_dir_for(os.getpid())
    live.mkdir(parents=True)
    metrics_dir_for(dead.pid + 1, clean_stale=True)
    assert not first.exists() and live.exists()
