"""``headstart export``: a run as a deployable bundle, written only once it predicts what the run does.

The bundle is built in a hidden sibling folder: the ONNX graph, the input contract, the labels
(and the tokenizer for text). The run's own test samples then go through the run (torch) and
through the bundle (:mod:`headstart.runtime`, exactly as a deployment runs it, preprocessing
included); only when the probabilities agree is ``manifest.json`` written and the folder renamed
into place. With ``quantize="int8"`` the int8 model replaces the float one only if its top-1
agreement with the float model reaches ``min_agreement``: where it does not, the leading layers are
left in float, twice as many each try, until it does (or it is refused).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..contract import InputContract
from ..data import DEFAULT_MAX_PIXELS, LabelledData
from ..devices import cpu_description
from ..errors import ConfigError, DataError
from ..integrity import MANIFEST, sha256_of, write_manifest
from ..runs import staged_folder
from ..runtime import (
    BUNDLE_KIND,
    CONTRACT_FILE,
    LABELS_FILE,
    MODEL_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
    Bundle,
    is_bundle,
)
from ..ensemble import Ensemble, load
from ..transfer import Transfer
from ..workflows import TRAINED_ON
from .graph import check_opset, export_onnx, input_names
from .graph_cache import graph_folder
from .quantize import Agreement, agreement, float_predictions, quantize_int8
from .samples import (
    Samples,
    calibration_images,
    calibration_texts,
    generated_images,
    generated_texts,
    test_samples,
)

__all__ = ["ExportResult", "export_bundle", "check_bundle_dir", "check_parity", "bundle_contract", "FORMATS",
           "QUANTIZATIONS", "TOLERANCE"]

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
TOLERANCE = 1e-4  # largest difference of a probability between the run and the float bundle
_EVALUATED = 1000  # test samples int8 agreement is measured on, at most
_CALIBRATED = 64  # training samples int8 calibrates on (images: ranges; texts: smoothing)
Progress = Callable[[str], None]
Model = Transfer | Ensemble  # what a run loads as


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote: where, its size, and the figures its manifest records."""

    out_dir: Path
    size_bytes: int
    parity: dict
    quantization: dict | None


def check_bundle_dir(path: str | Path, run: str | Path) -> None:
    """Refuse, before any work, an output that would destroy something: the current folder or one
    above it, the run or a folder inside it, a file, or a folder that is neither empty nor a bundle."""
    path = Path(path)
    target, here, source = path.resolve(), Path.cwd().resolve(), Path(run).resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"`--out {path}` is the current folder or one above it; give a new folder for the bundle.")
    if target == source or source in target.parents or target in source.parents:
        raise ConfigError(f"`--out {path}` would overwrite the run {run} or write inside it; give a folder outside it.")
    if path.exists() and not (path.is_dir() and (is_bundle(path) or not any(path.iterdir()))):
        what = "a file" if not path.is_dir() else "a folder that is no bundle"
        raise ConfigError(f"`--out {path}` is {what}; headstart replaces only a previous bundle. Choose a new "
                          "folder, or move that one away.")


def _check_options(fmt: str, quantize: str | None, opset: int | None, min_agreement: float, samples: int) -> None:
    check_opset(opset)
    if fmt not in FORMATS:
        raise ConfigError(f"The export format must be one of {', '.join(FORMATS)}. Got {fmt!r} instead.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Got {quantize!r} instead.")
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement must be between 0 and 1. Got {min_agreement} instead.")
    if samples < 1:
        raise ConfigError(f"The number of parity samples must be at least 1. Got {samples} instead.")


def bundle_contract(c: InputContract, backbone: str, names: list[str]) -> dict:
    """``contract.json``: how a deployment prepares inputs, as the run's backbone was fed in training."""
    document = {"format": 1, "modality": c.modality, "backbone": backbone, "inputs": names, "output": OUTPUT_NAME}
    if c.modality == "image":
        document["image"] = {"size": c.input_size, "crop_pct": c.crop_pct, "interpolation": c.interpolation or "bilinear",
                             "mean": list(c.mean), "std": list(c.std), "max_pixels": DEFAULT_MAX_PIXELS,
                             "layout": "NCHW float32, RGB scaled to [0, 1] then (x - mean) / std"}
    else:
        document["text"] = {"tokenizer": TOKENIZER_FILE, "max_length": c.max_length or 512, "padding": "longest"}
    return document


def _write_tokenizer(tokenizer, path: Path, max_length: int) -> None:
    """The fast tokenizer's ``tokenizer.json``, set to truncate and pad as training's collate does."""
    from tokenizers import Tokenizer

    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError("Only text backbones with a Hugging Face fast tokenizer (a tokenizer.json) can be exported.")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(max_length)
    backend.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                           pad_type_id=getattr(tokenizer, "pad_token_type_id", 0), pad_token=tokenizer.pad_token)
    backend.save(str(path))


def _write_files(model: Model, folder: Path, opset: int | None) -> dict:
    """The bundle's files but the manifest; returns what the manifest records of the graph."""
    backbone = model.backbone_
    names = input_names(backbone)
    graph = export_onnx(model.net_, backbone, folder / MODEL_FILE, opset, tta=model.tta)  # the averaging in the graph
    contract = bundle_contract(model.contract_, model.model_name_, names)
    (folder / CONTRACT_FILE).write_text(json.dumps(contract, indent=1))
    (folder / LABELS_FILE).write_text(json.dumps(model.classes_, indent=1))
    if backbone.contract.modality == "text":
        _write_tokenizer(backbone.tokenizer, folder / TOKENIZER_FILE, contract["text"]["max_length"])
    return graph


def _parity_samples(run: Path, model: Model, scratch: Path, limit: int) -> Samples:
    samples = test_samples(run, model.contract_.modality)
    if samples is not None:
        return samples.subset(limit)
    if model.contract_.modality == "image":
        return generated_images(scratch / "generated", min(limit, 16))
    return generated_texts(model.backbone_.tokenizer, limit)


def check_parity(model: Model, bundle: Bundle, samples: Samples, tolerance: float = TOLERANCE) -> dict:
    """Probabilities of the run (torch) and of the bundle (ONNX Runtime) on the same inputs; a
    difference over ``tolerance`` or any other top class is a DataError."""
    expected = model.predict_proba(LabelledData(model.contract_.modality, samples.items))
    got = bundle.predict_proba(samples.items)
    max_abs = float(np.abs(expected - got).max())
    differ = int((expected.argmax(1) != got.argmax(1)).sum())
    if max_abs > tolerance or differ:
        raise DataError(f"The exported model does not predict what the run predicts on {samples.origin}: "
                        f"probabilities differ by up to {max_abs:.2e} (tolerance {tolerance:.0e}) and the top class "
                        f"differs on {differ} of {len(samples.items)}; nothing was written.")
    return {"inputs": samples.origin, "samples": len(samples.items), "max_abs_diff": max_abs, "tolerance": tolerance,
            "top1_disagreements": differ}


def _quantized(model: Model, bundle: Bundle, run: Path, parity: Samples, min_agreement: float,
               scratch: Path) -> dict:
    """Quantize the bundle's model to int8 in ``scratch``, measured against the float model on the
    run's test split, with more of its leading layers left in float until those samples show
    ``min_agreement`` (they choose how many, and their figures are reported); returns the figures, or
    raises when the last try agrees on less."""
    evaluated = (test_samples(run, bundle.modality) or parity).subset(_EVALUATED)
    source = (model.metrics_ or {}).get("data", {}).get("source")
    pick = calibration_images if bundle.modality == "image" else calibration_texts
    calibration = pick(source, evaluated.items, _CALIBRATED)
    calibrated_on = f"{len(calibration)} training {bundle.modality}s of {source}"
    if not calibration:  # the run's data is gone: its test samples are all there is
        calibration = evaluated.subset(_CALIBRATED).items
        calibrated_on = (f"{len(calibration)} of the evaluated {bundle.modality}s (the run's training "
                         f"{bundle.modality}s were not found)")
    target, expected, measured = scratch / "model.int8.onnx", float_predictions(bundle, evaluated), []

    def measure(path: Path) -> Agreement:
        measured.append(agreement(bundle, path, evaluated, expected))
        return measured[-1]

    quantized = quantize_int8(bundle, bundle.folder / MODEL_FILE, target, calibration, measure=measure,
                              min_agreement=min_agreement)
    figures = measured[-1]
    report = {**quantized.to_dict(), "calibration": calibrated_on, "evaluated_on": evaluated.origin,
              "min_agreement": min_agreement, **figures.to_dict(), "measured_on": cpu_description()}
    if figures.agreement < min_agreement:
        raise DataError(f"The int8 model agrees with the float model on {figures.agreement:.1%} of top classes "
                        f"({figures.samples} samples of {evaluated.origin}), below --min-agreement {min_agreement}, "
                        f"even with its first {quantized.float_layers} of {quantized.layers} layers left in float; "
                        "nothing was written. Export without --quantize, or lower --min-agreement.")
    shutil.move(target, bundle.folder / MODEL_FILE)  # scratch may be on another file system
    return report


def _run_digest(run: Path) -> dict:
    """What identifies the run a bundle came from: the SHA-256 of its manifest (or, for a run
    written before manifests, of its weights)."""
    if (run / MANIFEST).is_file():
        return {"manifest_sha256": sha256_of(run / MANIFEST)}
    return {"weights_sha256": sha256_of(run / "model.safetensors")}


def _build(model: Model, run: Path, temp: Path, settings: dict, progress: Progress) -> tuple[dict, dict | None]:
    """Fill ``temp`` with a checked bundle; returns the parity and quantization figures."""
    scratch = Path(tempfile.mkdtemp(prefix="headstart-export-"))
    try:
        progress("exporting the network to ONNX")
        graph = _write_files(model, temp, settings["opset"])
        trained_on = run / f"{TRAINED_ON}.json"  # what the run trained on: evaluate tells those samples apart
        if trained_on.is_file():
            shutil.copy2(trained_on, temp / trained_on.name)
        if graph["reused"]:
            progress(f"reusing the graph of the same network, exported before (kept in {graph_folder()})")
        bundle = Bundle.load(temp, verify=False)
        progress("checking the bundle against the run")
        samples = _parity_samples(run, model, scratch, settings["samples"])
        parity = check_parity(model, bundle, samples)
        quantization = None
        if settings["quantize"]:
            progress("quantizing to int8 and measuring agreement")
            quantization = _quantized(model, bundle, run, samples, settings["min_agreement"], scratch)
        source = {"path": str(run.resolve()), **_run_digest(run), "backbone": model.model_name_,
                  "strategy": model.run_config()["strategy"]}
        write_manifest(temp, extra={"kind": BUNDLE_KIND, "headstart_version": __version__, "run": source,
                                    "model": graph, "parity": parity, "quantization": quantization})
        return parity, quantization
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export_bundle(run: str | Path, out_dir: str | Path, *, fmt: str = "onnx", quantize: str | None = None,
                  opset: int | None = None, min_agreement: float = 0.99, samples: int = 64,
                  progress: Progress | None = None) -> ExportResult:
    """Export a run as a deployable bundle in ``out_dir`` (see the module docstring); lora and
    bitfit runs are merged first. ``samples``: how many test samples parity is checked on."""
    run, out_dir = Path(run), Path(out_dir)
    _check_options(fmt, quantize, opset, min_agreement, samples)
    check_bundle_dir(out_dir, run)
    model = load(run, device="cpu").set_params(use_cache=False, num_workers=0).deployable()  # lora: one plain network
    settings = {"opset": opset, "samples": samples, "quantize": quantize, "min_agreement": min_agreement}
    with staged_folder(out_dir, "the bundle", then=lambda: " Nothing was written.") as temp:
        parity, quantization = _build(model, run, temp, settings, progress or (lambda stage: None))
        size = sum(f.stat().st_size for f in temp.iterdir())
    return ExportResult(out_dir, size, parity, quantization)
