"""CLI commands of the features package (registered on the main app by pipelines.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
