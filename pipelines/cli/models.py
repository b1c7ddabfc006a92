"""Model commands: `train`, `promote`, `rollback`, `history`, `evaluate`, `backtest` (registered by pipelines.cli).
Every MODEL argument is the name of a spec in configs/models/.

Heavy imports (mlflow, lightgbm, optuna, shap, duckdb) happen inside the command bodies.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import typer

log = logging.getLogger("propensity.training")



def _check_model(name: str) -> str:
    from core.errors import PropensityError
    from core.specs import model_names

    known = model_names()
    if name not in known:
        raise PropensityError(f"unknown model {name!r}: expected one of {', '.join(known)} (configs/models/)")
    return name


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""

    @app.command("train")
    def train_cmd(
        model: str = typer.Argument(..., help="Model to train: a spec name in configs/models/."),
        config: Path | None = typer.Option(None, "--config", help="Model spec YAML (default configs/models/<model>.yaml)."),
        trials: int | None = typer.Option(None, "--trials", help="Optuna trials to run in this process (default from the YAML)."),
        timeout: float | None = typer.Option(None, "--timeout", help="Stop tuning after this many seconds."),
        storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite under mlruns/); share it to tune one study from several processes."),
        study: str | None = typer.Option(None, "--study", help="Optuna study name (default <model>-<training-set hash>)."),
        tune_only: bool = typer.Option(False, "--tune-only", help="Only add trials to the study (an extra worker); do not fit or register a model."),
    ) -> None:
        """Tune, train, calibrate and register a model as 'challenger'."""
        from core.specs import load_spec
        from training.train import train_model

        cfg = load_spec(_check_model(model), config)
        result = train_model(cfg, trials=trials, timeout=timeout, storage=storage, study_name=study,
                             tune_only=tune_only)
        if tune_only:
            log.info("%s: study %r now holds %d trials", model, result.study_name, result.trials_in_study)
            return
        shown = ("roc_auc", "pr_auc", "brier", "ece", "lift_top10", "normalized_gini", "top_decile_capture", "mae")
        figures = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items() if k in shown)
        log.info("%s v%s: test %s (run %s)", model, result.version, figures, result.run_id)

    @app.command("promote")
    def promote_cmd(
        model: str = typer.Argument(..., help="Model whose challenger should be considered (a spec name)."),
        margin: float | None = typer.Option(None, "--margin", help="Required improvement over the champion (default from the YAML)."),
        force: bool = typer.Option(False, "--force", help="Promote even if the challenger does not win (recorded in the audit log)."),
    ) -> None:
        """Move 'champion' to the challenger if it beats the champion on the same holdout."""
        from training.promotion import promote

        d = promote(_check_model(model), margin=margin, force=force)
        champ = "none" if d.champion_score is None else f"{d.champion_score:.4f}"
        log.info("%s: %s: challenger v%s %s %.4f vs champion v%s %s; %s", model, d.decision.upper(),
                 d.challenger_version, d.metric, d.challenger_score, d.champion_version or "-", champ, d.reason)

    @app.command("rollback")
    def rollback_cmd(model: str = typer.Argument(..., help="Model to roll back (a spec name).")) -> None:
        """Give 'champion' back to the previous champion version."""
        from training.promotion import rollback

        d = rollback(_check_model(model))
        log.info("%s: %s", model, d.reason)

    @app.command("history")
    def history_cmd(model: str = typer.Argument(..., help="Model whose promotion audit log to print.")) -> None:
        """Print the promotion / rollback audit log kept in the registry."""
        from rich.console import Console
        from rich.table import Table

        from training.promotion import history

        table = Table(title=f"{model}: champion decisions")
        for col in ("when", "who", "action", "decision", "challenger", "champion", "metric", "challenger score",
                    "champion score", "reason"):
            table.add_column(col)
        fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
        for e in history(_check_model(model)):
            table.add_row(e["when"], e["who"], e["action"], e["decision"], f"v{e['challenger_version']}",
                          f"v{e['champion_version']}" if e["champion_version"] else "-", e["metric"],
                          fmt(e["challenger_score"]), fmt(e["champion_score"]), e["reason"])
        Console().print(table)

    @app.command("evaluate")
    def evaluate_cmd(
        model: str | None = typer.Argument(None, help="A spec name (default: every model with a ground-truth column)."),
        alias: str = typer.Option("champion", "--alias", help="Registry alias to evaluate (champion or challenger)."),
    ) -> None:
        """Test AUC against the oracle AUC from the generator's ground truth, next to simple baselines."""
        from rich.console import Console
        from rich.table import Table

        from core.specs import load_specs
        from training.evaluate import evaluate_model, read_ground_truth, write_report

        names = [_check_model(model)] if model else [n for n, s in load_specs().items() if s.ground_truth]
        gt = read_ground_truth()
        results = [evaluate_model(n, alias, ground_truth=gt) for n in names]
        table = Table(title="model AUC vs oracle AUC (same rows and date; goal: ratio >= 0.97)")
        for col in ("model", "version", "as_of", "rows", "label rate", "model AUC", "oracle AUC", "ratio",
                    "recency AUC", "RFM AUC", "flagged", "top reason = true driver"):
            table.add_column(col, no_wrap=True)
        for r in results:
            table.add_row(r.model, r.version, r.as_of, str(r.rows), f"{r.label_rate:.3f}", f"{r.model_auc:.4f}",
                          f"{r.oracle_auc:.4f}", f"{r.oracle_ratio:.3f}", f"{r.recency_auc:.4f}", f"{r.rfm_auc:.4f}",
                          str(r.flagged), f"{r.driver_agreement:.1%}")
        # Wide enough for every figure: a cut-off AUC is worse than a line that wraps in a narrow terminal.
        console = Console()
        Console(width=max(console.width, 160)).print(table)
        log.info("report written to %s", write_report(results))

    @app.command("backtest")
    def backtest_cmd(
        as_of: datetime = typer.Option(..., "--as-of", formats=["%Y-%m-%d"], help="Date D (YYYY-MM-DD, UTC midnight): train on the history before it, measure on what happened from it on; its labels must have matured."),
        model: list[str] | None = typer.Option(None, "--model", help="Model to backtest (a spec name; repeat for several). Default: every model the event store supports."),
        trials: int | None = typer.Option(None, "--trials", help="Optuna trials for each model's training (default from its YAML)."),
        timeout: float | None = typer.Option(None, "--timeout", help="Stop each model's tuning after this many seconds."),
        resamples: int = typer.Option(1000, "--resamples", min=10, help="Bootstrap resamples of the customers for the 95% intervals."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples (the same seed gives the same intervals)."),
        storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite under mlruns/)."),
    ) -> None:
        """Train each model on the data before --as-of (never registered) and measure it on what happened
        next, with bootstrap intervals, next to the baseline, RFM and BG/NBD on the same customers."""
        from rich.console import Console
        from rich.table import Table

        from training.backtest import run_backtest

        names = [_check_model(m) for m in model] if model else None
        report = run_backtest(as_of.date(), names, trials=trials, timeout=timeout, resamples=resamples, seed=seed,
                              storage=storage)
        table = Table(title=f"backtest at {report.as_of}: ROC AUC [95% CI] on the same customers "
                            f"({report.resamples} bootstrap resamples)")
        for col in ("model", "rows", "scorer", "ROC AUC [95% CI]", "PR AUC [95% CI]", "lift@10%", "capture@20%",
                    "model minus this [95% CI]"):
            table.add_column(col, no_wrap=True)
        ci = lambda v, c: f"{v:.4f} [{c[0]:.4f}, {c[1]:.4f}]"  # noqa: E731
        for m in report.models:
            for i, (name, s) in enumerate(m.scorers.items()):
                diff = ci(s["auc_diff"], s["auc_diff_ci"]) if "auc_diff" in s else "-"
                table.add_row(m.model if i == 0 else "", str(m.rows) if i == 0 else "", name,
                              ci(s["roc_auc"], s["roc_auc_ci"]), ci(s["pr_auc"], s["pr_auc_ci"]),
                              f"{s['lift_top10']:.2f}", f"{s['capture_top20']:.1%}", diff)
            if m.oracle.get("available") and m.oracle.get("days_before"):
                log.info("%s: oracle from the ground truth at %s, %d day(s) before %s", m.model, m.oracle["as_of"],
                         m.oracle["days_before"], report.as_of)
        # Wide enough for every interval: a cut-off figure is worse than a line that wraps.
        Console(width=max(Console().width, 160)).print(table)
        for name, reason in report.skipped.items():
            log.warning("skipped %s: %s", name, reason)
        log.info("report in %s (MLflow experiment 'backtest', run %s; %.0f s)", report.folder, report.run_id,
                 report.seconds)
