"""The `propensity` command. Each package contributes its commands through ``register(app)`` in its own
``cli.py``; command bodies import the heavy stack lazily so `propensity --help` stays fast."""

from __future__ import annotations

import logging
import sys

import typer

from pipelines.errors import PropensityError

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
    from pipelines.logs import setup_logging
    from pipelines.settings import quiet_environment

    quiet_environment()
    setup_logging(verbose)


def _register_all() -> None:
    from features import cli as features_cli
    from pipelines import commands as pipeline_commands
    from serving import cli as serving_cli
    from training import cli as training_cli

    pipeline_commands.register(app)
    features_cli.register(app)
    training_cli.register(app)
    serving_cli.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except PropensityError as exc:
        logging.getLogger("propensity").error(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
