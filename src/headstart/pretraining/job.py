"""What a pre-training method is given (:class:`PretrainJob`) and what it gives back (:class:`Pretrained`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ..backbones import Backbone
    from ..data import LabelledData
    from .configs import PretrainConfig

__all__ = ["PretrainJob", "Pretrained"]


@dataclass
class PretrainJob:
    """Everything a method's training needs: the backbone (trained in place), the data and its
    validation share, where it runs, the checkpoint to write (and resume from), loop callbacks."""

    backbone: Backbone
    model: str                      # the backbone's name (`minilm`, `run:/absolute/path`...)
    weights: str | None
    train: LabelledData
    val: LabelledData | None
    config: PretrainConfig
    test: LabelledData | None = None  # labelled methods: held out to measure the source model
    seed: int = 0
    device: Any = "cpu"
    num_workers: int = 0
    checkpoint: Path | None = None
    resume: bool = False
    callbacks: Sequence[Any] = ()
    cache_dir: str | None = None
    progress: Callable[..., None] | None = None


@dataclass
class Pretrained:
    """What a method trained: the backbone module, its loss per epoch, and what the fit measured.

    ``estimator`` is set when the method fitted a classifier (``supervised``): the run is then
    saved as that fitted model, its head and test metrics included.
    """

    module: nn.Module
    history: list[dict]
    info: dict = field(default_factory=dict)
    estimator: Any = None
    metrics: dict = field(default_factory=dict)
