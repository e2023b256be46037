"""``<backbone>@<pixels>``: an image backbone fed at another input size than its pre-training's.

Why: photos smaller than a backbone's input gain no detail from being upscaled to it, and the
pixels cost. On flowers5's 128 px photos efficientnet_lite0's probe scored 0.760 at 128 px and
0.772 at 224 (within a standard error), with features 3.7x and training steps 3.8x faster
(bench/input_size.py). The size is part of the name, so runs, caches, rankings and exports treat
the resized backbone as a backbone of its own, and a saved run rebuilds it by name.
Nothing here imports torch until a backbone is resized.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, first_line
from .base import Backbone

__all__ = ["MAX_INPUT_SIZE", "MIN_INPUT_SIZE", "check_image", "resized", "split_input_size"]

MIN_INPUT_SIZE = 32  # below this an ImageNet network's stride-32 stages see one pixel or none
MAX_INPUT_SIZE = 1024  # a guard against typos (1280 for 128): over twice what ImageNet backbones train at
_SIZED = re.compile(r"^(?P<base>.+)@(?P<size>\d+)$")


def split_input_size(name: str) -> tuple[str, int | None]:
    """``efficientnet_lite0@128`` -> (``efficientnet_lite0``, 128); a name without ``@N`` -> (name, None).

    A ``run:`` folder whose own name ends in ``@N`` stays a folder: the suffix is read only when the
    whole path does not exist.
    """
    match = _SIZED.match(name)
    if match is None or (name.startswith("run:") and Path(name[len("run:"):]).exists()):
        return name, None
    size = int(match["size"])
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise ConfigError(f"Backbone '{name}': an input size must be {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} pixels, "
                          f"not {size}.")
    return match["base"], size


def resized(backbone: Backbone, size: int, name: str) -> Backbone:
    """``backbone`` fed ``size`` x ``size`` images (its crop share and normalisation kept), named ``name``;
    a text backbone, or a network that cannot take that size (fixed position embeddings, too small for
    its strides), is refused here rather than deep inside the first batch."""
    check_image(name, size, backbone.name, backbone.contract.modality)
    _check_takes(backbone, size, name)
    return replace(backbone, name=name, contract=replace(backbone.contract, input_size=size))


def check_image(name: str, size: int, base: str, modality: str) -> None:
    """Refuse ``@size`` on a backbone that does not take images (the registry asks before building one)."""
    if modality != "image":
        raise ConfigError(f"Backbone '{name}': `@{size}` sets an image backbone's input size, and {base} takes "
                          f"{modality}.")


def _check_takes(backbone: Backbone, size: int, name: str) -> None:
    """One blank image through the network at ``size``: what fails here would fail on every batch."""
    import torch

    module = backbone.module
    training = module.training
    device = next(module.parameters(), torch.empty(0)).device  # a `run:` backbone may live on a GPU
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 3, size, size, device=device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"Backbone '{name}' cannot take {size} px images ({first_line(exc, 200)}). "
                          "Convolutional networks take most sizes; networks with fixed position embeddings (ViT) only "
                          f"their own ({backbone.contract.input_size} px).") from None
    finally:
        module.train(training)
