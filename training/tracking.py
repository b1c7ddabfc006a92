"""MLflow set-up shared by training, promotion and champion loading.

The tracking URI comes from ``core.settings.project_paths().tracking_uri()`` (SQLite under mlruns/
unless ``MLFLOW_TRACKING_URI`` says otherwise). Experiments created here put their artifacts under
``mlruns/artifacts`` for a local store, so nothing lands in the current directory by accident.
"""

from __future__ import annotations

from core.settings import project_paths, quiet_environment


def configure_mlflow() -> str:
    """Point MLflow at the project's tracking store; return the URI used."""
    quiet_environment()
    import mlflow

    paths = project_paths()
    uri = paths.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith("sqlite:///") and uri not in _initialised:
        _init_sqlite_store(uri)
    return uri


_initialised: set[str] = set()


def _init_sqlite_store(uri: str) -> None:
    """Create the SQLite store's tables under a file lock: two processes migrating a fresh database at
    once fail with an alembic error (seen with two `propensity train` workers)."""
    import fcntl
    from pathlib import Path

    import mlflow

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLite cannot create the folder itself
    with open(db.parent / ".mlflow-init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _initialised.add(uri)


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created with a project-local artifact location when the store is local."""
    import mlflow

    uri = configure_mlflow()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = f"{project_paths().artifact_root()}/{name}"
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        # Another worker created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def client():
    """An MlflowClient on the project's store."""
    import mlflow

    configure_mlflow()
    return mlflow.MlflowClient()
