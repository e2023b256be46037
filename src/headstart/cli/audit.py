"""``headstart audit``: copies, leakage, likely label errors, outliers, image properties and class
balance of a data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import options as o
from .app import command, out
from .output import progress_bars, report_skipped, show_audit

AGAINST = typer.Option(None, "--against", rich_help_panel=o.DATA, help=(
    "Held-out data (a test set) to check DATA against: every sample of DATA with a copy there is leakage. "
    "Without it, leakage is checked between DATA's own train/ val/ test/ folders, where it has them."))
THRESHOLD = typer.Option(None, "--threshold", rich_help_panel=o.MODEL, help=(
    "Cosine similarity of features at which two samples are near-duplicates (default: 0.92, measured: see the "
    "README's audit section)."))
FOLDS = typer.Option(5, "--folds", min=2, rich_help_panel=o.MODEL, help=(
    "Cross-validation folds of the out-of-fold predictions the label check rests on."))
LABEL_MODEL = typer.Option(None, "--label-model", rich_help_panel=o.MODEL, help=(
    "Also fit this strategy (lora, finetune, ...) in each fold and find label issues from the mean of its "
    "out-of-fold probabilities and the features' models: surer findings, for one fit per fold (minilm lora on "
    "775 reviews: about 4 minutes on 2 cores)."))
TOP = typer.Option(5, "--top", min=0, rich_help_panel=o.OUTPUT, help="Findings shown per kind in the table.")
OUT = typer.Option(None, "--out", "-o", rich_help_panel=o.OUTPUT, help=(
    "Folder to write audit.json (every finding) and report.html (thumbnails or texts, surest first) to."))


@command(panel="Inspect")
@o.with_read_options
def audit(
    data: Path = typer.Argument(..., help="An image folder (one sub-folder per class) or a .csv/.tsv/.jsonl table."),
    against: Optional[Path] = AGAINST,
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    model: Optional[str] = o.model("Backbone whose features are compared (default: efficientnet_lite0 for images, "
                                   "minilm for text)."), weights: Optional[Path] = o.weights(),
    threshold: Optional[float] = THRESHOLD, folds: int = FOLDS, label_model: Optional[str] = LABEL_MODEL,
    seed: int = o.seed(0, "Seed of the cross-validation folds."),
    out_dir: Optional[Path] = OUT, top: int = TOP, as_json: bool = o.as_json("every finding"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(),
    device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(), reading: dict = None,
) -> None:
    """Audit DATA before training: duplicates, leakage, likely label errors, outliers, odd or dark images,
    class balance."""
    from ..data_audit import audit as run_audit, write_audit
    from ..data.opening import open_data

    read = o.read_options(reading)
    dataset = open_data(data, text_column, label_column, strict=False, reading=read)
    other = open_data(against, text_column, label_column, strict=False, reading=read) if against else None
    for part in (dataset, other):
        if part is not None and not as_json:
            report_skipped(part)
    with progress_bars(not as_json) as progress:
        result = run_audit(dataset, model=model, against=other, weights=weights, threshold=threshold, folds=folds,
                           seed=seed, cache_dir=cache_dir, batch_size=batch_size,
                           num_workers=workers, device=device, label_model=label_model, progress=progress)
    if out_dir is not None:
        write_audit(result, out_dir)
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
        return
    show_audit(result, top)
    if out_dir is not None:
        out.print(f"audit written to [bold]{out_dir}[/] (audit.json, report.html)", highlight=False)
