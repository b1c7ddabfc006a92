"""The `propensity` command: one module per command group in this package, each with ``register(app)``.
Command bodies import the heavy stack lazily so `propensity --help` stays fast."""

from __future__ import annotations

import logging
import sys

import typer

from core.errors import PropensityError

app = typer.Typer(
    name="propensity",
    help="Customer-behaviour models: events -> Feast features -> LightGBM (Optuna, MLflow) -> BentoML with SHAP reasons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    from core.logs import setup_logging
    from core.settings import quiet_environment

    quiet_environment()
    setup_logging(verbose)


def _register_all() -> None:
    from pipelines.cli import features, generate, ingest, models, ops, serve

    for group in (generate, ingest, ops, features, models, serve):
        group.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except PropensityError as exc:
        logging.getLogger("propensity").error(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
