"""CLI commands of the features package (registered on the main app by pipelines.cli):
``propensity features build|apply|materialize``."""

from __future__ import annotations

import datetime as dt

import typer


def _parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        from core.errors import PropensityError

        raise PropensityError(f"--until: {value!r} is not a date (YYYY-MM-DD)") from None


def register(app: typer.Typer) -> None:
    """Add the ``features`` sub-app to ``app``."""
    features_app = typer.Typer(
        help="Feast feature store: build snapshots from the event store, register, load the online store.",
        no_args_is_help=True,
    )

    @features_app.command("build")
    def build(
        until: str = typer.Option(
            None,
            "--until",
            help="Snapshot date YYYY-MM-DD: features from events before its 00:00 UTC "
            "(default: the day after the newest event). Rebuilding a date replaces it.",
        ),
        memory_limit: str = typer.Option("4GB", help="DuckDB memory limit for the build (per shard on Ray)."),
        engine: str = typer.Option(
            None, "--engine",
            help="local (one DuckDB process) or ray (customer shards on the Ray at RAY_ADDRESS, else a local "
            "one); default: features.yaml build.engine.",
        ),
    ) -> None:
        """Compute per-customer snapshots with DuckDB and write the Parquet sources Feast reads."""
        from features.build import build_features

        build_features(_parse_date(until), memory_limit=memory_limit, progress=True, engine=engine)

    @features_app.command("apply")
    def apply_cmd() -> None:
        """Register the entity, feature views and feature services in the Feast registry."""
        from features.store import apply

        apply()

    @features_app.command("materialize")
    def materialize_cmd() -> None:
        """Load the latest snapshot of every view into the online store (SQLite, or Redis if configured)."""
        from features.store import materialize

        materialize()

    app.add_typer(features_app, name="features")
