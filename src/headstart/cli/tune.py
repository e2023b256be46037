"""``headstart tune``: search a strategy's options with Optuna, write the best as config.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import options as o
from .app import command, err, out
from .options import config_options, default_panel, require_applicable, strategy_names, strategy_owners, with_config_options
from .output import progress_bars, report_skipped, show_metrics, trials_table

# a strategy option given to tune is pinned: every trial uses it, the search leaves it alone
TUNE_OPTIONS = config_options(strategy_owners(), panel=lambda owners: default_panel(
    owners, strategy_names(), prefix="Pin (do not search) options of"))
SEARCH = "Search"

# tune's own options, defined here to keep the command short
STRATEGY = typer.Option("finetune", rich_help_panel=o.STRATEGY, help=(
    f"Strategy whose options are searched: {', '.join(strategy_names())}."))
TRIALS = typer.Option(20, help="Finished trials the study should reach (all processes on it together).",
                      rich_help_panel=SEARCH)
CV = typer.Option(None, help="Score each trial by stratified K-fold cross-validation.", rich_help_panel=SEARCH)
SPACE = typer.Option(None, help="YAML file narrowing or overriding the search space.", rich_help_panel=SEARCH)
STORAGE = typer.Option(None, rich_help_panel=SEARCH, help=(
    "Optuna storage URL shared by several processes or machines (default sqlite:///OUT/study.db)."))
STUDY = typer.Option("headstart", help="Study name; an existing study is continued.", rich_help_panel=SEARCH)
TIMEOUT = typer.Option(None, help="Start no new trial after this many seconds.", rich_help_panel=SEARCH)
PRUNER = typer.Option("median", help="median, hyperband or none.", rich_help_panel=SEARCH)
PRUNER_STARTUP = typer.Option(4, help="Trials that finish before the median pruner starts pruning.",
                              rich_help_panel=SEARCH)
OUT = typer.Option(..., "--out", "-o", rich_help_panel=o.OUTPUT,
                   help="Folder for study.db, config.yaml, tuning.json, report.html.")
REFIT = typer.Option(False, "--refit", rich_help_panel=o.OUTPUT,
                     help="Train the best config on train+val and save the run in OUT/refit.")
TRACK = typer.Option(None, help="Log each trial to mlflow or tensorboard.", rich_help_panel=o.OUTPUT)
TRACK_URI = typer.Option(None, help="MLflow tracking URI or folder, or TensorBoard folder.", rich_help_panel=o.OUTPUT)


@command(panel="Train")
@with_config_options(TUNE_OPTIONS)
@o.with_read_options
def tune(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    test: float = o.test_share("Share held out for the test split (never seen by the search)."),
    model: Optional[str] = o.model(), weights: Optional[Path] = o.weights(), strategy: str = STRATEGY,
    seed: int = o.seed(0, "Seed of the splits, of training and of the sampler."),
    trials: int = TRIALS, cv: Optional[int] = CV, space: Optional[Path] = SPACE, storage: Optional[str] = STORAGE,
    study: str = STUDY, timeout: Optional[float] = TIMEOUT, pruner: str = PRUNER, pruner_startup: int = PRUNER_STARTUP,
    out_dir: Path = OUT, refit: bool = REFIT, track: Optional[str] = TRACK, track_uri: Optional[str] = TRACK_URI,
    as_json: bool = o.as_json("the best trial"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(), device: str = o.device(),
    cache_dir: Optional[Path] = o.cache_dir(),
    options: dict = None, reading: dict = None,
) -> None:
    """Search a strategy's options with Optuna (TPE, per-epoch pruning); write the best as config.yaml.

    Strategy options given on the command line are pinned: every trial uses them.
    """
    import optuna

    from ..strategies import get_strategy
    from ..tuning import TuneSettings, read_space, tune as run_search
    from ..data.opening import open_data
    from ..workflows import refit_best, save_search, trial_trackers

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and table say what its log lines would
    pinned = require_applicable(options, get_strategy(strategy).config_class, TUNE_OPTIONS, f"the {strategy} strategy")
    overrides = {**(read_space(space) if space else {}), **pinned} or None
    settings = TuneSettings(trials=trials, cv=cv, storage=storage or f"sqlite:///{(out_dir / 'study.db').resolve()}",
                            study=study, pruner=pruner, pruner_startup=pruner_startup, timeout=timeout, seed=seed,
                            shared=storage is not None)
    dataset = open_data(data, text_column, label_column, strict=False, reading=o.read_options(reading))
    report_skipped(dataset)
    train, test_part = dataset.split(test=test, seed=seed)
    transfer_options = dict(weights=weights, cache_dir=cache_dir, batch_size=batch_size, num_workers=workers,
                            device=device)
    trial_callbacks, after_trial = trial_trackers(track, track_uri, study)
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress_bars(not as_json) as progress:
        result = run_search(train, strategy, model=model, settings=settings, space=overrides,
                            transfer_options=transfer_options, trial_callbacks=trial_callbacks,
                            after_trial=after_trial, progress=progress)
    summary = save_search(result, out_dir, data_summary=dataset.summary(), weights=weights)
    metrics = None
    if refit:
        with progress_bars() as progress:
            metrics = refit_best(result, train, test_part, out_dir / "refit", data_summary=dataset.summary(),
                                 transfer_options=transfer_options, progress=progress)
        err.print(f"refit run saved to {out_dir / 'refit'}", highlight=False)
    _show_search(result, summary, metrics, data, out_dir, dataset.source, as_json)


def _show_search(result, summary: dict, metrics: Optional[dict], data: Path, out_dir: Path, source: str,
                 as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: summary[k] for k in ("study", "best", "epochs")}
                         | ({"refit_test": metrics} if metrics else {}), indent=1))
        return
    out.print(trials_table(summary))
    epochs = summary["epochs"]
    out.print(f"best trial #{result.best_trial}: validation macro F1 {result.best_value:.4f}; pruning ran "
              f"{epochs['run']} of {epochs['unpruned']} epochs; config: [bold]{out_dir / 'config.yaml'}[/] "
              f"(`headstart fit {data} --config {out_dir / 'config.yaml'} --out RUN`); report: {out_dir / 'report.html'}",
              highlight=False)
    if metrics:
        show_metrics(metrics, f"refit on train+val, test split of {source}")
