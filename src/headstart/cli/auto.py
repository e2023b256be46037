"""``headstart auto``: one command from labelled data to the best model a time budget allows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from . import options as o
from .app import command, err, out
from .output import WrappingTable, names, progress_bars, show_metrics

BUDGET = typer.Option("20m", rich_help_panel=o.STRATEGY, help=(
    "Wall time the whole job may take: 90s, 20m, 1h, 1h30m (a bare number is minutes)."))
CANDIDATES = typer.Option(None, rich_help_panel=o.MODEL, help=(
    "Comma-separated backbones to choose from (default: every offline backbone of the data's modality); "
    "`run:PATH` adds your own."))
NO_AUDIT = typer.Option(False, "--no-audit", rich_help_panel=o.DATA, help="Skip the data audit.")
DROP = typer.Option(None, "--drop", rich_help_panel=o.DATA, help=(
    "Remove what the audit flags before the split: comma-separated duplicates, leakage, label-issues, outliers."))
OUT = typer.Option(None, "--out", "-o", help="Run directory to write.", rich_help_panel=o.OUTPUT)
TRIALS = typer.Option(40, min=0, rich_help_panel=o.STRATEGY, help=(
    "Most trials of the search of the best network strategy's settings, when time is left for 4 (0: no search)."))
RESUME = typer.Option(None, help="Continue the interrupted job RUN (stages already scored are kept).",
                      rich_help_panel=o.OUTPUT)


@command(panel="Start here")
@o.with_read_options
def auto(
    data: Optional[Path] = typer.Argument(None, show_default=False, help=(
        "An image folder (one sub-folder per class) or a .csv/.tsv/.jsonl table.")),
    budget: str = BUDGET, candidates: Optional[str] = CANDIDATES,
    text_column: str = o.text_column(), label_column: str = o.label_column(), test: float = o.test_share(),
    no_audit: bool = NO_AUDIT, drop: Optional[str] = DROP, trials: int = TRIALS, seed: int = o.seed(),
    out_dir: Optional[Path] = OUT, resume: Optional[Path] = RESUME, as_json: bool = o.as_json("the result"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(), device: str = o.device(),
    cache_dir: Optional[Path] = o.cache_dir(), reading: dict = None,
) -> None:
    """Choose backbone, strategy and epochs for DATA within a time budget; refit the winner, test it once, save."""
    from ..autopilot import AutoArgs, AutoRun, parse_duration, stage_title
    from ..data_audit import check_drop_kinds

    if resume is not None:
        job = AutoRun.resume(resume)
    else:
        if data is None or out_dir is None:
            raise ConfigError("Give DATA and `--out RUN` (or `--resume RUN` to continue an interrupted job).")
        job = AutoRun(AutoArgs(
            data=str(data), out_dir=str(out_dir), budget=parse_duration(budget), candidates=names(candidates),
            test=test, seed=seed, audit=not no_audit, trials=trials, drop=check_drop_kinds(names(drop)) or None,
            text_column=text_column, label_column=label_column, reading=o.read_options(reading).to_dict(),
            batch_size=batch_size, workers=workers, device=device, cache_dir=str(cache_dir) if cache_dir else None))
    if not as_json:
        err.print(f"auto: {job.data.source}, {len(job.data)} samples, budget {_minutes(job.budget.seconds)} "
                  f"({_minutes(job.budget.left())} left)", highlight=False)
    try:
        with progress_bars(not as_json) as progress:
            result = job.run(progress)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted:[/] no run was written; the stages scored so far are kept: continue with "
                  f"`headstart auto --resume {job.out_dir}`.", highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps({"test": result.metrics, "winner": result.winner, "stages": result.stages,
                          "spent_seconds": round(result.spent, 1), "budget_seconds": result.budget}, indent=1))
        return
    out.print(leaderboard(result.stages, result.winner))
    show_metrics(result.metrics, f"test split of {Path(job.data.source).name} — {result.winner['model']}, "
                                 f"{stage_title(result.winner)}")
    out.print(f"{result.winner.get('refit', '')}; took {_minutes(result.spent)} of {_minutes(result.budget)}; run "
              f"saved to [bold]{result.out_dir}[/]", highlight=False)


def _minutes(seconds: float) -> str:
    from ..autopilot import format_duration

    return format_duration(seconds)


def leaderboard(stages: list[dict], winner: dict) -> WrappingTable:
    """Every stage, scored or skipped, best first; the winner marked ★."""
    from ..autopilot import stage_title

    table = WrappingTable(title="auto: candidates on the training split, best first", title_justify="left")
    for column in ("strategy", "model", "epochs", "score", "seconds", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "score", "seconds") else "left")
    ordered = sorted(stages, key=lambda r: -(r["score"] if r["score"] is not None else -1))
    for row in ordered:
        epochs = f"{row['best_epoch']}/{row['epochs']}" if row.get("epochs") else "—"
        table.add_row(stage_title(row) + (" ★" if row is winner else ""), row["model"], epochs,
                      f"{row['score']:.4f}" if row["score"] is not None else "—", f"{row['seconds']:.0f}",
                      row["status"])
    return table
