"""`propensity serve`: registered with help on every option, and the command line / environment it runs."""

from __future__ import annotations

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
    assert cmd[1:3] == ["serve", "serving.service:PropensityService"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "3123"
    assert cmd[cmd.index("--working-dir") + 1] == str(REPO_ROOT)
    env = serve_environment(workers=3, threads=1)
    assert env["PROPENSITY_SERVING_WORKERS"] == "3" and env["OMP_NUM_THREADS"] == "1"
    assert env["BENTOML_DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["BENTOML_HOME"].startswith(str(project_home))
