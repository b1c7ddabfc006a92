"""`propensity ingest` (exports -> canonical event store) and `propensity validate` (re-check a store).

Registered by pipelines.cli. pandas and pandera load inside the command bodies, so `--help` stays fast
(which is also why the help texts spell out core.events.DEFAULT_LOCK_TIMEOUT instead of importing it).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import typer

log = logging.getLogger("propensity.ingest")


def register(app: typer.Typer) -> None:
    """Add `ingest` and `validate` to ``app``."""
    app.command("ingest")(_ingest_command())

    @app.command("validate")
    def validate_command(
        store: Path | None = typer.Option(
            None, "--store", help="Event store folder to check (default: data/events under the project)."
        ),
        lock_timeout: float | None = typer.Option(
            None, "--lock-timeout", help="Seconds to wait while an ingest is writing the store (default 600)."
        ),
    ) -> None:
        """Re-validate every file of an event store and print rows, customers and date range per table."""
        from pipelines.ingest import validate_store

        summaries = validate_store(store, lock_timeout=lock_timeout)
        _print_summary(summaries, store)
        _print_quarantine({s.table: s.quarantined for s in summaries}, "quarantine (rows per cleaning rule)")


def _ingest_command():
    """The `ingest` command with one file option per table of the contract (``--orders``,
    ``--page-views``, ...): a new family gets its option from core.contract, not from an edit here."""
    from core.contract import TABLES

    def ingest_command(
        column_map: Path | None,
        store: Path | None,
        lock_timeout: float | None,
        cleaning: Path | None,
        no_cleaning: bool,
        **files: Path | None,
    ) -> None:
        """Validate event exports, clean them and merge them into the canonical event store (Parquet, by month).

        The cleaning rules (configs/cleaning.yaml) quarantine bots, short views, test orders and accounts,
        cancellations, duplicates and rows missing a key field, beside the store, with the rule's name.
        Nothing is written when any file breaks the contract; re-ingesting the same files changes nothing.
        """
        from rich.console import Console

        from core.errors import PropensityError
        from pipelines.ingest import ingest

        if no_cleaning and cleaning is not None:
            raise PropensityError("give --cleaning or --no-cleaning, not both")
        console = Console(stderr=True)
        with console.status("ingesting") as status:
            report = ingest(
                column_map=column_map,
                store=store,
                lock_timeout=lock_timeout,
                progress=lambda msg: status.update(msg),
                cleaning=False if no_cleaning else cleaning,
                **files,
            )
        _print_report(report)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            name,
            keyword,
            annotation=Path if spec.required_table else Path | None,
            default=typer.Option(
                ... if spec.required_table else None,
                f"--{name.replace('_', '-')}",
                help=spec.description or f"{name} file (CSV or Parquet).",
            ),
        )
        for name, spec in TABLES.items()
    ]
    params += [
        inspect.Parameter(
            "column_map",
            keyword,
            annotation=Path | None,
            default=typer.Option(
                None,
                "--column-map",
                help="YAML naming your columns and date formats (see configs/column_map.example.yaml).",
            ),
        ),
        inspect.Parameter(
            "store",
            keyword,
            annotation=Path | None,
            default=typer.Option(
                None, "--store", help="Event store folder to write (default: data/events under the project)."
            ),
        ),
        inspect.Parameter(
            "lock_timeout",
            keyword,
            annotation=float | None,
            default=typer.Option(
                None,
                "--lock-timeout",
                help="Seconds to wait while another ingest writes the same store (default 600).",
            ),
        ),
        inspect.Parameter(
            "cleaning",
            keyword,
            annotation=Path | None,
            default=typer.Option(
                None,
                "--cleaning",
                help="Cleaning rules YAML (default: configs/cleaning.yaml); the column map's cleaning: section overrides it.",
            ),
        ),
        inspect.Parameter(
            "no_cleaning",
            keyword,
            annotation=bool,
            default=typer.Option(
                False, "--no-cleaning", help="Switch every cleaning rule off: the contract alone decides."
            ),
        ),
    ]
    ingest_command.__signature__ = inspect.Signature(params)  # typer reads the options from here
    return ingest_command


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
    removed = report.removed()
    if removed:
        again = [t for t, r in report.tables.items() if r.quarantine_file and not r.quarantine_new]
        _print_quarantine(removed, f"removed by the cleaning rules -> {report.quarantine}")
        if again:
            log.info("already in the quarantine from an earlier run (nothing added): %s", ", ".join(again))
    if report.absent:
        log.info("absent families (no file given, nothing faked): %s", ", ".join(report.absent))
    if not report.changed:
        log.info("nothing new: the store is unchanged")


def _print_quarantine(counts: dict[str, dict[str, int]], title: str) -> None:
    """Rows per table and cleaning rule, as a table (nothing when no rule removed anything)."""
    from rich.console import Console
    from rich.table import Table

    rows = [(t, rule, n) for t, rules in counts.items() for rule, n in sorted(rules.items())]
    if not rows:
        return
    table = Table(title=title)
    for name in ("table", "rule", "rows"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    for t, rule, n in rows:
        table.add_row(t, rule, f"{n:,}")
    table.add_row("all", "", f"{sum(n for _, _, n in rows):,}", style="bold")
    Console().print(table)


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
