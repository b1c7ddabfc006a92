"""CLI commands of the pipelines package, grouped by module (registered on the main app by pipelines.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the data and operations commands to ``app``."""
    from pipelines import cli_generate, cli_ingest, cli_ops

    cli_generate.register(app)
    cli_ingest.register(app)
    cli_ops.register(app)
