"""``headstart pretrain``: continue a backbone's pre-training on your data, keep it as a backbone (``run:PATH``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from ..pretraining import METHOD_CONFIGS
from . import options as o
from .app import command, out, resume_hint
from .launch import launch
from .options import config_options, default_panel, require_applicable, with_config_options
from .output import progress_bars, report_skipped

PRETRAIN_OPTIONS = config_options(METHOD_CONFIGS, panel=lambda owners: default_panel(owners, list(METHOD_CONFIGS),
                                                                                    noun="method"))
METHODS = ", ".join(METHOD_CONFIGS)

DATA_ARG = typer.Argument(None, show_default=False, help=(
    "What to pre-train on: texts (a .txt file of one text per line, or a table's text column), images (a folder, "
    "with or without class folders); labelled data for `--method supervised`."))
METHOD = typer.Option(None, "--method", rich_help_panel=o.STRATEGY, help=(
    f"Pre-training method: {METHODS} (texts: tsdae, simcse, mlm; images: simclr; labelled data: supervised)."))
MODEL = o.model("Backbone to continue (default: efficientnet_lite0 for images, minilm for text); `run:PATH` "
                "continues a run's.")
EVAL = typer.Option(None, "--eval", rich_help_panel=o.DATA, help=(
    "Labelled data (class folders or a table): a linear probe on it before and after pre-training measures the "
    "transfer gain; the run's report shows both."))
EVAL_TEST = typer.Option(0.3, "--eval-test", rich_help_panel=o.DATA, help=(
    "Share of the `--eval` data the probe is measured on (its own train/ and test/ folders, where it has them)."))
OUT = typer.Option(None, "--out", "-o", rich_help_panel=o.OUTPUT, help=(
    "Run directory to write: `--model run:OUT` then uses the pre-trained backbone."))
RESUME = typer.Option(None, help="Continue the interrupted pre-training RUN where it stopped.", rich_help_panel=o.OUTPUT)


@command(panel="Train")
@with_config_options(PRETRAIN_OPTIONS)
@o.with_read_options
def pretrain(
    data: Optional[Path] = DATA_ARG, method: Optional[str] = METHOD,
    model: Optional[str] = MODEL, weights: Optional[Path] = o.weights(),
    eval_data: Optional[Path] = EVAL, eval_test: float = EVAL_TEST,
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    seed: int = o.seed(0, "Seed of the held-out shares and of training."),
    out_dir: Optional[Path] = OUT, resume: Optional[Path] = RESUME, as_json: bool = o.as_json("the run's summary"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(), device: str = o.device(),
    cache_dir: Optional[Path] = o.cache_dir(), nproc: int = o.nproc(), options: dict = None, reading: dict = None,
) -> None:
    """Continue a backbone's pre-training on DATA (tsdae, simcse, mlm, simclr) or fine-tune it on labelled DATA
    (supervised), and save it as a run that `--model run:RUN` uses as a backbone."""
    from ..pretraining import PretrainArgs, Pretraining

    if nproc > 1:
        return launch(nproc, lambda: resume_hint("pretrain", resume or out_dir, nproc))
    if resume is not None:
        job = Pretraining.resume(resume)
    else:
        if data is None or out_dir is None or method is None:
            raise ConfigError("Give DATA, `--method` and `--out RUN` (or `--resume RUN` to continue an interrupted "
                              "pre-training).")
        if method not in METHOD_CONFIGS:
            raise ConfigError(f"Unknown pre-training method '{method}'. Choose one of: {METHODS}.")
        given = require_applicable(options, METHOD_CONFIGS[method], PRETRAIN_OPTIONS, f"the {method} method")
        job = Pretraining(PretrainArgs.create(
            data, out_dir, method, model=model, options=given, seed=seed, weights=weights, eval_data=eval_data,
            eval_test=eval_test, text_column=text_column, label_column=label_column, batch_size=batch_size, workers=workers,
            device=device, cache_dir=cache_dir, reading=o.read_options(reading).to_dict()))
    for part in (job.data, job.eval_data):
        if part is not None:
            report_skipped(part)
    with progress_bars(not as_json) as progress:
        result = job.run(progress)
    if result is not None:  # None on ranks other than 0 of a distributed pre-training
        _show(result, as_json)



def _show(result, as_json: bool) -> None:
    document, curve = result.document, result.document["curve"]
    if as_json:
        print(json.dumps({"backbone": result.backbone_name, **document}, indent=1))
        return
    cost = document["cost"]
    per_1000 = cost["seconds_per_1000_samples"]
    out.print(f"{result.method} on {result.model}: {len(curve)} epoch(s), {cost['samples_seen']:,} samples seen in "
              f"{cost['seconds']:.0f} s" + (f" ({per_1000:.1f} s per 1,000 samples)" if per_1000 else ""), highlight=False)
    if curve:
        line = f"loss {curve[0]['train_loss']:.4f} -> {curve[-1]['train_loss']:.4f}"
        if "val_loss" in curve[0]:
            line += f", validation {curve[0]['val_loss']:.4f} -> {min(row['val_loss'] for row in curve):.4f} (best)"
        out.print(line, highlight=False)
    probe = document["probe"]
    if probe:
        before, after = probe["before"], probe["after"]
        out.print(f"linear probe on {probe['data']} ({probe['train']} train / {probe['test']} test): accuracy "
                  f"{before['accuracy']:.4f} -> {after['accuracy']:.4f} ({probe['gain_points']:+.1f} points), macro F1 "
                  f"{before['f1']:.4f} -> {after['f1']:.4f}", highlight=False)
    out.print(f"run saved to [bold]{result.out_dir}[/]; use it with `--model {result.backbone_name}`", highlight=False)
