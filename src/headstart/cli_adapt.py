"""The ``adapt`` and ``shift`` commands: domain adaptation to unlabelled target data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .adaptation import ADAPT_METHODS, STRATEGIES_OF, make_adapt_config, measure_shift
from .cli import command, err, open_data, open_inputs, out, progress_bars, report_skipped, strategy_config
from .comparison import compare_adaptation
from .errors import ConfigError
from .report import write_report
from .transfer import DEFAULT_BACKBONES, resolve_device


def _unlabelled(path: Path, text_column: str, modality: str | None = None):
    """Samples of a domain without their labels: any image folder, or the text column of a table."""
    return open_inputs([path], modality or ("image" if path.is_dir() else "text"), text_column)


@command
def adapt(
    source: Path = typer.Argument(..., help="Labelled source data: an image folder (class folders) or a text table."),
    target: Path = typer.Argument(..., help="Unlabelled target data: a folder of images, or a table with a text column."),
    method: str = typer.Option(..., help=f"Adaptation method: {', '.join(ADAPT_METHODS)}."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory to write (the adapted model)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backbone (default: efficientnet_lite0 / minilm)."),
    target_eval: Optional[Path] = typer.Option(None, help="Labelled target data, used only to measure both models."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file (.safetensors or .pth) for the backbone."),
    epochs: Optional[int] = typer.Option(None, help="dann, mmd: fine-tuning epochs (default 5)."),
    lr: Optional[float] = typer.Option(None, help="dann, mmd: peak learning rate of the backbone's top group."),
    batch: Optional[int] = typer.Option(None, "--train-batch", help="dann, mmd: source (and target) batch size."),
    weight: Optional[float] = typer.Option(None, help="dann, mmd: weight of the adaptation loss (default 1)."),
    test: float = typer.Option(0.2, help="Share of the source held out as its test split."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"), seed: int = typer.Option(0),
    batch_size: int = typer.Option(64), workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="Print {method, source_only, adapted} metrics as JSON."),
) -> None:
    """Adapt a model trained on labelled SOURCE data to unlabelled TARGET data; report it beside source-only."""
    adapt_config = make_adapt_config({"method": method, **({"weight": weight} if weight is not None else {})})
    strategy = STRATEGIES_OF[adapt_config.method][0]
    options = {"epochs": epochs, "lr": lr, "batch_size": batch}
    given = [flag for flag, value in zip(("--epochs", "--lr", "--train-batch"), options.values()) if value is not None]
    if strategy == "linear-probe" and given:
        raise ConfigError(f"{', '.join(given)} does not apply to {method}: it fits a linear probe on frozen features.")
    finetune = strategy_config("finetune", options)
    source_data = open_data(source, text_column, label_column, strict=False)
    target_data = _unlabelled(target, text_column, source_data.modality)
    evaluation = open_data(target_eval, text_column, label_column, strict=False) if target_eval else None
    for data in (source_data, target_data, evaluation):
        if data is not None:
            report_skipped(data)
    train, source_test = source_data.split(test=test, seed=seed)
    judged_on = evaluation or source_test
    with progress_bars(not as_json) as progress:
        baseline, adapted = compare_adaptation(
            train, target_data, [method], evaluate_on=judged_on, model=model, finetune=finetune,
            adapt_options={method: {"weight": weight}} if weight is not None else None, batch_size=batch_size,
            weights=weights, num_workers=workers, device=device, cache_dir=cache_dir, seed=seed, progress=progress)
        fitted = adapted["transfer"]
        source_metrics = fitted.evaluate(source_test) if evaluation else adapted["metrics"]
    fitted.save(out_dir, metrics={"test": source_metrics, "target": adapted["metrics"] if evaluation else None,
                                  "source_only": baseline["metrics"], "data": source_data.summary(),
                                  "target_data": target_data.summary()})
    write_report(out_dir)
    if as_json:
        print(json.dumps({"method": method, "source_only": baseline["metrics"], "adapted": adapted["metrics"]}, indent=1))
        return
    where = f"labelled target {evaluation.source}" if evaluation else f"the source's test split ({source_data.source})"
    table = Table(title=f"{len(train)} labelled source / {len(target_data)} unlabelled target samples, "
                        f"{fitted.model_name_}; measured on {where}", title_justify="left")
    for column in ("model", "strategy", "accuracy", "balanced acc", "macro F1", "train s"):
        table.add_column(column, justify="left" if column in ("model", "strategy") else "right")
    for row in (baseline, adapted):
        m = row["metrics"]
        table.add_row(row["method"], row["strategy"], f"{m['accuracy']:.4f}", f"{m['balanced_accuracy']:.4f}",
                      f"{m['f1']:.4f}", f"{row['train_seconds']:.1f}")
    out.print(table)
    gain = 100 * (adapted["accuracy"] - baseline["accuracy"])
    out.print(f"{method}: {gain:+.1f} accuracy points over source-only; adapted run saved to [bold]{out_dir}[/]"
              + ("" if evaluation else " (give `--target-eval` labelled target data to measure the gain where it matters)"),
              highlight=False)


@command
def shift(
    source: Path = typer.Argument(..., help="Source domain: an image folder or a text table (labels ignored)."),
    target: Path = typer.Argument(..., help="Target domain: an image folder or a text table (labels ignored)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backbone whose features are compared."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file for the backbone."),
    text_column: str = typer.Option("text", help="Text column of the tables."),
    seed: int = typer.Option(0, help="Seed of the subsampling and cross-validation folds."),
    batch_size: int = typer.Option(64), workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"),
    cache_dir: Optional[Path] = typer.Option(None), as_json: bool = typer.Option(False, "--json"),
) -> None:
    """How separable SOURCE and TARGET are in a backbone's features: is adaptation needed?"""
    source_data = _unlabelled(source, text_column)
    target_data = _unlabelled(target, text_column, source_data.modality)
    name = model or DEFAULT_BACKBONES[source_data.modality]
    with progress_bars(not as_json) as progress:
        result = measure_shift(name, source_data, target_data, weights=weights, cache_dir=cache_dir,
                               batch_size=batch_size, num_workers=workers if workers is not None else 1,
                               device=resolve_device(device), seed=seed, progress=progress)
    if as_json:
        print(json.dumps({"model": name, **result.to_dict()}, indent=1))
        return
    table = Table(title=f"{source_data.source} vs {target_data.source} in {name} features", title_justify="left")
    for column in ("proxy A-distance", "domain classifier acc", "MMD²", "source", "target"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.proxy_a_distance:.3f}", f"{result.domain_accuracy:.3f}", f"{result.mmd:.4f}",
                  str(result.source_samples), str(result.target_samples))
    out.print(table)
    out.print(f"proxy A-distance: 0 = one domain, 2 = fully separable ({result.folds}-fold cross-validated logistic "
              f"regression); {result.verdict()}.", highlight=False)
