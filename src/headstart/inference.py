"""Running a whole network over data for predictions, and the test-time views of images (TTA)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from . import distributed
from .allocator import keep_freed_memory
from .backbones import Backbone
from .data import LabelledData, inference_loader, to_device
from .errors import ConfigError
from .training import TransferNet

__all__ = ["network_probabilities", "TEST_VIEWS", "Viewed", "viewed_backbone", "check_tta"]

Progress = Callable[..., None]

# Test-time augmentation: the views of a prepared image batch (after the contract's resize, crop
# and normalisation) predicted besides the image itself, their probabilities averaged. Mirroring
# the prepared tensor equals preparing the mirrored image (the centre crop is symmetric), so a
# view is a function of the batch tensor and needs no loader of its own.
TEST_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hflip": lambda batch: torch.flip(batch, dims=[-1]),  # (B, C, H, W): the width axis
}


def check_tta(modality: str) -> None:
    """Test-time augmentation applies to images only: a text model refuses it, in one line."""
    if modality != "image":
        raise ConfigError(f"Test-time augmentation (`tta`, `--tta`) averages mirrored views of images; it does not "
                          f"apply to a {modality} model. Leave it off.")


class Viewed(nn.Module):
    """``module`` applied to one test-time view of its image batch (``TEST_VIEWS``)."""

    def __init__(self, module: nn.Module, view: str) -> None:
        super().__init__()
        self.module, self.view = module, view

    def forward(self, inputs: torch.Tensor, *args, **kwargs):
        return self.module(TEST_VIEWS[self.view](inputs), *args, **kwargs)


def viewed_backbone(backbone: Backbone, view: str) -> Backbone:
    """The backbone seeing one view of its inputs; its digest names the view, so the feature cache
    keeps the view's features apart from the image's."""
    check_tta(backbone.contract.modality)
    return replace(backbone, module=Viewed(backbone.module, view), weights_digest=f"{backbone.weights_digest}+{view}")


def network_probabilities(net: TransferNet, data: LabelledData, backbone: Backbone, device: torch.device,
                          batch_size: int, workers: int, progress: Progress | None = None,
                          view: str | None = None) -> np.ndarray:
    """Softmax outputs of a whole network over unlabelled or labelled data.

    Batches come from :func:`~headstart.data.inference_loader`, the path feature extraction and
    AdaBN use, so a network predicts on exactly the inputs its features were computed from.
    In a job of several processes (after a distributed fit) each rank predicts its shard and
    every rank gets all rows back: every rank must call it. ``view`` (a ``TEST_VIEWS`` name): predict
    that view of each image instead.
    """
    channels_last = backbone.contract.channels_last
    positions = distributed.shard_positions(len(data))
    items = data.items if len(positions) == len(data) else [data.items[i] for i in positions]
    net.eval().to(device)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # each batch's activations reuse the last one's memory (allocator.py)
    if view is not None:
        check_tta(backbone.contract.modality)
        net = Viewed(net, view)
    out, done = [torch.empty(0, 0)], 0
    with torch.inference_mode():
        for batch in inference_loader(backbone, items, batch_size=batch_size, num_workers=workers,
                                      max_pixels=data.max_pixels):
            logits = net(to_device(batch, device, channels_last=channels_last))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
            done += len(out[-1])
            if progress:
                progress(f"{backbone.name} predicting{f' ({view})' if view else ''}", done, len(items))
    mine = torch.cat(out[1:]).numpy() if len(out) > 1 else np.empty((0, 0), dtype=np.float32)
    return distributed.gather_rows(mine, len(data))
