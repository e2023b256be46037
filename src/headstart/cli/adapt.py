"""``headstart adapt`` and ``headstart shift``: domain adaptation to unlabelled target data."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError
from . import options as o
from .app import command, out
from .launch import launch
from .options import (adaptation_owners, adapted_strategy, config_options, default_panel, flags_of, given,
                      strategy_owners, with_config_options)
from .output import adaptation_table, progress_bars, report_skipped, shift_table

METHODS = list(adaptation_owners())
# each method adapts its default strategy (the first it names): adapt takes that strategy's
# options and the method's own, grouped in --help by the methods they apply to
_STRATEGIES = list(dict.fromkeys(adapted_strategy(m) for m in METHODS))
_METHODS_OF = {**{s: [m for m in METHODS if adapted_strategy(m) == s] for s in _STRATEGIES},
               **{m: [m] for m in METHODS}}


def _panel(owners: tuple[str, ...]) -> str:
    methods = [m for m in METHODS if any(m in _METHODS_OF[owner] for owner in owners)]
    return default_panel(methods, METHODS, noun="method")


ADAPT_OPTIONS = config_options({**strategy_owners(_STRATEGIES), **adaptation_owners()}, panel=_panel)


def split_options(method: str, values: dict) -> tuple[Any, Optional[dict]]:
    """(the config of the strategy the method adapts, or None for its defaults; the method's options)
    from those given; a flag that applies to neither the method nor that strategy is an error naming it."""
    from ..adaptation import get_adaptation
    from ..strategies import get_strategy

    values = given(values)
    strategy = get_adaptation(method).strategies[0]
    own = {f.name for f in fields(get_adaptation(method).config_class)}
    strategy_fields = {f.name for f in fields(get_strategy(strategy).config_class)}
    foreign = [name for name in values if name not in own | strategy_fields]
    if foreign:
        raise ConfigError(f"{flags_of(foreign, values, ADAPT_OPTIONS)} {'does' if len(foreign) == 1 else 'do'} not "
                          f"apply to {method}, which adapts the {strategy} strategy.")
    method_options = {k: v for k, v in values.items() if k in own}
    strategy_options = {k: v for k, v in values.items() if k not in own}
    config = get_strategy(strategy).make_config(strategy_options) if strategy_options else None
    return config, method_options or None


@command(panel="Train")
@with_config_options(ADAPT_OPTIONS)
@o.with_read_options
def adapt(
    source: Path = typer.Argument(..., help="Labelled source data: an image folder (class folders) or a text table."),
    target: Path = typer.Argument(..., help="Unlabelled target data: a folder of images, or a table with a text column."),
    target_eval: Optional[Path] = typer.Option(None, help="Labelled target data, used only to measure both models.",
                                               rich_help_panel=o.DATA),
    text_column: str = o.text_column(), label_column: str = o.label_column(),
    test: float = o.test_share("Share of the source held out as its test split."),
    model: Optional[str] = o.model(), weights: Optional[Path] = o.weights(),
    method: str = typer.Option(..., help=f"Adaptation method: {', '.join(METHODS)}.", rich_help_panel=o.STRATEGY),
    seed: int = o.seed(0),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory to write (the adapted model).",
                                 rich_help_panel=o.OUTPUT),
    as_json: bool = o.as_json("{method, source_only, adapted} metrics"),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers(),
    device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(), nproc: int = o.nproc(),
    options: dict = None, reading: dict = None,
) -> None:
    """Adapt a model trained on labelled SOURCE data to unlabelled TARGET data; report it beside source-only."""
    if nproc > 1:  # before the imports below: the launcher itself needs none of them
        return launch(nproc)
    from ..data.opening import open_data, open_unlabelled
    from ..workflows import adapt_run

    config, method_options = split_options(method, options)
    read = o.read_options(reading)
    source_data = open_data(source, text_column, label_column, strict=False, reading=read)
    target_data = open_unlabelled(target, text_column, source_data.modality, read)
    evaluation = open_data(target_eval, text_column, label_column, strict=False, reading=read) if target_eval else None
    for data in (source_data, target_data, evaluation):
        if data is not None:
            report_skipped(data)
    with progress_bars(not as_json) as progress:
        result = adapt_run(source_data, target_data, out_dir, method, evaluate_on=evaluation, test=test, seed=seed,
                           model=model, config=config, adapt_options=method_options, batch_size=batch_size,
                           weights=weights, num_workers=workers, device=device, cache_dir=cache_dir,
                           progress=progress)
    if result is None:  # a rank other than 0 of a distributed job
        return
    if as_json:
        print(json.dumps({"method": method, "source_only": result.baseline["metrics"],
                          "adapted": result.adapted["metrics"]}, indent=1))
        return
    where = f"labelled target {evaluation.source}" if evaluation else f"the source's test split ({source_data.source})"
    out.print(adaptation_table([result.baseline, result.adapted], (
        f"{len(result.train)} labelled source / {len(target_data)} unlabelled target samples, "
        f"{result.transfer.model_name_}; measured on {where}")))
    gain = 100 * (result.adapted["accuracy"] - result.baseline["accuracy"])
    out.print(f"{method}: {gain:+.1f} accuracy points over source-only; adapted run saved to [bold]{out_dir}[/]"
              + ("" if evaluation else " (give `--target-eval` labelled target data to measure the gain where it matters)"),
              highlight=False)


@command(panel="Inspect")
@o.with_read_options
def shift(
    source: Path = typer.Argument(..., help="Source domain: an image folder or a text table (labels ignored)."),
    target: Path = typer.Argument(..., help="Target domain: an image folder or a text table (labels ignored)."),
    text_column: str = o.text_column("Text column of the tables."),
    model: Optional[str] = o.model("Backbone whose features are compared."), weights: Optional[Path] = o.weights(),
    seed: int = o.seed(0, "Seed of the subsampling and cross-validation folds."),
    batch_size: int = o.batch_size(), workers: Optional[int] = o.workers("Image-decoding worker processes (1)."),
    device: str = o.device(), cache_dir: Optional[Path] = o.cache_dir(), nproc: int = o.nproc(),
    as_json: bool = o.as_json("the scores"), reading: dict = None,
) -> None:
    """How separable SOURCE and TARGET are in a backbone's features: is adaptation needed?"""
    if nproc > 1:  # before the imports below: the launcher itself needs none of them
        return launch(nproc)
    from ..adaptation import measure_shift
    from ..backbones import default_backbone
    from ..devices import resolve_device
    from ..data.opening import open_unlabelled

    read = o.read_options(reading)
    source_data = open_unlabelled(source, text_column, reading=read)
    target_data = open_unlabelled(target, text_column, source_data.modality, read)
    name = model or default_backbone(source_data.modality)
    with progress_bars(not as_json) as progress:
        result = measure_shift(name, source_data, target_data, weights=weights, cache_dir=cache_dir,
                               batch_size=batch_size, num_workers=workers if workers is not None else 1,
                               device=resolve_device(device), seed=seed, progress=progress)
    if as_json:
        print(json.dumps({"model": name, **result.to_dict()}, indent=1))
        return
    out.print(shift_table(result, f"{source_data.source} vs {target_data.source} in {name} features"))
    out.print(f"proxy A-distance: 0 = one domain, 2 = fully separable ({result.folds}-fold cross-validated logistic "
              f"regression); {result.verdict()}.", highlight=False)
