"""``headstart export``: a run as a deployable ONNX bundle; ``headstart export-merged``: fold a
lora or bitfit run into a plain run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import options as o
from .app import command, err, out

BUNDLE = "Bundle"


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
    from ..ensemble import load
    from ..integrity import read_json
    from ..runs import check_output_dir
    from ..workflows import TRAINED_ON, with_report

    check_output_dir(out_dir, [run])  # never over (or inside) the run it merges
    model = load(run, device=device).merge()
    # the same model: its test predictions (export checks parity on them) and what it trained on carry over
    records = {name: read_json(run / f"{name}.json") for name in ("predictions", TRAINED_ON)
               if (run / f"{name}.json").is_file()}
    model.save(out_dir, metrics=model.metrics_, extra=records, finish=with_report(out_dir))
    size = (out_dir / "model.safetensors").stat().st_size
    out.print(f"merged {model.run_config()['strategy']} run {run} into [bold]{out_dir}[/] ({size / 1e6:.1f} MB of weights)",
              highlight=False)


@command(panel="Deploy")
def export(
    run: Path = typer.Argument(..., help="A run directory written by `headstart fit` (any strategy)."),
    out_dir: Path = typer.Option(..., "--out", "-o", rich_help_panel=o.OUTPUT,
                                 help="The bundle folder to write (a new folder, or a previous bundle)."),
    fmt: str = typer.Option("onnx", "--format", help="The model format: onnx.", rich_help_panel=BUNDLE),
    quantize: Optional[str] = typer.Option(None, rich_help_panel=BUNDLE, help=(
        "int8: quantize with ONNX Runtime. Until the test split shows --min-agreement, leading layers stay in "
        "float (twice as many each try); refused if none agrees that well.")),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default: the exporter's).", rich_help_panel=BUNDLE),
    min_agreement: float = typer.Option(0.99, rich_help_panel=BUNDLE, help=(
        "Least top-1 agreement of the int8 model with the float one, shown on the run's test split (its lower "
        "bound at one standard error).")),
    samples: int = typer.Option(64, help="Test samples the bundle is checked on against the run.",
                                rich_help_panel=BUNDLE),
    as_json: bool = o.as_json("the figures the manifest records"),
) -> None:
    """Export a run as a bundle ONNX Runtime predicts with, without torch (headstart.runtime).

    The bundle holds model.onnx (inputs to probabilities), contract.json (how inputs are
    prepared), labels.json, tokenizer.json for text, and manifest.json (SHA-256 of every file,
    of the run, and the parity figures). It is written only if it predicts what the run predicts
    on the run's test samples (probabilities within 1e-4, the same top class).
    """
    from ..export import export_bundle

    progress = None if as_json else (lambda stage: err.print(f"[dim]{stage}...[/]", highlight=False))
    result = export_bundle(run, out_dir, fmt=fmt, quantize=quantize, opset=opset, min_agreement=min_agreement,
                           samples=samples, progress=progress)
    if as_json:
        print(json.dumps({"out_dir": str(result.out_dir), "size_bytes": result.size_bytes, "parity": result.parity,
                          "quantization": result.quantization}, indent=1))
        return
    parity = result.parity
    out.print(f"bundle written to [bold]{result.out_dir}[/] ({result.size_bytes / 1e6:.1f} MB): parity on "
              f"{parity['inputs']}, {parity['samples']} checked, max |p - p_torch| = {parity['max_abs_diff']:.1e}",
              highlight=False)
    if result.quantization:
        q = result.quantization
        accuracy = (f"; accuracy int8 {q['int8_accuracy']:.3f} vs float {q['float_accuracy']:.3f}"
                    if q["float_accuracy"] is not None else "")
        out.print(f"int8: top-1 agreement {q['top1_agreement']:.3f} on {q['samples']} samples{accuracy}, measured on "
                  f"{q['measured_on']} (int8 kernels differ between CPUs) ({q['method']})", highlight=False)
