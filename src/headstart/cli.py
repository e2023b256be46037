"""The ``headstart`` command: parse options, call the Python API, show the results.

Errors a user can fix (bad data, unknown model, missing weights) print one red line and
exit with code 2; nothing here computes anything the API does not.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .backbones import list_backbones
from .data import ImageFiles, ImageFolder, LabelledData, TextTable
from .comparison import DEFAULT_COMPARISON, compare_strategies
from .errors import ConfigError, DataError, HeadstartError
from .strategies import STRATEGIES, LinearProbeConfig, make_config
from .transfer import Transfer, load

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning from a pre-trained model to your labelled images or texts.")
out = Console()
err = Console(stderr=True)
TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".ndjson"}


def main() -> None:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_time=False, show_path=False)])
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop (kill, SLURM) ends a run like Ctrl-C
    app()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def command(func):
    """Register a command whose user errors print one red line (exit 2) and whose
    interruption says what was kept (exit 130), never a traceback."""

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HeadstartError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] no finished run was written or changed; a fine-tuning run "
                      "keeps its last epoch's checkpoint: continue it with `headstart fit --resume RUN`.")
            raise typer.Exit(130) from None

    return app.command()(guarded)


# -- helpers -------------------------------------------------------------------------------
def open_data(path: Path, text_column: str, label_column: Optional[str], strict: bool) -> LabelledData:
    """An image folder or a text table, from what the path is."""
    if path.is_dir():
        return ImageFolder(path, strict=strict)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return TextTable(path, text=text_column, label=label_column, strict=strict)
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    raise DataError(f"{path} is neither a folder of class folders nor a text table (.csv, .tsv, .jsonl).")


def open_inputs(paths: list[Path], modality: str, text_column: str) -> LabelledData:
    """Unlabelled inputs for prediction: image files/folders, or one text table."""
    if modality == "image":
        return ImageFiles(paths)
    if len(paths) != 1:
        raise DataError("For a text model give one table (.csv, .tsv, .jsonl) of texts to predict.")
    return TextTable(paths[0], text=text_column, label=None)


def report_skipped(data: LabelledData) -> None:
    if data.skipped:
        err.print(f"[yellow]warning:[/] skipped {len(data.skipped)} unreadable sample(s) in {data.source}:")
        for issue in data.skipped[:10]:
            err.print(f"  {issue}", highlight=False, markup=False)
        if len(data.skipped) > 10:
            err.print(f"  ... and {len(data.skipped) - 10} more")


@contextmanager
def progress_bars(enabled: bool = True):
    """A rich progress display; yields a ``progress(stage, done, total)`` callback.

    Where stderr is no terminal (a log file, nohup, a batch job) a live display would show
    nothing until the end, so each finished stage prints one plain line instead.
    """
    if not enabled:
        yield None
        return
    if not err.is_terminal:
        yield _log_lines()
        return
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
    tasks: dict[str, int] = {}
    with Progress(*columns, console=err, transient=False) as bars:
        def update(stage: str, done: int, total: int, note: str = "") -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, note="")
            bars.update(tasks[stage], completed=done, total=total, **({"note": note} if note else {}))
        yield update


def _log_lines():
    """A ``progress`` callback printing one line per finished stage, and one per note (epoch scores)."""
    started: dict[str, float] = {}
    printed: set[tuple[str, str]] = set()

    def update(stage: str, done: int, total: int, note: str = "") -> None:
        started.setdefault(stage, time.perf_counter())
        if done < total or (stage, note) in printed:
            return
        printed.add((stage, note))
        seconds = time.perf_counter() - started[stage]
        err.print(f"{stage}: {note}" if note else f"{stage}: {done}/{total} in {seconds:.0f} s",
                  highlight=False, markup=False)
    return update


def metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.add_section()
    table.add_row("macro avg", f"{metrics['precision']:.3f}", f"{metrics['recall']:.3f}", f"{metrics['f1']:.3f}",
                  str(metrics["samples"]), style="bold")
    return table


def confusion_table(metrics: dict) -> Table:
    classes = metrics["classes"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in classes:
        table.add_column(name[:10], justify="right")
    for name, row in zip(classes, metrics["confusion_matrix"]):
        table.add_row(name[:16], *(f"[bold]{v}[/]" if i == j else str(v) for j, v in enumerate(row)
                                   for i in [classes.index(name)]))
    return table


def ranking_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "model", "layer", "LogME", "LEEP", "NCE", "H-score", "kNN acc", "dim", "score s"):
        table.add_column(column, justify="left" if column in ("model", "layer") else "right")
    for place, row in enumerate(rows, 1):
        optional = [f"{row[k]:.3f}" if row[k] is not None else "—" for k in ("leep", "nce")]
        table.add_row(str(place), row["model"], row["layer"], f"{row['logme']:.3f}", *optional, f"{row['hscore']:.2f}",
                      f"{row['knn_accuracy']:.3f}", str(row["feature_dim"]), f"{row['seconds']:.2f}")
    return table


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def show_metrics(metrics: dict, title: str) -> None:
    out.print(metrics_table(metrics, title))
    if len(metrics["classes"]) <= 12:
        out.print(confusion_table(metrics))
    out.print(f"[bold]accuracy {metrics['accuracy']:.4f}[/]   balanced accuracy {metrics['balanced_accuracy']:.4f}"
              f"   macro F1 {metrics['f1']:.4f}   ({metrics['samples']} samples)")


# -- commands ------------------------------------------------------------------------------
@command
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered backbones, their weights' availability and input contracts."""
    rows = list_backbones()
    if as_json:
        print(json.dumps([row.__dict__ for row in rows], indent=1))
        return
    table = Table(title="backbones (also: timm:<name> and hf:<id or folder>)", title_justify="left")
    for column in ("name", "modality", "weights", "feature dim", "input contract", "layer groups"):
        table.add_column(column)
    for row in rows:
        c = row.contract
        if row.modality == "image":
            contract = (f"{c['input_size']}px, crop {c['crop_pct']}, {c['interpolation']}, "
                        f"mean {tuple(c['mean'])}, std {tuple(c['std'])}")
        else:
            contract = f"tokenizer {c['tokenizer']}, max {c['max_length']} tokens, {c['extra'].get('pooling')} pooling"
        table.add_row(row.name, row.modality, "[green]offline[/]" if row.available else "[red]missing[/]",
                      str(row.feature_dim), contract, str(len(c["layer_groups"])))
    out.print(table)


def strategy_config(strategy: str, options: dict):
    """The strategy's config from the options the user gave (None: not given)."""
    given = {k: v for k, v in options.items() if v is not None}
    fields = getattr(STRATEGIES.get(strategy), "__dataclass_fields__", None)
    foreign = [k for k in given if fields is not None and k not in fields]
    if foreign:  # name the flags the user typed, not the config fields
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in foreign)
        raise ConfigError(f"{flags} does not apply to the {strategy} strategy.")
    return make_config(strategy, given)


def _fit_and_report(data: LabelledData, model: Optional[str], out_dir: Path, *, strategy: str, config,
                    candidates: Optional[list[str]] = None, test: float, val: float, seed: int,
                    weights: Optional[Path], batch_size: int, workers: Optional[int], device: str,
                    cache_dir: Optional[Path], no_cache: bool, as_json: bool, resume: bool = False,
                    cv: Optional[int] = None, track: Optional[str] = None, track_uri: Optional[str] = None) -> dict:
    from .report import write_report
    from .tracking import open_tracker
    from .tuning import cross_validate

    report_skipped(data)
    parts = data.split(test=test, val=val, seed=seed) if val > 0 else data.split(test=test, seed=seed)
    train, val_part, test_part = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    if not as_json:
        counts = ", ".join(f"{k}: {v}" for k, v in data.class_counts().items())
        err.print(f"[bold]{data.source}[/]: {len(data)} {data.modality} samples, {len(data.classes)} classes ({counts}); "
                  f"train {len(train)}, test {len(test_part)}" + (f", val {len(val_part)}" if val_part else ""),
                  highlight=False)
    started = time.perf_counter()
    workspace = work_dir(out_dir)
    tracker = open_tracker(track, out_dir.name, uri=track_uri)
    with progress_bars(not as_json) as progress:
        def make() -> Transfer:
            return Transfer(model, strategy, candidates=candidates, config=config, weights=weights, cache_dir=cache_dir,
                            use_cache=not no_cache, batch_size=batch_size, num_workers=workers, device=device,
                            seed=seed, progress=progress)
        cv_result = cross_validate(make, train, cv, seed, progress) if cv else None
        estimator = make().fit(train, val_part, checkpoint=workspace / "checkpoint.pt", resume=resume,
                               callbacks=[tracker] if tracker else [])
        metrics, predictions = estimator.evaluate_with_predictions(test_part)
    metrics["fit_seconds"] = round(time.perf_counter() - started, 2)
    if estimator.ranking_ and not as_json:
        out.print(ranking_table(estimator.ranking_, f"ranking on the training split: chose {estimator.model_name_}"))
    documents = {"test": metrics, "data": data.summary(), **({"cv": cv_result} if cv_result else {})}
    estimator.save(out_dir, metrics=documents, extra={"predictions": predictions})
    write_report(out_dir)
    shutil.rmtree(workspace, ignore_errors=True)
    if tracker:
        tracker.log_params({"model": estimator.model_name_, "strategy": strategy, "seed": seed,
                            **asdict(estimator.config_)})
        tracker.log_metrics({"test": metrics, **({"cv": cv_result["mean"]} if cv_result else {})})
        tracker.log_artifacts(out_dir)
        tracker.close()
    if cv_result and not as_json:
        out.print(cv_table(cv_result))
    if as_json:
        print(json.dumps(metrics, indent=1))
    else:
        show_metrics(metrics, f"test split of {data.source} — {estimator.model_name_}, {strategy}")
        info = estimator.fit_info_
        chosen = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("selected", {}).items())
        detail = f"best epoch {info['best_epoch']} of {info['epochs_run']}" if "best_epoch" in info else f"head ({chosen})"
        out.print(f"{strategy}: {detail}; {info['trainable_params']:,} trainable parameters; took "
                  f"{metrics['fit_seconds']:.1f}s{' since the resume' if resume else ''}; run saved to [bold]{out_dir}[/]", highlight=False)
    return metrics


def cv_table(cv: dict) -> Table:
    table = Table(title=f"{cv['k']}-fold cross-validation on the training split (mean ± std)", title_justify="left")
    for metric in cv["mean"]:
        table.add_column(metric.replace("_", " "), justify="right")
    table.add_row(*(f"{cv['mean'][m]:.4f} ± {cv['std'][m]:.4f}" for m in cv["mean"]))
    return table


def work_dir(out_dir: Path) -> Path:
    """Where an unfinished run keeps its checkpoint and arguments (a hidden sibling of the run)."""
    return out_dir.parent / f".{out_dir.name}.unfinished"


@command
def fit(
    data: Optional[Path] = typer.Argument(None, help="An image folder (one sub-folder per class) or a .csv/.tsv/.jsonl table."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=(
        "Backbone: see `headstart models` (default: efficientnet_lite0 for images, minilm for text); "
        "`auto` ranks the candidates by LogME and fits the best.")),
    strategy: Optional[str] = typer.Option(None, help=f"Transfer strategy: {', '.join(STRATEGIES)} (default linear-probe)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help=(
        "A run's or `headstart tune`'s config.yaml: its backbone, strategy, options and seed; options given "
        "on the command line win.")),
    cv: Optional[int] = typer.Option(None, help="Also estimate the metrics by stratified K-fold cross-validation "
                                     "on the training split (mean and std)."),
    track: Optional[str] = typer.Option(None, help="Log parameters, per-epoch metrics and the run to mlflow or tensorboard."),
    track_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI or folder (./mlruns), or TensorBoard "
                                            "folder (./tensorboard)."),
    candidates: Optional[str] = typer.Option(None, help="Comma-separated backbones `--model auto` ranks "
                                             "(default: every offline backbone of the data's modality)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory to write."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run RUN where it stopped."),
    head: Optional[str] = typer.Option(None, help="linear-probe: linear (logistic regression) or mlp."),
    class_weight: Optional[str] = typer.Option(None, help="'balanced' for imbalanced classes."),
    epochs: Optional[int] = typer.Option(None, help="Network strategies: passes over the data (default 5)."),
    lr: Optional[float] = typer.Option(None, help="Network strategies: peak learning rate of the head (1e-3)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (0.01), none on biases/norms."),
    unfreeze: Optional[str] = typer.Option(None, help="finetune: 'all' or how many top layer groups train."),
    gradual: Optional[int] = typer.Option(None, help="finetune: unfreeze one more group every N epochs."),
    layer_decay: Optional[float] = typer.Option(None, help="Each layer group's lr = the group above's x this."),
    dropout: Optional[float] = typer.Option(None, help="Dropout before the head (mlp head: before its last layer)."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the loss (0.1)."),
    l2sp: Optional[float] = typer.Option(None, help="L2-SP strength: penalty towards the pre-trained weights."),
    patience: Optional[int] = typer.Option(None, help="Early-stopping patience in epochs (3; 0: off)."),
    randaugment: Optional[str] = typer.Option(None, help="timm RandAugment policy for images, e.g. rand-m9-mstd0.5."),
    train_bn: Optional[bool] = typer.Option(None, "--train-bn/--keep-bn-stats", help=(
        "Update BatchNorm statistics while fine-tuning (default: keep the pre-trained ones).")),
    lora_rank: Optional[int] = typer.Option(None, help="lora: rank of each low-rank update (8)."),
    lora_alpha: Optional[float] = typer.Option(None, help="lora: scale alpha; the update is scaled by alpha / rank (16)."),
    lora_dropout: Optional[float] = typer.Option(None, help="lora: dropout on the adapters' input (0)."),
    lora_targets: Optional[str] = typer.Option(None, help=(
        "lora: comma-separated layer names to adapt (default: attention query,value; ViT qkv; conv_pw,conv_pwl).")),
    lora_bias: Optional[str] = typer.Option(None, help="lora: 'all' also trains the backbone's biases (default none)."),
    bitfit_norms: Optional[bool] = typer.Option(None, "--bitfit-norms/--bitfit-biases-only", help=(
        "bitfit: also train normalisation scales (default: biases only).")),
    text_column: str = typer.Option("text", help="Text column of a table."),
    label_column: str = typer.Option("label", help="Label column of a table."),
    test: float = typer.Option(0.2, help="Share of the data held out for the test split."),
    val: float = typer.Option(0.0, help="Share held out for validation (default: taken from train)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split and of training (default 0)."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file (.safetensors or .pth) for the backbone."),
    strict: bool = typer.Option(False, help="Fail on unreadable samples instead of skipping them."),
    batch_size: int = typer.Option(64, help="Batch size of feature extraction and prediction."),
    workers: Optional[int] = typer.Option(None, help="Image-decoding worker processes (default: none on <= 2 cores, else cores / 2, at most 4)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default ~/.cache/headstart)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached features."),
    as_json: bool = typer.Option(False, "--json", help="Print the test metrics as JSON."),
) -> None:
    """Fit a transfer model on DATA, evaluate it on a held-out test split, save the run."""
    if resume is not None:
        saved = work_dir(resume) / "args.json"
        if not saved.is_file():
            raise DataError(f"{resume} has no unfinished training to resume (no {saved}).")
        args = json.loads(saved.read_text())
    else:
        if data is None or out_dir is None:
            raise ConfigError("Give DATA and `--out RUN` (or `--resume RUN` to continue an interrupted run).")
        options = dict(head=head, class_weight=class_weight, epochs=epochs, lr=lr, weight_decay=weight_decay,
                       unfreeze=unfreeze, gradual=gradual, layer_decay=layer_decay, dropout=dropout,
                       label_smoothing=label_smoothing, l2sp=l2sp, patience=patience, randaugment=randaugment,
                       train_bn=train_bn, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                       lora_targets=lora_targets, lora_bias=lora_bias, bitfit_norms=bitfit_norms)
        from .cli_tune import apply_config_file

        model, strategy, options, seed, weights = apply_config_file(config_file, model, strategy, options, seed, weights)
        args = dict(data=str(data), model=model, strategy=strategy, candidates=candidates, out_dir=str(out_dir),
                    options=options, text_column=text_column, label_column=label_column, test=test, val=val,
                    seed=seed, weights=str(weights) if weights else None, strict=strict, batch_size=batch_size,
                    workers=workers, device=device, cache_dir=str(cache_dir) if cache_dir else None, no_cache=no_cache,
                    cv=cv, track=track, track_uri=track_uri)
    config = strategy_config(args["strategy"], args["options"])
    dataset = open_data(Path(args["data"]), args["text_column"], args["label_column"], args["strict"])
    workspace = work_dir(Path(args["out_dir"]))
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "args.json").write_text(json.dumps(args, indent=1))
    _fit_and_report(dataset, args["model"], Path(args["out_dir"]), strategy=args["strategy"], config=config,
                    candidates=_names(args["candidates"]), test=args["test"], val=args["val"], seed=args["seed"],
                    weights=Path(args["weights"]) if args["weights"] else None, batch_size=args["batch_size"],
                    workers=args["workers"], device=args["device"],
                    cache_dir=Path(args["cache_dir"]) if args["cache_dir"] else None, no_cache=args["no_cache"],
                    as_json=as_json, resume=resume is not None, cv=args.get("cv"), track=args.get("track"),
                    track_uri=args.get("track_uri"))


@command
def compare(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backbone (default per modality)."),
    strategies: str = typer.Option(",".join(DEFAULT_COMPARISON), help="Comma-separated strategies to compare."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of every network strategy (same budget)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of finetune, lp-ft and scratch."),
    train_per_class: Optional[int] = typer.Option(None, help="Few-shot: keep this many training samples per class."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    test: float = typer.Option(0.2, help="Share held out for the test split."), seed: int = typer.Option(0),
    workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None), as_json: bool = typer.Option(False, "--json"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the rows (comparison.json) and report.html here."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file (.safetensors or .pth) for the backbone."),
) -> None:
    """Train several strategies on the same split and budget: how much did transfer buy over scratch?"""
    dataset = open_data(data, text_column, label_column, strict=False)
    report_skipped(dataset)
    train, test_part = dataset.split(test=test, seed=seed)
    if train_per_class:
        train = train.subset(few_shot_indices(train.y, train_per_class, seed))
    finetune = strategy_config("finetune", {"epochs": epochs, "lr": lr})
    with progress_bars(not as_json) as progress:
        rows = compare_strategies(train, test_part, _names(strategies) or [], model=model, finetune=finetune,
                                  num_workers=workers, device=device, cache_dir=cache_dir, seed=seed, progress=progress,
                                  weights=weights)
    if out_dir is not None:
        from .comparison import write_comparison
        from .report import write_report

        write_comparison(out_dir, rows, train, test_part, dataset.summary())
        write_report(out_dir)
    keys = ("strategy", "accuracy", "f1", "precision", "recall", "trainable_params", "trainable_fraction",
            "checkpoint_bytes", "peak_memory_bytes", "train_seconds")
    if as_json:
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=1))
        return
    table = Table(title=f"{dataset.source}: {len(train)} train / {len(test_part)} test samples, {rows[0]['model']}",
                  title_justify="left")
    for column in ("strategy", "accuracy", "macro F1", "precision", "recall", "trainable params", "trainable %",
                   "checkpoint MB", "peak mem MB", "train s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        table.add_row(row["strategy"], f"{row['accuracy']:.4f}", f"{row['f1']:.4f}", f"{row['precision']:.4f}",
                      f"{row['recall']:.4f}", f"{row['trainable_params']:,}", f"{100 * row['trainable_fraction']:.2f}",
                      f"{row['checkpoint_bytes'] / 1e6:.2f}", f"{row['peak_memory_bytes'] / 1e6:.0f}",
                      f"{row['train_seconds']:.1f}")
    out.print(table)
    out.print(f"peak mem: {rows[0]['memory_method']}; checkpoint: bytes of model.safetensors as `fit` saves it; "
              "lora and bitfit use the network budget (--epochs) at their own default lr.", highlight=False)


def few_shot_indices(y, per_class: int, seed: int) -> list[int]:
    """``per_class`` random samples of each class (all of a class that has fewer)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return sorted(int(i) for i in np.concatenate(keep))


@command
def rank(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    models: Optional[str] = typer.Option(None, help="Comma-separated candidates (default: every offline "
                                         "backbone of the data's modality)."),
    layers: bool = typer.Option(False, "--layers", help="Also rank earlier layer groups of each backbone."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    batch_size: int = typer.Option(64), workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None), as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rank pre-trained backbones for DATA by transferability scores, without fine-tuning."""
    from .ranking import default_candidates, rank as rank_candidates
    from .transfer import resolve_device

    dataset = open_data(data, text_column, label_column, strict=False)
    report_skipped(dataset)
    candidates = _names(models) or default_candidates(dataset.modality)
    with progress_bars(not as_json) as progress:
        rows = [row.to_dict() for row in rank_candidates(
            candidates, dataset, layers=layers, cache_dir=cache_dir, batch_size=batch_size,
            num_workers=workers if workers is not None else 1, device=resolve_device(device), progress=progress)]
    if as_json:
        keys = ("model", "layer", "logme", "leep", "nce", "hscore", "knn_accuracy", "seconds")
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=1))
        return
    out.print(ranking_table(rows, f"transferability to {dataset.source} ({len(dataset)} samples), best first"))
    out.print("LogME: evidence of a Bayesian linear model on the features (higher is better); "
              "`headstart fit DATA --model auto` fits the winner.", highlight=False)


@command
def evaluate(
    run: Path = typer.Argument(..., help="A run directory written by `headstart fit`."),
    data: Path = typer.Argument(..., help="Labelled data: an image folder or a text table."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    device: str = typer.Option("auto"), cache_dir: Optional[Path] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a saved run on labelled data: accuracy, precision, recall, F1, confusion matrix."""
    dataset = open_data(data, text_column, label_column, strict=False)
    report_skipped(dataset)
    with progress_bars(not as_json) as progress:
        model = load(run, device=device, cache_dir=cache_dir, progress=progress)
        metrics = model.evaluate(dataset)
    if as_json:
        print(json.dumps(metrics, indent=1))
    else:
        show_metrics(metrics, f"{dataset.source} — run {run}")


@command
def predict(
    run: Path = typer.Argument(..., help="A run directory written by `headstart fit`."),
    inputs: list[Path] = typer.Argument(..., help="Image files or folders, or one text table."),
    text_column: str = typer.Option("text"), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None), top: int = typer.Option(3, help="Classes shown per input."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON."),
) -> None:
    """Predict the class of each input, with class probabilities."""
    model = load(run, device=device, cache_dir=cache_dir)
    data = open_inputs(inputs, model.contract_.modality, text_column)
    report_skipped(data)
    probabilities = model.predict_proba(data)
    rows = [{"input": location, "label": model.classes_[int(p.argmax())],
             "probabilities": {c: float(v) for c, v in zip(model.classes_, p)}}
            for location, p in zip(data.locations, probabilities)]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = Table(title=f"predictions of {run}", title_justify="left")
    for column in ("input", "label", f"top {top}"):
        table.add_column(column, overflow="fold")
    for row in rows:
        best = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        table.add_row(row["input"], row["label"], ", ".join(f"{c} {v:.2f}" for c, v in best))
    out.print(table)


@command
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where to save the demo run."),
    data_dir: Path = typer.Option(Path("runs/demo-digits"), help="Where to write the demo images."),
    per_class: int = typer.Option(60, help="Digit images per class."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default ~/.cache/headstart)."),
) -> None:
    """Run end to end offline: digits as an image folder -> EfficientNet-Lite0 linear probe -> metrics."""
    from .demo import write_digits_folder

    folder = write_digits_folder(data_dir, per_class=per_class)
    err.print(f"demo: {10 * per_class} handwritten digits from scikit-learn, written as PNG class folders "
              f"under {folder}; backbone efficientnet_lite0 (ImageNet weights from a pip package, offline)",
              highlight=False)
    _fit_and_report(ImageFolder(folder), "efficientnet_lite0", out_dir, strategy="linear-probe",
                    config=LinearProbeConfig(), test=0.2, val=0.0, seed=0, weights=None, batch_size=64,
                    workers=None, device="auto", cache_dir=cache_dir, no_cache=False, as_json=False)
    out.print(f"next: `headstart predict {out_dir} {folder}/3`, `headstart evaluate {out_dir} {folder}`, "
              "or your own data: `headstart fit FOLDER_OR_TABLE --out runs/mine`", highlight=False)


if __name__ == "__main__":
    main()

from . import cli_adapt, cli_peft, cli_tune  # noqa: E402,F401 - registers commands
