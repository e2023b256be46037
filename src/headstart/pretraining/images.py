"""The image objective: SimCLR from lightly (``NTXentLoss``, ``SimCLRProjectionHead``, ``SimCLRTransform``).

The views' final size and normalisation are the backbone's contract (``input_size``, ``mean``,
``std``), never typed in: the backbone trains on inputs shaped as its features will be computed.
"""

from __future__ import annotations

import math

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed
from ..contract import InputContract
from ..data import ImageSamples
from ..errors import ConfigError
from .configs import SimclrConfig
from .job import PretrainJob

__all__ = ["SimclrObjective", "simclr_objective", "view_transform", "ViewsCollate", "image_loaders"]


class SimclrObjective(nn.Module):
    """Both views of a batch through the backbone in one pass, then the projection head and NT-Xent."""

    def __init__(self, backbone: nn.Module, feature_dim: int, config: SimclrConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(feature_dim, feature_dim, config.projection_dim)
        self.loss = NTXentLoss(temperature=config.temperature)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        first, second = self.head(self.backbone(torch.cat(views))).chunk(2)
        return self.loss(first, second)


def simclr_objective(job: PretrainJob) -> nn.Module:
    """SimCLR on the backbone, its projection head initialised from the run's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        return SimclrObjective(job.backbone.module, job.backbone.contract.feature_dim, job.config)


class _ToRGB:
    def __call__(self, image):
        return image if image.mode == "RGB" else image.convert("RGB")


class _Views:
    """RGB conversion, then lightly's two SimCLR views (picklable for DataLoader workers)."""

    def __init__(self, views: SimCLRTransform) -> None:
        self.to_rgb, self.views = _ToRGB(), views

    def __call__(self, image) -> list[torch.Tensor]:
        return self.views(self.to_rgb(image))


def view_transform(contract: InputContract, config: SimclrConfig) -> _Views:
    """Two random views of an image at the contract's input size, normalised with its mean and std."""
    missing = [name for name in ("input_size", "mean", "std") if getattr(contract, name) is None]
    if missing:
        raise ConfigError(f"the image contract has no {', '.join(missing)}; the backbone must declare them.")
    return _Views(SimCLRTransform(input_size=int(contract.input_size), cj_strength=config.jitter,
                                  min_scale=config.min_crop,
                                  normalize={"mean": list(contract.mean), "std": list(contract.std)}))


class ViewsCollate:
    """A ``collate_fn``: ``(views, label)`` pairs to ``([stacked first views, stacked second views], labels)``,
    in the contract's memory layout."""

    def __init__(self, channels_last: bool) -> None:
        self.memory = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch) -> tuple[list[torch.Tensor], torch.Tensor]:
        views, labels = zip(*batch)
        stacked = [torch.stack([v[i] for v in views]).contiguous(memory_format=self.memory) for i in range(2)]
        return stacked, torch.as_tensor(labels, dtype=torch.int64)


def _samples(items: list[str], transform: _Views, max_pixels: int | None, size: int, min_crop: float) -> ImageSamples:
    """Images decoded no smaller than the smallest random crop needs to span ``size`` pixels."""
    hint = math.ceil(size / math.sqrt(min_crop * 0.75))
    return ImageSamples(items, transform, [-1] * len(items), max_pixels=max_pixels, size_hint=hint)


def image_loaders(job: PretrainJob) -> tuple[DataLoader, DataLoader | None]:
    """Shuffled training batches of view pairs (each rank its share of one permutation per epoch; worker
    seeds from the loader's generator, which the loop seeds per epoch) and the validation share's."""
    config, contract, world = job.config, job.backbone.contract, distributed.current()
    transform, workers = view_transform(contract, config), job.num_workers
    collate = ViewsCollate(contract.channels_last)

    def samples(data):
        return _samples(data.items, transform, data.max_pixels, int(contract.input_size), config.min_crop)

    train_samples = samples(job.train)
    sampler = DistributedSampler(train_samples, num_replicas=world.size, rank=world.rank, shuffle=True, seed=job.seed,
                                 drop_last=world.size > 1)
    extra = {"num_workers": workers, "prefetch_factor": 2 if workers else None, "persistent_workers": False}
    train = DataLoader(train_samples, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                       drop_last=len(sampler) > config.batch_size, generator=torch.Generator(), **extra)
    val = DataLoader(samples(job.val), batch_size=config.batch_size, collate_fn=collate, **extra) \
        if job.val is not None else None
    return train, val
