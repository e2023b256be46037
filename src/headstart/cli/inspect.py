"""Commands that look at models, data and runs: models, rank, evaluate, predict, report, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..backbones import list_backbones
from . import options as o
from .app import command, err, out
from .launch import launch
from .output import (backbones_table, describe_split, predictions_table, progress_bars, ranking_table, report_skipped,
                     run_backbones_table, show_fit, show_metrics)
from .output import names as name_list

TTA_HELP = ("Test-time augmentation: average the class probabilities of each image and its mirror image, for a "
            "run fitted without `--tta` (a run fitted with it always applies it).")
RANK_KEYS = ("model", "layer", "logme", "leep", "nce", "hscore", "knn_accuracy", "seconds", "samples")


@command(panel="Inspect")
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.", rich_help_panel=o.OUTPUT),
           runs: Optional[Path] = typer.Option(None, "--runs", rich_help_panel=o.DATA, help=(
               "Also list the runs under this folder, which `--model run:PATH` takes as backbones."))) -> None:
    """List the registered backbones, their weights' availability and input contracts."""
    rows, run_rows = list_backbones(), None
    if runs is not None:
        from ..run_backbones import list_run_backbones  # reads runs back: torch

        run_rows = list_run_backbones(runs)
    if as_json:
        listed = [row.__dict__ for row in rows]
        print(json.dumps(listed if run_rows is None else {"backbones": listed, "runs": [r.__dict__ for r in run_rows]},
                         indent=1))
        return
    out.print(backbones_table(rows))
    out.print("Any image backbone also takes `NAME@PIXELS` to be fed at another input size, e.g. "
              "efficientnet_lite0@128 for 128 px photos.", markup=False)
    if run_rows is not None:
        out.print(run_backbones_table(run_rows, runs))


@command(panel="Inspect")
@o.with_read_options
def rank(
    data: Path = typer.Argument(..., help="An image folder or a text table, with labels."),
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    models: Optional[str] = typer.Option(None, rich_help_panel=o.MODEL, help=(
        "Comma-separated candidates (default: every offline backbone of the data's modality).")),
    layers: bool = typer.Option(False, "--layers", help="Also rank earlier layer groups of each backbone.",
                                rich_help_panel=o.MODEL),
    sample: Optional[str] = typer.Option(None, "--sample", metavar="N|all", rich_help_panel=o.DATA, help=(
        "Rank on a stratified sample of N samples when the data has more, or on `all` of them (default: 1,000, "
        "or 50 per class if that is more: the ranking has settled by then, and embedding is what ranking costs).")),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers("Image-decoding worker processes (1)."),
    device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(), nproc: int = o.nproc(),
    as_json: bool = o.as_json("the rows"), reading: dict = None,
) -> None:
    """Rank pre-trained backbones for DATA by transferability scores, without fine-tuning."""
    if nproc > 1:
        return launch(nproc)
    from ..devices import resolve_device
    from ..errors import ConfigError
    from ..ranking import ALL, AUTO, default_candidates, rank as rank_candidates
    from ..data.opening import open_data

    if sample is not None and sample != ALL and not (sample.isdigit() and int(sample) >= 1):
        raise ConfigError(f"--sample takes a number of samples (>= 1) or '{ALL}'. Got {sample!r} instead.")
    dataset = open_data(data, text_column, label_column, strict=False, reading=o.read_options(reading))
    report_skipped(dataset)
    held_out = [name for name in ("val", "test") if name in dataset.splits]
    if "train" in dataset.splits and held_out:  # choosing a model on held-out parts would leak them into it
        dataset = dataset.splits["train"]
        err.print(f"ranking on the train part of {data} ({len(dataset):,} samples); its {' and '.join(held_out)} "
                  f"part{'s stay' if len(held_out) > 1 else ' stays'} unseen", highlight=False)
    candidates = name_list(models) or default_candidates(dataset.modality)
    with progress_bars(not as_json) as progress:
        rows = [row.to_dict() for row in rank_candidates(
            candidates, dataset, layers=layers, cache_dir=cache_dir, batch_size=batch_size,
            num_workers=workers if workers is not None else 1, device=resolve_device(device), progress=progress,
            sample=AUTO if sample is None else ALL if sample == ALL else int(sample))]
    if as_json:
        print(json.dumps([{k: row[k] for k in RANK_KEYS} for row in rows], indent=1))
        return
    scored = rows[0]["samples"]
    out.print(ranking_table(rows, f"transferability to {dataset.source} ({scored:,} samples), best first"))
    if scored < len(dataset):
        out.print(f"ranked on a stratified sample of {scored:,} of {len(dataset):,} samples; `--sample all` ranks on "
                  "every one (their features are cached: only the rest are embedded).", highlight=False)
    out.print("LogME: evidence of a Bayesian linear model on the features (higher is better); "
              "`headstart fit DATA --model auto` fits the winner.", highlight=False)


@command(panel="Inspect")
@o.with_read_options
def evaluate(
    run: Path = typer.Argument(..., help="A run directory written by `headstart fit`, or a bundle written by "
                                         "`headstart export` (scored with ONNX Runtime, as deployed)."),
    data: Path = typer.Argument(..., help="Labelled data: an image folder, a text table, or for an image run a "
                                          "table of image paths (one class is enough)."),
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(),
    exclude_train: bool = typer.Option(False, "--exclude-train", rich_help_panel=o.DATA, help=(
        "Score only the samples the run did not train on (by content).")),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP, rich_help_panel=o.MODEL),
    as_json: bool = o.as_json("the metrics"), reading: dict = None,
) -> None:
    """Evaluate a saved run or an exported bundle on labelled data: accuracy, precision, recall, F1, confusion
    matrix."""
    from dataclasses import replace

    from ..data.opening import open_data
    from ..workflows import evaluate_run, run_modality

    read = o.read_options(reading)
    if read.modality is None and data.is_file():  # a table given to an image run holds image paths
        read = replace(read, modality=run_modality(run))
    dataset = open_data(data, text_column, label_column, strict=False, reading=read, min_classes=1)
    report_skipped(dataset)
    with progress_bars(not as_json) as progress:
        result = evaluate_run(run, dataset, exclude_train=exclude_train, device=device, cache_dir=cache_dir,
                              progress=progress, tta=tta)
    if result.overlap:
        err.print(f"[yellow]warning:[/] {result.overlap} of the {len(dataset)} samples of {dataset.source} are ones "
                  f"the run trained on; " + (f"they were left out: {len(result.evaluated)} scored." if exclude_train
                                            else "their scores overstate the model: `--exclude-train` leaves them out."),
                  highlight=False)
    if as_json:
        print(json.dumps(result.metrics, indent=1))
    else:
        show_metrics(result.metrics, f"{Path(dataset.source).name or dataset.source} — run {run}")  # the title stays short


@command(panel="Inspect")
@o.with_read_options
def predict(
    run: Path = typer.Argument(..., help="A run directory written by `headstart fit`, or a bundle written by "
                                         "`headstart export` (predicted with ONNX Runtime, as deployed)."),
    inputs: list[str] = typer.Argument(..., help="Image files or folders; for a text model one table, or the texts "
                                                 "themselves (`\"great phone\"`), or - to read one text per line "
                                                 "from standard input."),
    text_column: str = o.text_column(), device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(),
    top: int = typer.Option(3, help="Classes shown per input.", rich_help_panel=o.OUTPUT, min=1),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP + " A bundle applies what it was exported with.",
                             rich_help_panel=o.MODEL),
    as_json: bool = o.as_json("the predictions"), reading: dict = None,
) -> None:
    """Predict the class of each input, with class probabilities."""
    from ..runtime import Bundle, is_bundle
    from ..data.opening import open_inputs, open_texts

    bundled = is_bundle(run)
    if bundled:
        model = Bundle.load(run)
        classes, modality = model.labels, model.modality
        model.check_tta(tta)
    else:
        from ..ensemble import load

        model = load(run, device=device, cache_dir=cache_dir)
        model.tta = model.tta or tta
        classes, modality = model.classes_, model.contract_.modality
    if inputs == ["-"] and modality == "text":
        data = open_texts(sys.stdin.read().splitlines(), "standard input")
    else:
        data = open_inputs(inputs, modality, text_column, o.read_options(reading))
    report_skipped(data)
    probabilities = model.predict_proba(data.items if bundled else data)  # the runtime takes plain inputs
    rows = [{"input": location, "label": classes[int(p.argmax())],
             "probabilities": {c: float(v) for c, v in zip(classes, p)}}
            for location, p in zip(data.locations, probabilities)]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    out.print(predictions_table(rows, f"predictions of {run}", top))


@command(panel="Inspect")
def report(
    run: Path = typer.Argument(..., help="A run (`fit`), comparison (`compare --out`) or search (`tune --out`) folder."),
    title: Optional[str] = typer.Option(None, help="The page's title (default: from the folder's name).",
                                        rich_help_panel=o.OUTPUT),
) -> None:
    """Write RUN/report.html: data, backbone, curves, confusion matrix, per-class scores, mistakes, search."""
    from ..report import write_report

    path = write_report(run, title)
    out.print(f"report written to [bold]{path}[/] ({path.stat().st_size / 1024:.0f} KiB, self-contained)",
              highlight=False)


@command(panel="Start here")
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where to save the demo run.",
                                 rich_help_panel=o.OUTPUT),
    data_dir: Path = typer.Option(Path("runs/demo-digits"), help="Where to write the demo images.",
                                  rich_help_panel=o.DATA),
    per_class: int = typer.Option(60, help="Digit images per class.", rich_help_panel=o.DATA),
    cache_dir: Optional[Path] = o.cache_dir(),
) -> None:
    """Run end to end offline: digits as an image folder -> EfficientNet-Lite0 linear probe -> metrics."""
    from ..demo import write_digits_folder
    from ..workflows import FitRun, RunArgs

    folder = write_digits_folder(data_dir, per_class=per_class)
    err.print(f"demo: {10 * per_class} handwritten digits from scikit-learn, written as PNG class folders "
              f"under {folder}; backbone efficientnet_lite0 (ImageNet weights from a pip package, offline)",
              highlight=False)
    job = FitRun(RunArgs.create(folder, out_dir, model="efficientnet_lite0", cache_dir=cache_dir))
    describe_split(job)
    with progress_bars() as progress:
        result = job.run(progress)
    show_fit(result, job.data.source, as_json=False)
    out.print(f"next: `headstart predict {out_dir} {folder}/3`, `headstart evaluate {out_dir} {folder} "
              "--exclude-train`, or your own data: `headstart fit FOLDER_OR_TABLE --out runs/mine`", highlight=False)
