"""``headstart tune`` and ``headstart report``, and ``fit --config``'s reading of a config file."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from .cli import command, err, open_data, out, progress_bars, report_skipped, show_metrics
from .errors import ConfigError
from .strategies import STRATEGIES

__all__ = ["apply_config_file", "tune", "report"]


def apply_config_file(path: Optional[Path], model: Optional[str], strategy: Optional[str], options: dict,
                      seed: Optional[int], weights: Optional[Path]):
    """Fill what the command line left out from a run's or a search's ``config.yaml``.

    Returns (model, strategy, options, seed, weights); without a file, only the defaults.
    """
    if path is None:
        return model, strategy or "linear-probe", options, 0 if seed is None else seed, weights
    from .tuning import read_yaml_mapping

    config = read_yaml_mapping(path, "config file", "`strategy`, `strategy_config`, `backbone` and `seed`")
    if "strategy" not in config or "strategy_config" not in config:
        raise ConfigError(f"{path} is not a headstart config: it needs `strategy` and `strategy_config` "
                          "(write one with `headstart tune` or `headstart fit`).")
    if strategy is not None and strategy != config["strategy"]:
        raise ConfigError(f"`--strategy {strategy}` contradicts {path}, which configures {config['strategy']}; "
                          "drop one of them.")
    backbone = config.get("backbone") or {}
    given = {k: v for k, v in options.items() if v is not None}
    merged = {**(config["strategy_config"] or {}), **given}
    file_weights = backbone.get("weights")
    return (model or backbone.get("name"), config["strategy"], merged,
            seed if seed is not None else int(config.get("seed", 0)),
            weights or (Path(file_weights) if file_weights else None))


def _trials_table(summary: dict, limit: int = 15) -> Table:
    params = list(summary["space"])
    table = Table(title=f"study {summary['study']}: best trials", title_justify="left")
    for column in ("#", "state", "val F1", "epochs", *params):
        table.add_column(column, justify="right")
    ranked = sorted(summary["trials"], key=lambda t: -(t["value"] if t["value"] is not None else -1))
    for t in ranked[:limit]:
        values = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (t["params"].get(p, "—") for p in params)]
        value = f"{t['value']:.4f}" if t["value"] is not None else "—"
        table.add_row(str(t["number"]), t["state"].lower(), value, f"{t['epochs_run'] or 0}/{t['epochs_budget'] or 0}",
                      *values)
    return table


def _tracking_hooks(track: Optional[str], track_uri: Optional[str], study: str):
    """Per-trial tracker runs: opened when a trial starts training, closed when the trial ends."""
    from .tracking import open_tracker, require_tracker

    if track is None:
        return None, None
    require_tracker(track)  # before the search starts, not at its first trial
    trackers: dict[int, object] = {}

    def trial_callbacks(trial, config):
        if trial.number not in trackers:
            tracker = open_tracker(track, f"{study}-trial-{trial.number}", uri=track_uri, experiment=study)
            tracker.log_params({"trial": trial.number, **asdict(config)})
            trackers[trial.number] = tracker
        return [trackers[trial.number]]

    def after_trial(study_, trial) -> None:
        tracker = trackers.pop(trial.number, None)
        if tracker is not None:
            tracker.log_metrics({"objective": trial.value} if trial.value is not None else {})
            tracker.close()

    return trial_callbacks, after_trial


@command
def tune(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backbone (default per modality)."),
    strategy: str = typer.Option("finetune", help=f"Strategy whose options are searched: {', '.join(STRATEGIES)}."),
    trials: int = typer.Option(20, help="Finished trials the study should reach (all processes on it together)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for study.db, config.yaml, tuning.json, report.html."),
    cv: Optional[int] = typer.Option(None, help="Score each trial by stratified K-fold cross-validation."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by several processes or machines "
                                          "(default sqlite:///OUT/study.db)."),
    study: str = typer.Option("headstart", help="Study name; an existing study is continued."),
    timeout: Optional[float] = typer.Option(None, help="Start no new trial after this many seconds."),
    space: Optional[Path] = typer.Option(None, help="YAML file narrowing or overriding the search space."),
    pruner: str = typer.Option("median", help="median, hyperband or none."),
    pruner_startup: int = typer.Option(4, help="Trials that finish before the median pruner starts pruning."),
    refit: bool = typer.Option(False, "--refit", help="Train the best config on train+val and save the run in OUT/refit."),
    track: Optional[str] = typer.Option(None, help="Log each trial to mlflow or tensorboard."),
    track_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI or folder, or TensorBoard folder."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    test: float = typer.Option(0.2, help="Share held out for the test split (never seen by the search)."),
    seed: int = typer.Option(0, help="Seed of the splits, of training and of the sampler."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file for the backbone."),
    batch_size: int = typer.Option(64, help="Batch size of feature extraction and prediction."),
    workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None), as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search a strategy's options with Optuna (TPE, per-epoch pruning); write the best as config.yaml."""
    from .report import write_report
    from .runs import write_text_atomic
    import optuna

    from .tuning import TuneSettings, read_space, tune as run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and table say what its log lines would

    settings = TuneSettings(trials=trials, cv=cv, storage=storage or f"sqlite:///{(out_dir / 'study.db').resolve()}",
                            study=study, pruner=pruner, pruner_startup=pruner_startup, timeout=timeout, seed=seed, shared=storage is not None)
    overrides = read_space(space) if space else None
    dataset = open_data(data, text_column, label_column, strict=False)
    report_skipped(dataset)
    train, test_part = dataset.split(test=test, seed=seed)
    options = dict(weights=weights, cache_dir=cache_dir, batch_size=batch_size, num_workers=workers, device=device)
    trial_callbacks, after_trial = _tracking_hooks(track, track_uri, study)
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress_bars(not as_json) as progress:
        result = run_search(train, strategy, model=model, settings=settings, space=overrides, transfer_options=options,
                            trial_callbacks=trial_callbacks, after_trial=after_trial, progress=progress)
    summary = {**result.summary(), "data": dataset.summary()}
    config = result.run_config()
    if weights:
        config["backbone"]["weights"] = str(weights)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(out_dir / "tuning.json", json.dumps(summary, indent=1))
    write_report(out_dir, f"headstart search: {study}")
    metrics = _refit(result, train, test_part, dataset, options, seed, out_dir / "refit", summary) if refit else None
    if as_json:
        print(json.dumps({k: summary[k] for k in ("study", "best", "epochs")} | ({"refit_test": metrics} if metrics else {}),
                         indent=1))
        return
    out.print(_trials_table(summary))
    epochs = summary["epochs"]
    out.print(f"best trial #{result.best_trial}: validation macro F1 {result.best_value:.4f}; pruning ran "
              f"{epochs['run']} of {epochs['unpruned']} epochs; config: [bold]{out_dir / 'config.yaml'}[/] "
              f"(`headstart fit {data} --config {out_dir / 'config.yaml'} --out RUN`); report: {out_dir / 'report.html'}",
              highlight=False)
    if metrics:
        show_metrics(metrics, f"refit on train+val, test split of {dataset.source}")


def _refit(result, train, test_part, dataset, options: dict, seed: int, run_dir: Path, summary: dict) -> dict:
    """Train the best config on all of the training split (train + val) and save it as a run."""
    from .data import stratified_split
    from .report import write_report
    from .strategies import make_config
    from .transfer import Transfer

    config = make_config(result.strategy, result.run_config(refit=True)["strategy_config"])
    _, val_idx = stratified_split(train.y, [result.settings.val_fraction], seed)
    with progress_bars(True) as progress:
        model = Transfer(result.model, result.strategy, config=config, seed=seed, progress=progress, **options)
        model.fit(train, train.subset(val_idx))  # val is inside train: its curve is in-sample here
        metrics, predictions = model.evaluate_with_predictions(test_part)
    model.save(run_dir, metrics={"test": metrics, "data": dataset.summary()},
               extra={"predictions": predictions, "tuning": summary})
    write_report(run_dir)
    err.print(f"refit run saved to {run_dir}", highlight=False)
    return metrics


@command
def report(
    run: Path = typer.Argument(..., help="A run (`fit`), comparison (`compare --out`) or search (`tune --out`) folder."),
    title: Optional[str] = typer.Option(None, help="The page's title (default: from the folder's name)."),
) -> None:
    """Write RUN/report.html: data, backbone, curves, confusion matrix, per-class scores, mistakes, search."""
    from .report import write_report

    path = write_report(run, title)
    out.print(f"report written to [bold]{path}[/] ({path.stat().st_size / 1024:.0f} KiB, self-contained)", highlight=False)
