"""``headstart fit`` and ``headstart compare``: train on labelled data, evaluate, save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..errors import ConfigError
from ..strategies.configs import DEFAULT_COMPARISON
from .app import command, err, out, resume_hint
from .launch import launch
from . import options as o
from .options import config_options, require_applicable, strategy_owners, with_config_options
from .output import comparison_table, describe_split, names, progress_bars, report_skipped, show_audit, show_fit

if TYPE_CHECKING:
    from ..workflows import FitRun, RunConfig

FIT_OPTIONS = config_options(strategy_owners())
# compare's network strategies share one budget: finetune's options (lora and bitfit keep their own lr)
BUDGET_OPTIONS = config_options(strategy_owners(["finetune"]),
                                panel=lambda owners: "Budget of the network strategies (finetune's options)")


# fit's own options, defined here to keep the command short
DATA_ARG = typer.Argument(None, show_default=False, help=(
    "An image folder (one sub-folder per class) or a .csv/.tsv/.jsonl table."))
# The share of the training split a fit holds out for validation when --val is 0 (Transfer's val_fraction).
TRAIN_VAL_SHARE = 0.15
VAL = typer.Option(0.0, show_default=False, rich_help_panel=o.DATA, help=o.help_with_default(
    "Share of the data held out as a validation split of its own; at 0 the fit holds out a share of the training "
    "split instead.", f"{TRAIN_VAL_SHARE} of the training split"))
STRICT = typer.Option(False, "--strict", help="Fail on unreadable samples instead of skipping them.",
                      rich_help_panel=o.DATA)
MODEL = o.model("Backbone: see `headstart models` (default: efficientnet_lite0 for images, minilm for text); "
                "`run:PATH` continues from a run's trained backbone; `NAME@PIXELS` feeds an image backbone at that "
                "size (e.g. efficientnet_lite0@128 for 128 px photos); `auto` ranks the candidates by LogME and fits "
                "the best.")
CANDIDATES = typer.Option(None, rich_help_panel=o.MODEL, help=(
    "Comma-separated backbones `--model auto` ranks (default: every offline backbone of the data's modality)."))
STRATEGY = typer.Option(None, rich_help_panel=o.STRATEGY, help=o.help_with_default(
    f"Transfer strategy: {', '.join(o.strategy_names())}.", "linear-probe, or the --config file's"))
CONFIG = typer.Option(None, "--config", rich_help_panel=o.STRATEGY, help=(
    "A run's or `headstart tune`'s config.yaml: its backbone, strategy, options and seed; options given on the "
    "command line win."))
CV = typer.Option(None, rich_help_panel=o.STRATEGY, help=(
    "Also estimate the metrics by stratified K-fold cross-validation on the training split (mean and std)."))
OUT = typer.Option(None, "--out", "-o", help="Run directory to write.", rich_help_panel=o.OUTPUT)
RESUME = typer.Option(None, help="Continue the interrupted run RUN where it stopped.", rich_help_panel=o.OUTPUT)
TRACK = typer.Option(None, rich_help_panel=o.OUTPUT, help=(
    "Log parameters, per-epoch metrics and the run to mlflow or tensorboard."))
TRACK_URI = typer.Option(None, rich_help_panel=o.OUTPUT, help=(
    "MLflow tracking URI or folder (./mlruns), or TensorBoard folder (./tensorboard)."))
REFIT = typer.Option(False, "--refit", rich_help_panel=o.STRATEGY, help=(
    "After choosing the epoch count on the validation share, train again on all the training data with it "
    "(network strategies; the linear probe always uses its validation share for the final head)."))
TTA = typer.Option(False, "--tta", rich_help_panel=o.STRATEGY, help=(
    "Test-time augmentation (images): predict each image and its mirror image and average the class "
    "probabilities; the run records it, so evaluate, predict and export apply it too."))
NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write cached features.", rich_help_panel=o.COMPUTE)
AUDIT = typer.Option(False, "--audit", rich_help_panel=o.DATA, help=(
    "Audit the data first (as `headstart audit` does) and print its summary; the run keeps it as audit.json."))
DROP = typer.Option(None, "--drop", rich_help_panel=o.DATA, help=(
    "Remove what the audit flags before the split: comma-separated duplicates, leakage, label-issues, outliers "
    "(duplicates keeps one of each group). The run lists each dropped sample and why in dropped.json."))


@command(panel="Train")
@with_config_options(FIT_OPTIONS)
@o.with_read_options
def fit(
    data: Optional[Path] = DATA_ARG,
    text_column: str = o.text_column(), label_column: str = o.label_column(), test: float = o.test_share(),
    val: float = VAL, strict: bool = STRICT, audit: bool = AUDIT, drop: Optional[str] = DROP, refit: bool = REFIT,
    tta: bool = TTA,
    model: Optional[str] = MODEL, candidates: Optional[str] = CANDIDATES, weights: Optional[Path] = o.weights(),
    strategy: Optional[str] = STRATEGY, config_file: Optional[Path] = CONFIG, cv: Optional[int] = CV,
    seed: Optional[int] = o.seed(None, o.help_with_default("Seed of the split and of training.",
                                                           "0, or the --config file's")),
    out_dir: Optional[Path] = OUT, resume: Optional[Path] = RESUME,
    track: Optional[str] = TRACK, track_uri: Optional[str] = TRACK_URI, as_json: bool = o.as_json("the test metrics"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(), device: str = o.device(),
    cache_dir: Optional[Path] = o.cache_dir(), no_cache: bool = NO_CACHE, nproc: int = o.nproc(),
    options: dict = None, reading: dict = None,
) -> None:
    """Fit a transfer model on DATA, evaluate it on a held-out test split, save the run."""
    if nproc > 1:  # before the imports below: the launcher itself needs none of them
        return launch(nproc, lambda: resume_hint("fit", resume or out_dir, nproc))
    from ..data_audit import check_drop_kinds
    from ..workflows import FitRun, RunArgs

    if resume is not None:
        job = FitRun.resume(resume)
    else:
        if data is None or out_dir is None:
            raise ConfigError("Give DATA and `--out RUN` (or `--resume RUN` to continue an interrupted run).")
        chosen = _run_config(config_file, model, strategy, options, seed, weights)
        job = FitRun(RunArgs.create(
            data, out_dir, model=chosen.model, strategy=chosen.strategy, candidates=names(candidates),
            options=chosen.options, text_column=text_column, label_column=label_column, test=test, val=val,
            seed=chosen.seed, weights=chosen.weights, strict=strict, batch_size=batch_size, workers=workers,
            device=device, cache_dir=cache_dir, no_cache=no_cache, cv=cv, track=track, track_uri=track_uri,
            reading=o.read_options(reading).to_dict(), audit=audit, drop=check_drop_kinds(names(drop)) or None,
            refit=refit, tta=tta))
    _audit_first(job, as_json)
    describe_split(job, as_json)
    with progress_bars(not as_json) as progress:
        result = job.run(progress)
    if result is not None:  # None on ranks other than 0 of a distributed fit
        show_fit(result, job.data.source, as_json)


def _audit_first(job: FitRun, as_json: bool) -> None:
    """``--audit`` / ``--drop``: audit the data before the split; show the summary and what was dropped."""
    if not (job.args.audit or job.args.drop):
        return
    with progress_bars(not as_json) as progress:
        result = job.audit(progress)
    if job.args.audit and not as_json:
        show_audit(result)
    if job.dropped:
        err.print(f"dropped {len(job.dropped)} flagged sample(s) ({', '.join(job.args.drop)}) before the split; the "
                  "run lists them, with the reason, in dropped.json", highlight=False)



def _run_config(config_file: Optional[Path], model: Optional[str], strategy: Optional[str], options: dict,
                seed: Optional[int], weights: Optional[Path]) -> RunConfig:
    """The config file's run (or the defaults) with what the command line gave taking precedence;
    a flag that does not apply to the strategy is an error naming it."""
    from ..strategies import get_strategy
    from ..workflows import RunConfig, read_run_config

    base = read_run_config(config_file) if config_file is not None else RunConfig()
    chosen = base.overridden(model=model, strategy=strategy, seed=seed, weights=weights)
    given = require_applicable(options, get_strategy(chosen.strategy).config_class, FIT_OPTIONS,
                               f"the {chosen.strategy} strategy")
    return chosen.overridden(options=given)


@command(panel="Train")
@with_config_options(BUDGET_OPTIONS)
@o.with_read_options
def compare(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    test: float = o.test_share(),
    train_per_class: Optional[int] = typer.Option(None, help="Few-shot: keep this many training samples per class.",
                                                  rich_help_panel=o.DATA),
    model: Optional[str] = o.model(), weights: Optional[Path] = o.weights(),
    strategies: str = typer.Option(",".join(DEFAULT_COMPARISON), help="Comma-separated strategies to compare.",
                                   rich_help_panel=o.STRATEGY),
    seed: int = o.seed(0, "Seed of the split, of the few-shot choice and of training."),
    workers: Optional[int] = o.workers(), device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", rich_help_panel=o.OUTPUT,
                                           help="Save the rows (comparison.json) and report.html here."),
    as_json: bool = o.as_json("the rows"),
    options: dict = None, reading: dict = None,
) -> None:
    """Train several strategies on the same split and budget: how much did transfer buy over scratch?"""
    from ..comparison import compare_strategies, write_comparison
    from ..data import few_shot_indices
    from ..strategies import get_strategy
    from ..data.opening import open_data

    finetune = get_strategy("finetune")
    budget = finetune.make_config(require_applicable(options, finetune.config_class, BUDGET_OPTIONS,
                                                     "the budget of the network strategies"))
    dataset = open_data(data, text_column, label_column, strict=False, reading=o.read_options(reading))
    report_skipped(dataset)
    train, test_part = dataset.split(test=test, seed=seed)
    if train_per_class:
        train = train.subset(few_shot_indices(train.y, train_per_class, seed))
    with progress_bars(not as_json) as progress:
        rows = compare_strategies(train, test_part, names(strategies) or [], model=model, finetune=budget,
                                  num_workers=workers, device=device, cache_dir=cache_dir, seed=seed, progress=progress,
                                  weights=weights)
    if out_dir is not None:
        from ..report import write_report

        write_comparison(out_dir, rows, train, test_part, dataset.summary())
        write_report(out_dir)
    _show_comparison(rows, f"{dataset.source}: {len(train)} train / {len(test_part)} test samples", as_json)


def _show_comparison(rows: list[dict], title: str, as_json: bool) -> None:
    keys = ("strategy", "accuracy", "f1", "precision", "recall", "trainable_params", "trainable_fraction",
            "checkpoint_bytes", "peak_memory_bytes", "train_seconds")
    if as_json:
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=1))
        return
    out.print(comparison_table(rows, f"{title}, {rows[0]['model']}"))
    out.print(f"peak mem: {rows[0]['memory_method']}; checkpoint: bytes of model.safetensors as `fit` saves it; "
              "lora and bitfit use the network budget (--epochs) at their own default lr.", highlight=False)
