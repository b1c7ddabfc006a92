"""Where things live (the data catalogue: every file and folder convention, in one place), and the
environment every entry point sets before importing the heavy stack.

Everything is relative to the project root: ``PROPENSITY_HOME`` if set, else the current directory.
Tests point it at ``tmp_path`` so nothing they do touches the checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Phone-home switches for MLflow, BentoML and anything honouring DO_NOT_TRACK. Machines here have no
# internet and users' servers may not either.
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "FEAST_USAGE": "False",
    "GIT_PYTHON_REFRESH": "quiet",
}


def quiet_environment() -> None:
    """Turn telemetry off and keep BentoML's home inside the project. Call before importing the stack."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars per model load
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables..."
    os.environ.setdefault("BENTOML_HOME", str(project_paths().root / "bentoml_home"))


SCORES_FILE = "scores.parquet"
SCORES_CSV = "scores.csv"
LATEST_SCORES_FILE = "latest.parquet"
GROUND_TRUTH_FILE = "ground_truth.parquet"


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        """Raw exports as a business would hand them over (the generator writes here)."""
        return self.data / "raw"

    @property
    def events(self) -> Path:
        """Canonical event store: validated Parquet, partitioned by month."""
        return self.data / "events"

    @property
    def quarantine(self) -> Path:
        """Rows the ingest's cleaning rules removed, per table, beside the event store (with the rule)."""
        return self.data / "quarantine"

    @property
    def feature_sources(self) -> Path:
        """Parquet sources Feast reads (written by the feature build)."""
        return self.data / "features"

    @property
    def feast_registry(self) -> Path:
        return self.data / "feast_registry.db"

    @property
    def online_store(self) -> Path:
        return self.data / "online_store.db"

    @property
    def scores(self) -> Path:
        return self.data / "scores"

    def scores_for(self, as_of) -> Path:
        """The folder of one scoring date: ``scores/<YYYY-MM-DD>/`` with SCORES_FILE and SCORES_CSV."""
        return self.scores / f"{as_of:%Y-%m-%d}"

    def scored_dates(self) -> list[str]:
        """Dates (YYYY-MM-DD) that have a scores folder, oldest first."""
        if not self.scores.is_dir():
            return []
        return sorted(
            p.name for p in self.scores.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / SCORES_FILE).is_file()
        )

    @property
    def latest_scores(self) -> Path:
        """A copy of the newest scores folder's SCORES_FILE: what the staff page reads."""
        return self.scores / LATEST_SCORES_FILE

    @property
    def forgotten_ids(self) -> Path:
        """SHA-256 hex digests of forgotten customer ids, one a line (never the ids): `propensity forget`
        appends, every serving worker reads it on its poll and drops those customers from memory."""
        return self.data / "forgotten_ids.sha256"

    @property
    def reports(self) -> Path:
        return self.data / "reports"

    @property
    def runs(self) -> Path:
        """State of `propensity run` executions, one folder per run id."""
        return self.data / "runs"

    @property
    def ground_truth(self) -> Path:
        """The generator's per-customer, per-week truth (generated data only)."""
        return self.raw / GROUND_TRUTH_FILE

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def configs(self) -> Path:
        """Configs: the project's own configs/ folder unless PROPENSITY_CONFIGS says otherwise."""
        env = os.environ.get("PROPENSITY_CONFIGS")
        if env:
            return Path(env).resolve()
        local = self.root / "configs"
        return local if local.is_dir() else REPO_ROOT / "configs"

    def tracking_uri(self) -> str:
        # MLflow 3.17's plain file store raises "maintenance mode": SQLite under mlruns/ instead.
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.mlruns / 'mlflow.db').resolve()}"

    def artifact_root(self) -> str:
        return str((self.mlruns / "artifacts").resolve())


# The checkout this code runs from (configs/ defaults live here).
REPO_ROOT = Path(__file__).resolve().parent.parent


def project_paths() -> ProjectPaths:
    return ProjectPaths(Path(os.environ.get("PROPENSITY_HOME", os.getcwd())).resolve())
