"""CLI commands of the serving package (registered on the main app by pipelines.cli)."""

from __future__ import annotations

import logging

import typer

log = logging.getLogger("propensity.serving")


def serve_environment(workers: int, threads: int) -> dict[str, str]:
    """Environment for the `bentoml serve` process: telemetry off, BENTOML_HOME and MLflow inside the
    project, worker count for the service decorator, one LightGBM/OpenMP thread per worker by default
    (one-row predictions get slower with more threads, and workers already use the cores)."""
    import os

    from core.settings import project_paths, quiet_environment
    from serving.config import WORKERS_ENV

    quiet_environment()
    paths = project_paths()
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", paths.tracking_uri())
    env.setdefault("PROPENSITY_HOME", str(paths.root))
    env[WORKERS_ENV] = str(workers)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def serve_command(host: str, port: int) -> list[str]:
    """`bentoml serve` for the service, run by serving.launch (which gives each server process its own
    Prometheus folder; plain `bentoml serve` empties one shared folder per BENTOML_HOME at start)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("bentoml_cli") is None:
        from core.errors import PropensityError

        raise PropensityError("BentoML (the `bentoml` command) is not installed in this environment")
    from core.settings import REPO_ROOT

    # --working-dir: the service module is imported from this checkout, whatever the current directory.
    return [sys.executable, "-m", "serving.launch", "serve", "serving.service:PropensityService",
            "--working-dir", str(REPO_ROOT), "--host", host, "--port", str(port)]


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""

    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
        port: int = typer.Option(3000, help="TCP port of the HTTP API and the staff page (/ui)."),
        workers: int = typer.Option(0, help="Worker processes; 0 takes `workers` from configs/serving.yaml."),
    ) -> None:
        """Serve the champion of every model spec with SHAP reasons (BentoML): /predict, /predict_features,
        /healthz, /readyz and the staff page /ui."""
        import subprocess

        from serving.config import validate_serving_setup

        # Every config the workers read, checked here: a bad file is one error naming the file and the
        # field (exit 2), not workers failing at start-up and being restarted over and over.
        config = validate_serving_setup()
        n_workers = workers or config.workers
        env = serve_environment(n_workers, config.lightgbm_threads)
        if config.resolved_api_key() is None and not config.allow_no_api_key:
            log.warning("no API key: set api_key in configs/serving.yaml or PROPENSITY_API_KEY (data calls get 401, "
                        "/readyz says not ready)")
        log.info("serving on http://%s:%s (staff page /ui, %d worker(s))", host, port, n_workers)
        result = subprocess.run(serve_command(host, port), env=env, check=False)
        raise typer.Exit(result.returncode)
