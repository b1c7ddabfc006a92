"""Operations commands: `run`, `score`, `monitor`, `retrain`, `effect`, `forget` (registered by pipelines.cli).

Command bodies import the pipeline modules (and through them the heavy stack) lazily.
"""

from __future__ import annotations

import logging

import typer

log = logging.getLogger("propensity")


def _print(*renderables) -> None:
    from rich.console import Console

    console = Console()
    for r in renderables:
        console.print(r)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("run")
    def run_command(
        size: str = typer.Option(None, "--size", help="Data size from configs/run.yaml (tiny, small, medium); default: its default_size."),
        resume: bool = typer.Option(False, "--resume", help="Continue the latest run after its last finished stage."),
        only: list[str] = typer.Option(None, "--only", help="Run just this stage (repeatable): generate, ingest, validate, features, online, train_<model> (one per spec in configs/models/), promote, score, report."),
        start_at: str = typer.Option(None, "--from", help="Start at this stage (earlier stages are assumed done)."),
        trials: int = typer.Option(None, "--trials", help="Optuna trials per model (overrides the size)."),
        timeout: float = typer.Option(None, "--timeout", help="Optuna time budget per model in seconds (overrides the size)."),
    ) -> None:
        """The whole chain: generate -> ingest -> validate -> features -> online store -> train every model -> promote -> score -> report."""
        from pipelines.run import load_run_config, run, summary_tables

        cfg = load_run_config()
        state = run(size, resume=resume, only=only, start_at=start_at, trials=trials, timeout=timeout, cfg=cfg)
        _print(*summary_tables(state, cfg.serve_hint))

    @app.command("score")
    def score_command(
        as_of: str = typer.Option(None, "--as-of", help="Score as of this date (YYYY-MM-DD, UTC midnight); default: the latest feature build."),
        engine: str = typer.Option(None, "--engine", help="local or ray (a pool of Ray actors; RAY_ADDRESS for a cluster); default: configs/actions.yaml scoring.engine."),
    ) -> None:
        """Batch-score every active customer with the champion of every model the data supports into data/scores/<as_of>/ (Parquet + CSV) and latest.parquet."""
        from rich.table import Table

        from serving.batch import score

        result = score(as_of, engine=engine)
        versions = ", ".join(f"{name} v{version}" for name, version in result.model_versions.items())
        table = Table(title=f"scores at {result.as_of:%Y-%m-%d} ({versions})")
        for col in ("stage", "rows", "seconds", "rows/s"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for name, (seconds, rows) in result.times.stages.items():
            table.add_row(name, f"{rows:,}", f"{seconds:.2f}", f"{rows / seconds:,.0f}" if seconds else "-")
        actions = Table(title="actions")
        actions.add_column("action")
        actions.add_column("customers", justify="right")
        for action, n in sorted(result.by_action.items(), key=lambda kv: -kv[1]):
            actions.add_row(action, f"{n:,}")
        _print(table, actions, f"{result.rows:,} customers scored, {result.flagged:,} with an action -> {result.scores_dir}")

    @app.command("monitor")
    def monitor_command(
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the metrics to MLflow."),
        as_of: str = typer.Option(None, "--as-of", help="Check the scores of this as-of date (YYYY-MM-DD); default: the newest."),
    ) -> None:
        """Feature drift (PSI), score drift and realised AUC of the champions; HTML report and a retrain verdict."""
        from pipelines.monitor import monitor

        result = monitor(log_to_mlflow=not no_mlflow, as_of=as_of)
        _print(_monitor_table(result), f"report: {result.report}", f"[b]{result.verdict.text}[/b]")

    @app.command("retrain")
    def retrain_command(
        if_needed: bool = typer.Option(False, "--if-needed", help="Retrain only when `propensity monitor` says so."),
        trials: int = typer.Option(None, "--trials", help="Optuna trials per model (default: the default size's)."),
        timeout: float = typer.Option(None, "--timeout", help="Optuna time budget per model in seconds."),
    ) -> None:
        """Rebuild features, train both models, promote by the gate and re-score (after monitoring, with --if-needed)."""
        from pipelines.run import load_run_config, retrain, summary_tables

        cfg = load_run_config()
        checked, state = retrain(if_needed, trials=trials, timeout=timeout, cfg=cfg)
        if checked is not None:
            _print(_monitor_table(checked), f"[b]{checked.verdict.text}[/b]")
        if state is not None:
            _print(*summary_tables(state, cfg.serve_hint))

    @app.command("effect")
    def effect_command(
        rule: str = typer.Option(None, "--rule", help="Only this action rule of configs/actions.yaml (default: every rule)."),
        since: str = typer.Option(None, "--since", help="Only lists from this date on (YYYY-MM-DD)."),
        min_customers: int = typer.Option(50, "--min-customers", help="Fewer customers than this in either group: no figures, a note."),
    ) -> None:
        """Did the actions work? Per rule, treated against the control group: outcome rates, the difference
        with a 95% interval, number needed to treat, revenue difference (HTML + JSON, logged to MLflow)."""
        from rich.table import Table

        from pipelines.effect import effect

        report = effect(rule, since, min_customers)
        table = Table(title=f"effect of the actions (lists up to {report.until})")
        for col in ("rule", "outcome", "treated", "control", "treated rate", "control rate", "difference [95% CI]",
                    "NNT", "note"):
            table.add_column(col)
        fmt = lambda v, d=3: "" if v is None else f"{v:.{d}f}"  # noqa: E731
        for e in report.rules:
            table.add_row(e.rule, e.outcome, str(e.treated), str(e.control), fmt(e.treated_rate), fmt(e.control_rate),
                          "" if e.difference is None else f"{e.difference:+.3f} [{e.ci_low:+.3f}, {e.ci_high:+.3f}]",
                          fmt(e.number_needed_to_treat, 1), e.note)
        _print(table)
        log.info("report written to %s", report.report)

    @app.command("forget")
    def forget_command(
        customer_ids: list[str] = typer.Argument(..., help="Customer ids to remove everywhere."),
        skip_mlflow_check: bool = typer.Option(False, "--skip-mlflow-check", help="Do not scan the MLflow store for the ids."),
    ) -> None:
        """Remove customers from the event store, raw exports, feature sources, online store and scores; say what went."""
        from rich.table import Table

        from pipelines.forget import forget

        report = forget(customer_ids, check_tracking=not skip_mlflow_check)
        table = Table(title=f"forgot {report.customers} customer(s): {report.total:,} rows removed")
        table.add_column("location")
        table.add_column("rows removed", justify="right")
        for location, rows in report.removed.items():
            table.add_row(location, f"{rows:,}")
        lines = [table]
        if report.not_found:
            lines.append(f"not found anywhere: {len(report.not_found)} id(s)")
        lines.append("MLflow: " + ("mentions an id in " + ", ".join(report.mlflow_hits) if report.mlflow_hits
                                   else "no id found in the tracking store or artifacts"))
        _print(*lines)


def _monitor_table(result):
    from rich.table import Table

    table = Table(title=f"monitoring at {result.snapshot_as_of}")
    for col in ("model", "version", "max feature PSI", "drifted features", "score PSI", "latest realised AUC / Gini",
                "holdout AUC / Gini"):
        table.add_column(col)
    for s in result.signals:
        top = "-" if s.drift.empty else f"{s.drift['psi'].iloc[0]:.3f} ({s.drift['feature'].iloc[0]})"
        drifted = "-" if s.drift.empty else str(int((s.drift["psi"] > result.thresholds.feature_psi).sum()))
        matured, metric = s.matured(), s.realised_metric  # AUC, or a value model's normalised Gini
        realised = "-" if matured.empty else f"{matured[metric].iloc[-1]:.3f} ({matured['as_of'].iloc[-1]:%Y-%m-%d})"
        table.add_row(s.model, str(s.version), top, drifted, "-" if s.score_psi is None else f"{s.score_psi:.3f}",
                      realised, "-" if s.holdout_auc is None else f"{s.holdout_auc:.3f}")
    return table
