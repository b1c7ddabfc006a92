"""One run of the generator: simulate the window day by day, write the exports and the weekly truth."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import PropensityError
from pipelines.synthetic.config import GeneratorConfig
from pipelines.synthetic.simulate import EventSink, Simulation
from pipelines.synthetic.truth import week_truth
from pipelines.synthetic.write import raw_export

DEFAULT_END = date(2026, 10, 31)


@dataclass
class GenerateReport:
    """What one run wrote, and the headline figures of its ground truth."""

    out: Path
    files: dict[str, Path]
    rows: dict[str, int]
    customers: int
    days: int
    seed: int
    start: date
    end: date
    shift_at: date | None
    seconds: float
    mean_p_churn: float
    mean_p_convert: float
    churned_share: float

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v:,}" for k, v in self.rows.items())
        return (
            f"{self.customers:,} customers x {self.days} days ({self.start} .. {self.end}, seed {self.seed}) "
            f"in {self.seconds:.1f} s -> {self.out}: {rows}; ground truth mean p_churn {self.mean_p_churn:.3f}, "
            f"mean p_convert {self.mean_p_convert:.3f}; churned by the end {self.churned_share:.1%}"
        )


def _parse_date(value: str | date | None, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise PropensityError(f"--{name}: expected a date like 2026-10-31, got {value!r}") from exc


def generate(
    customers: int,
    days: int,
    seed: int,
    out: str | Path,
    end: str | date | None = None,
    shift_at: str | date | None = None,
    fmt: Literal["parquet", "csv"] = "parquet",
    config: GeneratorConfig | None = None,
    progress: bool = True,
    anomalies: bool = False,
) -> GenerateReport:
    """Simulate ``customers`` over the ``days`` ending on ``end`` and write the raw tables and ground truth.

    Each file is written to a temporary sibling and all are renamed into place at the end, so a failed run
    leaves earlier output untouched. ``anomalies`` adds bots, short views, test orders, absurd amounts,
    cancellations and duplicate complaints (``config.anomalies``), labelled in anomalies.parquet; the
    genuine rows stay those of a run without it.
    """
    if customers < 1:
        raise PropensityError(f"--customers must be at least 1, got {customers}")
    if days < 1:
        raise PropensityError(f"--days must be at least 1, got {days}")
    if fmt not in ("parquet", "csv"):
        raise PropensityError(f"--format must be parquet or csv, got {fmt!r}")
    end_date = _parse_date(end, "end") if end is not None else DEFAULT_END
    shift_date = _parse_date(shift_at, "shift-at")
    cfg = config or GeneratorConfig()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(customers, days, seed, end_date, cfg, shift_date)
    if shift_date is not None and not (sim.start <= shift_date <= end_date):
        raise PropensityError(
            f"--shift-at {shift_date} is outside the simulated window {sim.start} .. {end_date}"
        )
    truth_sum = np.zeros(2)
    truth_rows = 0
    injector = None
    if anomalies:
        from pipelines.synthetic.anomalies import Injector  # here: `python -m` of that module stays clean

        injector = Injector(sim, cfg.anomalies, seed)
    campaigns = None
    if cfg.campaigns:
        from pipelines.synthetic.campaigns import Campaigns

        campaigns = Campaigns(sim, seed)
    with raw_export(sim, out, fmt, injector) as export:
        sink = EventSink()
        sim.pre_window_orders(sink)
        with ThreadPoolExecutor(max_workers=cfg.truth_threads) as pool, _progress(progress) as bar:
            task = bar.add_task("simulating days", total=days) if bar else None
            for day in range(days):
                if (day + sim.start_weekday) % 7 == 0:  # Mondays: ground truth as of midnight
                    pch, pcv, cd, vd = week_truth(sim, day, pool=pool)
                    untreated = campaigns.untreated_truth(day, pch) if campaigns is not None else None
                    export.write_truth(day, pch, pcv, cd, vd, untreated)
                    if campaigns is not None:
                        campaigns.run(day, pch, export)  # after the truth: it is the untreated one
                    truth_sum += (pch.sum(), pcv.sum())
                    truth_rows += len(pch)
                sim.step(day, sink)
                month_ends = (sim.start + timedelta(days=day + 1)).day == 1
                if month_ends or day == days - 1:
                    export.flush(sink, through_day=day)
                if bar:
                    bar.advance(task)
        export.write_customers()
    joined = sim.traits.signup_day <= days - 1
    return GenerateReport(
        out=out,
        files=dict(export.files),
        rows=export.rows(),
        customers=customers,
        days=days,
        seed=seed,
        start=sim.start,
        end=end_date,
        shift_at=shift_date,
        seconds=time.perf_counter() - started,
        mean_p_churn=float(truth_sum[0] / max(truth_rows, 1)),
        mean_p_convert=float(truth_sum[1] / max(truth_rows, 1)),
        churned_share=float((~sim.alive[joined]).mean()),
    )


class _progress:
    """A rich progress bar over days, or nothing (tests, benchmarks)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
