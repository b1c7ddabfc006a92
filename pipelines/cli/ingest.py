"""`propensity ingest` (exports -> canonical event store) and `propensity validate` (re-check a store).

Registered by pipelines.cli. pandas and pandera load inside the command bodies, so `--help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger("propensity.ingest")


def register(app: typer.Typer) -> None:
    """Add `ingest` and `validate` to ``app``."""

    @app.command("ingest")
    def ingest_command(
        orders: Path = typer.Option(
            ..., "--orders", help="Orders file (CSV or Parquet): the only required table."
        ),
        customers: Path | None = typer.Option(
            None, "--customers", help="Customers file; without it customers are derived from the events."
        ),
        page_views: Path | None = typer.Option(
            None, "--page-views", help="Page-view file (browse behaviour)."
        ),
        complaints: Path | None = typer.Option(None, "--complaints", help="Complaints file."),
        column_map: Path | None = typer.Option(
            None,
            "--column-map",
            help="YAML naming your columns and date formats (see configs/column_map.example.yaml).",
        ),
        store: Path | None = typer.Option(
            None, "--store", help="Event store folder to write (default: data/events under the project)."
        ),
    ) -> None:
        """Validate event exports and merge them into the canonical event store (Parquet, by month).

        Nothing is written when any file breaks the contract; re-ingesting the same files changes nothing.
        """
        from rich.console import Console

        from pipelines.ingest import ingest

        console = Console(stderr=True)
        with console.status("ingesting") as status:
            report = ingest(
                orders,
                customers=customers,
                page_views=page_views,
                complaints=complaints,
                column_map=column_map,
                store=store,
                progress=lambda msg: status.update(msg),
            )
        _print_report(report)

    @app.command("validate")
    def validate_command(
        store: Path | None = typer.Option(
            None, "--store", help="Event store folder to check (default: data/events under the project)."
        ),
    ) -> None:
        """Re-validate every file of an event store and print rows, customers and date range per table."""
        from pipelines.ingest import validate_store

        summaries = validate_store(store)
        _print_summary(summaries, store)


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest into {report.store}")
    for name in (
        "table",
        "status",
        "source",
        "rows read",
        "added",
        "updated",
        "already present",
        "months written",
    ):
        table.add_column(name, justify="right" if name not in ("table", "status", "source") else "left")
    for name, result in report.tables.items():
        table.add_row(
            name,
            report.families[name],
            Path(result.source).name if result.source not in (None, "derived") else (result.source or "-"),
            f"{result.rows_read:,}",
            f"{result.added:,}",
            f"{result.updated:,}",
            f"{result.already_present:,}",
            str(len(result.months_written)),
        )
    Console().print(table)
    if report.absent:
        log.info("absent families (no file given, nothing faked): %s", ", ".join(report.absent))
    if not report.changed:
        log.info("nothing new: the store is unchanged")


def _print_summary(summaries, store) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"event store {store or 'data/events'}: valid")
    for name in ("table", "status", "rows", "customers", "first", "last", "months"):
        table.add_column(name, justify="right" if name in ("rows", "customers", "months") else "left")

    def stamp(t) -> str:
        return "-" if t is None else f"{t:%Y-%m-%d %H:%M}"

    for s in summaries:
        table.add_row(
            s.table, s.status, f"{s.rows:,}", f"{s.customers:,}", stamp(s.first), stamp(s.last), str(s.months)
        )
    Console().print(table)
    absent = [s.table for s in summaries if s.status == "absent"]
    if absent:
        log.info("absent families: %s", ", ".join(absent))
