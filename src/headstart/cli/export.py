"""``headstart export-merged``: fold a lora or bitfit run into a plain run for deployment."""

from __future__ import annotations

from pathlib import Path

import typer

from ..transfer import load
from . import options as o
from .app import command, out


@command(panel="Deploy")
def export_merged(
    run: Path = typer.Argument(..., help="A lora or bitfit run directory written by `headstart fit`."),
    out_dir: Path = typer.Argument(..., help="Where to write the merged run (every weight, no adapter)."),
    device: str = o.device("cpu"),
) -> None:
    """Merge a run's adapter into its backbone and write a plain full-weights run.

    The merged run predicts the same (to float tolerance), needs no peft at prediction
    time and no separate base weights; `evaluate`, `predict` and `hs.load` read it as usual.
    """
    model = load(run, device=device).merge()
    model.save(out_dir, metrics=model.metrics_)
    size = (out_dir / "model.safetensors").stat().st_size
    out.print(f"merged {model.strategy} run {run} into [bold]{out_dir}[/] ({size / 1e6:.1f} MB of weights)",
              highlight=False)
