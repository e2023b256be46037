"""Your runs as backbones: ``run:<run folder>`` is the backbone a fitted run trained.

A run of a network strategy (``finetune``, ``lp-ft``, ``scratch``, ``lora``, ``bitfit``) changed
its backbone's weights. ``build_backbone("run:PATH")`` gives that backbone, its head dropped
(kept aside as ``source_head``, as timm backbones keep their pre-training classifier, for LEEP),
with the original backbone's input contract and layer groups and a weights digest of its own:
the SHA-256 of the run's ``model.safetensors`` combined with the base backbone's digest, so the
feature cache keys its features apart. An adapter run (lora, bitfit) is merged into plain weights
first. A run that stores only a head (a linear probe) changed nothing in its backbone and is
refused with the backbone to name instead: accepting it would key the same features twice.

This module sits at the transfer layer (a run is read back with :func:`headstart.transfer.load_run`);
it registers the ``run`` prefix with the backbone registry, which imports it on first use.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from .backbones import Backbone, build_backbone, register_prefix
from .backbones.base import file_digest
from .errors import ConfigError, DataError, HeadstartError
from .integrity import read_manifest
from .runs import RUN_MARKER, RunFiles, read_run
from .transfer import check_one_model, load_run

__all__ = ["build_run_backbone", "list_run_backbones", "RunBackboneInfo", "stores_backbone"]

PREFIX = "run"


def stores_backbone(tensor_names) -> bool:
    """Whether a run's tensors change its backbone (all its weights, an adapter or biases), rather
    than holding a head alone on the unchanged pre-trained backbone."""
    return any(name.startswith("backbone.") for name in tensor_names)


def _run_folder(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise DataError(f"The backbone `run:{spec}` names no run: {path.absolute()} does not exist (moved or "
                        "deleted? runs fitted on it need it where it was). Give the folder of a run written by "
                        "`headstart fit`; `headstart models --runs DIR` lists the runs under DIR.")
    return path.resolve()


def _read_source_run(path: Path, name: str) -> RunFiles:
    run = read_run(path)
    check_one_model(run.config, path)
    base = (run.config.get("backbone") or {}).get("name")
    if base == name:
        raise DataError(f"{path} was fitted on itself (`--model {name}` with `--out` the same folder), so its "
                        "backbone is gone; fit it again from another backbone.")
    if not stores_backbone(run.tensors):
        raise ConfigError(f"{path} is a {run.config.get('strategy')} run: it stores only a head on the unchanged "
                          f"backbone '{base}', so it is no new backbone. Give `--model {base}` (with the run's "
                          "`--weights`, if any) instead, or a run of a strategy that trains the backbone.")
    return run


def _digest(path: Path, base_digest: str) -> str:
    """The run's own weights (its manifest's SHA-256 of model.safetensors) on top of its base's."""
    weights = (read_manifest(path) or {}).get("model.safetensors") or file_digest([path / "model.safetensors"])
    return hashlib.sha256(f"{base_digest}|{weights}".encode()).hexdigest()[:16]


def build_run_backbone(spec: str, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    """``run:<spec>``: the backbone the run in folder ``spec`` fitted, named by its absolute path.

    ``pretrained=False`` gives the base architecture with random weights (the ``scratch``
    baseline, or a run that stores every weight being loaded on top of it). ``weights`` does not
    apply: the run holds its backbone's weights.
    """
    if weights is not None:
        raise ConfigError(f"`--weights {weights}` does not apply to the backbone `run:{spec}`: the run holds its "
                          "backbone's weights. Drop `--weights`, or give a backbone it fits with `--model`.")
    path = _run_folder(spec)
    name = f"{PREFIX}:{path}"
    run = _read_source_run(path, name)
    if not pretrained:
        base = build_backbone(run.config["backbone"]["name"], pretrained=False)
        return replace(base, name=name, source_head=None)
    with warnings.catch_warnings():  # a `headstart pretrain` run's head has no classes: nothing to initialise
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        model = load_run(run, path, device="cpu")
    if model.strategy_.adapter:  # lora, bitfit: fold the trained parts into plain weights
        model.merge()
    return Backbone(name=name, module=model.net_.backbone.eval(), contract=model.contract_,
                    weights_digest=_digest(path, model.backbone_.weights_digest),
                    source_head=model.net_.head.eval() if model.classes_ else None, tokenizer=model.backbone_.tokenizer)


register_prefix(PREFIX, build_run_backbone)


@dataclass(frozen=True)
class RunBackboneInfo:
    """One run of ``headstart models --runs DIR``: what ``--model`` takes, and what it was fitted from."""

    name: str
    base: str
    strategy: str
    modality: str
    feature_dim: int
    usable: bool
    note: str = ""


def _describe(path: Path) -> RunBackboneInfo:
    name = f"{PREFIX}:{path}"
    try:
        run = read_run(path)
    except HeadstartError as exc:
        return RunBackboneInfo(name, "?", "?", "?", 0, False, str(exc))
    config, contract = run.config, run.contract
    usable = stores_backbone(run.tensors)
    method = (config.get("pretraining") or {}).get("method")
    return RunBackboneInfo(name, str((config.get("backbone") or {}).get("name")),
                           f"pretrain {method}" if method else str(config.get("strategy")),
                           str(contract.get("modality")), int(contract.get("feature_dim") or 0), usable,
                           "" if usable else "head only (base backbone unchanged)")


def list_run_backbones(folder: str | Path) -> list[RunBackboneInfo]:
    """Every run under ``folder`` (a folder holding the run marker, at any depth; hidden folders,
    such as a half-written run, are skipped), and whether it can serve as a backbone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"`--runs {folder}` is not a folder; give the folder your runs are in, e.g. `--runs runs`.")
    runs = sorted(marker.parent for marker in folder.rglob(RUN_MARKER)
                  if not any(part.startswith(".") for part in marker.parent.relative_to(folder).parts))
    return [_describe(path) for path in runs]
