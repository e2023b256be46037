"""Running a whole network over data for predictions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import distributed
from .backbones import Backbone
from .data import LabelledData, inference_loader, to_device
from .training import TransferNet

__all__ = ["network_probabilities"]

Progress = Callable[..., None]


def network_probabilities(net: TransferNet, data: LabelledData, backbone: Backbone, device: torch.device,
                          batch_size: int, workers: int, progress: Progress | None = None) -> np.ndarray:
    """Softmax outputs of a whole network over unlabelled or labelled data.

    Batches come from :func:`~headstart.data.inference_loader`, the path feature extraction and
    AdaBN use, so a network predicts on exactly the inputs its features were computed from.
    In a job of several processes (after a distributed fit) each rank predicts its shard and
    every rank gets all rows back: every rank must call it.
    """
    channels_last = backbone.contract.channels_last
    positions = distributed.shard_positions(len(data))
    items = data.items if len(positions) == len(data) else [data.items[i] for i in positions]
    net.eval().to(device)
    out, done = [torch.empty(0, 0)], 0
    with torch.inference_mode():
        for batch in inference_loader(backbone, items, batch_size=batch_size, num_workers=workers,
                                      max_pixels=data.max_pixels):
            logits = net(to_device(batch, device, channels_last=channels_last))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
            done += len(out[-1])
            if progress:
                progress(f"{backbone.name} predicting", done, len(items))
    mine = torch.cat(out[1:]).numpy() if len(out) > 1 else np.empty((0, 0), dtype=np.float32)
    return distributed.gather_rows(mine, len(data))
