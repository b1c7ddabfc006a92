"""`propensity generate`: the synthetic behaviour generator (registered by pipelines.cli)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger("propensity.generate")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("generate")
    def generate_command(
        customers: int = typer.Option(20_000, "--customers", "-n", help="Number of customers to simulate."),
        days: int = typer.Option(365, "--days", "-d", help="Length of the simulated window in days."),
        seed: int = typer.Option(
            7, "--seed", "-s", help="Random seed: same seed, days and end give the same files."
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output folder (default: data/raw under the project root)."
        ),
        end: str | None = typer.Option(None, "--end", help="Last simulated day (YYYY-MM-DD); default: the generator's own end date."),
        file_format: str = typer.Option(
            "parquet",
            "--format",
            help="File format of the four tables: parquet or csv (ground truth is always Parquet).",
        ),
        shift_at: str | None = typer.Option(
            None,
            "--shift-at",
            help="Date (YYYY-MM-DD) from which behaviour changes (fewer visits, more complaints, smaller "
            "orders; multipliers in configs/generate.yaml), for drift-detection tests.",
        ),
        config: Path | None = typer.Option(
            None, "--config", help="Generator YAML (default: configs/generate.yaml, else built-in defaults)."
        ),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Show a progress bar over days."
        ),
        anomalies: bool = typer.Option(
            False,
            "--anomalies",
            help="Also write what cleaning must remove (bots, short views, test orders, absurd amounts, "
            "cancellations, duplicate complaints), labelled in anomalies.parquet beside the ground truth.",
        ),
    ) -> None:
        """Simulate customers and write customers, orders, page_views, complaints and ground_truth."""
        from core.settings import project_paths
        from pipelines.synthetic import generate, load_generator_config

        cfg = load_generator_config(config)
        target = out if out is not None else project_paths().raw
        report = generate(
            customers,
            days,
            seed,
            target,
            end=end,
            shift_at=shift_at,
            fmt=file_format,
            config=cfg,
            progress=progress,
            anomalies=anomalies,
        )
        log.info("generated %s", report.summary())
        for name, path in report.files.items():
            log.info("  %-12s %s", name, path)
