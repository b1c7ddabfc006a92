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
        engine: str | None = typer.Option(None, "--engine", help="Where the final fit runs: local or ray (Ray Train; default: the spec's tuning.engine)."),
    ) -> None:
        """Tune, train, calibrate and register a model as 'challenger'."""
        from core.specs import load_spec
        from training.train import train_model

        cfg = load_spec(_check_model(model), config)
        if engine is not None:
            if engine not in ("local", "ray"):
                raise typer.BadParameter(f"{engine!r} is not one of local, ray", param_hint="--engine")
            cfg = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"engine": engine})})
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
        ceiling: bool = typer.Option(False, "--ceiling", help="Also train the feature ceiling (the model's learner on the generator's true probabilities, up to 5x the rows; minutes): model / ceiling and ceiling / oracle."),
    ) -> None:
        """Test AUC against the oracle AUC from the generator's ground truth, next to simple baselines."""
        from rich.console import Console
        from rich.table import Table

        from core.specs import load_specs
        from training.evaluate import evaluate_model, read_ground_truth, write_report

        names = [_check_model(model)] if model else [n for n, s in load_specs().items() if s.ground_truth]
        gt = read_ground_truth()
        results = [evaluate_model(n, alias, ground_truth=gt, ceiling=ceiling) for n in names]
        table = Table(title="model AUC vs oracle AUC (same rows and date; goal: ratio >= 0.97)")
        for col in ("model", "version", "as_of", "rows", "label rate", "model AUC", "oracle AUC", "ratio",
                    "recency AUC", "RFM AUC", "flagged", "top cause = true driver", "ceiling", "of ceiling",
                    *(("feature ceiling AUC", "model / ceiling", "ceiling / oracle") if ceiling else ())):
            table.add_column(col, no_wrap=True)
        for r in results:
            table.add_row(r.model, r.version, r.as_of, str(r.rows), f"{r.label_rate:.3f}", f"{r.model_auc:.4f}",
                          f"{r.oracle_auc:.4f}", f"{r.oracle_ratio:.3f}", f"{r.recency_auc:.4f}", f"{r.rfm_auc:.4f}",
                          str(r.flagged), f"{r.driver_agreement:.1%} ({r.driver_method})", f"{r.driver_ceiling:.1%}",
                          f"{r.driver_ceiling_ratio:.0%}",
                          *((f"{r.ceiling_auc:.4f} ({r.ceiling_rows} rows)", f"{r.model_to_ceiling:.3f}",
                             f"{r.ceiling_to_oracle:.3f}") if ceiling else ()))
        # Wide enough for every figure: a cut-off AUC is worse than a line that wraps in a narrow terminal.
        console = Console()
        Console(width=max(console.width, 200)).print(table)
        log.info("report written to %s", write_report(results))

    @app.command("backtest")
    def backtest_cmd(
        models: list[str] | None = typer.Argument(None, help="Models to backtest (spec names), e.g. `value`; the same as --model. Default: every model the event store supports."),
        as_of: datetime = typer.Option(..., "--as-of", formats=["%Y-%m-%d"], help="Date D (YYYY-MM-DD, UTC midnight): train on the history before it, measure on what happened from it on; its labels must have matured."),
        model: list[str] | None = typer.Option(None, "--model", help="Model to backtest (a spec name; repeat for several). Default: every model the event store supports."),
        trials: int | None = typer.Option(None, "--trials", help="Optuna trials for each model's training (default from its YAML)."),
        timeout: float | None = typer.Option(None, "--timeout", help="Stop each model's tuning after this many seconds."),
        resamples: int = typer.Option(1000, "--resamples", min=10, help="Bootstrap resamples of the customers for the 95% intervals."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples (the same seed gives the same intervals)."),
        storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite under mlruns/)."),
    ) -> None:
        """Train each model on the data before --as-of (never registered) and measure it on what happened
        next, with bootstrap intervals, next to its baselines on the same customers (binary: the baseline,
        RFM and BG/NBD; value: past spend, RFM and BG/NBD x Gamma-Gamma). With the stakes' risk and value
        models (configs/actions.yaml) in one run, also the value-at-risk check."""
        from rich.console import Console
        from rich.table import Table

        from serving.actions import load_actions_config
        from training.backtest import run_backtest

        wanted = [*(models or []), *(model or [])]
        names = list(dict.fromkeys(_check_model(m) for m in wanted)) or None
        stakes_cfg = load_actions_config().stakes
        stakes = (stakes_cfg.risk_model, stakes_cfg.value_model) if stakes_cfg is not None else None
        report = run_backtest(as_of.date(), names, trials=trials, timeout=timeout, resamples=resamples, seed=seed,
                              storage=storage, stakes=stakes)
        ci = lambda v, c, d=4: f"{v:.{d}f} [{c[0]:.{d}f}, {c[1]:.{d}f}]"  # noqa: E731
        # Wide enough for every interval: a cut-off figure is worse than a line that wraps.
        console = Console(width=max(Console().width, 160))
        binary = [m for m in report.models if m.task == "binary"]
        amounts = [m for m in report.models if m.task != "binary"]
        if binary:
            table = Table(title=f"backtest at {report.as_of}: ROC AUC [95% CI] on the same customers "
                                f"({report.resamples} bootstrap resamples)")
            for col in ("model", "rows", "scorer", "ROC AUC [95% CI]", "PR AUC [95% CI]", "lift@10%", "capture@20%",
                        "model minus this [95% CI]"):
                table.add_column(col, no_wrap=True)
            for m in binary:
                for i, (name, s) in enumerate(m.scorers.items()):
                    diff = ci(s["auc_diff"], s["auc_diff_ci"]) if "auc_diff" in s else "-"
                    table.add_row(m.model if i == 0 else "", str(m.rows) if i == 0 else "", name,
                                  ci(s["roc_auc"], s["roc_auc_ci"]), ci(s["pr_auc"], s["pr_auc_ci"]),
                                  f"{s['lift_top10']:.2f}", f"{s['capture_top20']:.1%}", diff)
            console.print(table)
        if amounts:
            table = Table(title=f"backtest at {report.as_of}: normalised Gini and top-10% spend capture [95% CI] "
                                f"on the same customers ({report.resamples} bootstrap resamples)")
            for col in ("model", "rows", "scorer", "normalised Gini [95% CI]", "model minus this [95% CI]",
                        "top-10% capture [95% CI]", "model minus this [95% CI]", "MAE"):
                table.add_column(col, no_wrap=True)
            for m in amounts:
                for i, (name, s) in enumerate(m.scorers.items()):
                    gdiff = ci(s["normalized_gini_diff"], s["normalized_gini_diff_ci"]) if "normalized_gini_diff" in s else "-"
                    cdiff = ci(s["capture_top10_diff"], s["capture_top10_diff_ci"]) if "capture_top10_diff" in s else "-"
                    table.add_row(m.model if i == 0 else "", str(m.rows) if i == 0 else "", name,
                                  ci(s["normalized_gini"], s["normalized_gini_ci"]), gdiff,
                                  ci(s["capture_top10"], s["capture_top10_ci"]), cdiff,
                                  f"{s['mae']:.2f}" if "mae" in s else "-")
            console.print(table)
        for m in report.models:
            if m.oracle.get("available") and m.oracle.get("days_before"):
                log.info("%s: oracle from the ground truth at %s, %d day(s) before %s", m.model, m.oracle["as_of"],
                         m.oracle["days_before"], report.as_of)
        var = report.value_at_risk
        if var and var.get("available"):
            r = var["rankings"]
            log.info("value at risk: the top 10%% by P(%s) x value hold %.1f%% of the revenue lost, by P(%s) "
                     "alone %.1f%%: ratio %s (goal >= 2: %s)", var["risk_model"], 100 * r["value_at_risk"]["lost_capture_top10"],
                     var["risk_model"], 100 * r["churn_probability"]["lost_capture_top10"],
                     ci(var["ratio"], r["value_at_risk"]["ratio_to_churn_probability_ci"], 2),
                     "met" if var["meets_goal"] else "not met")
        elif var:
            log.info("value at risk not computed: %s", var["reason"])
        for name, reason in report.skipped.items():
            log.warning("skipped %s: %s", name, reason)
        log.info("report in %s (MLflow experiment 'backtest', run %s; %.0f s)", report.folder, report.run_id,
                 report.seconds)
