"""A pre-trained backbone as a run directory that ``run:PATH`` (and ``hs.load``) reads.

A self-supervised run is stored as a ``finetune`` run without classes: ``model.safetensors`` holds
the whole backbone (``backbone.*``) and an empty head, ``contract.json`` the base backbone's input
contract, ``config.yaml`` the base backbone with its weights digest and a ``pretraining`` entry
(method, options, data). Its own weights digest, as ``run:PATH`` computes it, combines the base's
with the SHA-256 of ``model.safetensors``, so the feature cache keys its features apart.
``pretraining.json`` keeps the loss per epoch, the cost and the linear probe before and after.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

from torch import nn

from .._version import __version__
from ..backbones import Backbone
from ..runs import RunFiles, write_run
from ..training import TransferNet
from .job import Pretrained
from .methods import PretrainMethod

__all__ = ["pretraining_document", "pretrained_run", "save_pretrained"]


def pretraining_document(method: PretrainMethod, model: str, data, result: Pretrained, seconds: float,
                         probe: dict | None) -> dict:
    """What ``pretraining.json`` holds: the method and options, the curve, the cost, the probe."""
    samples = result.info.get("samples_seen") or sum(row.get("samples", 0) for row in result.history)
    return {"method": method.name, "model": model, "options": asdict(method.config),
            "data": data.summary(),
            "curve": [{k: row[k] for k in ("epoch", "train_loss", "val_loss", "lr", "seconds") if k in row}
                      for row in result.history],
            "cost": {"seconds": round(seconds, 2), "samples_seen": samples,
                     "seconds_per_1000_samples": round(1000 * seconds / samples, 2) if samples else None},
            "probe": probe}


def pretrained_run(backbone: Backbone, model: str, weights: str | None, module: nn.Module, document: dict,
                   info: dict, seed: int) -> RunFiles:
    """The run of a self-supervised pre-training: the base backbone's contract, the trained weights."""
    with warnings.catch_warnings():  # a head of no classes: nothing to initialise
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        net = TransferNet(module, nn.Linear(backbone.contract.feature_dim, 0))
    tensors = {name: value.detach().clone() for name, value in net.state_dict().items()}
    config = {
        "headstart_version": __version__,
        "backbone": {"name": model, "weights": weights, "weights_digest": backbone.weights_digest},
        "strategy": "finetune",  # how the run is read back: a whole network, no classes
        "strategy_config": {},
        "seed": seed,
        "fit": info,
        "pretraining": {k: document[k] for k in ("method", "options", "data")},
    }
    last = document["curve"][-1] if document["curve"] else {}
    metrics = {"data": document["data"], "pretraining": {k: last[k] for k in ("train_loss", "val_loss") if k in last}}
    return RunFiles(config, [], backbone.contract.to_dict(), metrics, tensors, {"pretraining": document})


def save_pretrained(path: Path, backbone: Backbone, model: str, weights: str | None, result: Pretrained,
                    document: dict, seed: int, finish) -> Path:
    """Write the run: a fitted model's own (``supervised``: its head, test metrics and predictions with
    it), else :func:`pretrained_run`; ``finish`` adds the report before the run is renamed into place."""
    if result.estimator is not None:
        metrics = {"test": result.metrics["test"], "data": document["data"]}
        return result.estimator.save(path, metrics=metrics, finish=finish,
                                     extra={"predictions": result.metrics["predictions"], "pretraining": document})
    return write_run(path, pretrained_run(backbone, model, weights, result.module, document, result.info, seed), finish)
