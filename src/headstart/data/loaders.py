"""The one way items (image paths or texts) become a backbone's inputs.

Feature extraction, prediction, AdaBN and training all batch through :class:`ImageSamples`
and :func:`collate_for`, and move batches with :func:`to_device`, so a model sees identical
inputs whichever path feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..contract import InputContract
from ..distributed import ShardSampler, World
from .images import DEFAULT_MAX_PIXELS, load_image
from .samples import LabelledData
from .transforms import ImageCollate, ImageTransform, TextCollate, image_transform

__all__ = ["ImageSamples", "call_module", "collate_for", "inference_loader", "labelled_loader", "set_loader_epoch",
           "to_device"]


class ImageSamples(Dataset):
    """Image paths, decoded and transformed one by one; with labels, ``(image, label)`` pairs.

    Each image is refused over ``max_pixels`` and may be decoded at reduced size down to
    ``size_hint`` (the transform's ``size_hint``; None: full size): see :func:`~headstart.data.load_image`.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, labels: Sequence[int] | None = None, *,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, size_hint: int | None = None) -> None:
        self.paths, self.transform, self.labels = list(paths), transform, labels
        self.max_pixels, self.size_hint = max_pixels, size_hint

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_image(self.paths[index], max_pixels=self.max_pixels, size_hint=self.size_hint)
        image = self.transform(image)
        return image if self.labels is None else (image, self.labels[index])


def collate_for(contract: InputContract, tokenizer: Any = None) -> ImageCollate | TextCollate:
    """The ``collate_fn`` that makes a contract's model inputs: stacked images or tokenizer tensors."""
    if contract.modality == "image":
        return ImageCollate(contract.channels_last)
    return TextCollate(tokenizer, contract.max_length or 512)


def _samples(items: Sequence[str], labels: Sequence[int] | None, transform: ImageTransform | None,
             max_pixels: int | None) -> Dataset | list:
    """Images (there is a transform) as :class:`ImageSamples`; texts as they are."""
    if transform is not None:
        return ImageSamples(items, transform, labels, max_pixels=max_pixels, size_hint=transform.size_hint)
    return list(items) if labels is None else list(zip(items, labels))


def inference_loader(source: Any, items: Sequence[str], *, tokenizer: Any = None, batch_size: int = 64,
                     num_workers: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DataLoader:
    """Batches of model inputs for ``items``, in order, prepared with the evaluation transform.

    ``source`` is a Backbone (its contract and tokenizer are used) or an InputContract (give
    ``tokenizer`` for text). Images come as one tensor in the contract's memory layout, texts as
    the tokenizer's dict. Only images use worker processes: decoding is the slow part, and
    tokenizing is fast and does not fork well. Workers prefetch 4 batches so the model never waits.
    Images over ``max_pixels`` raise :class:`~headstart.errors.DataError`: pass the value the
    data was read with (``ImageFolder``/``ImageFiles``); images far larger than the contract's
    input are decoded at reduced size.
    """
    contract = getattr(source, "contract", source)
    tokenizer = tokenizer if tokenizer is not None else getattr(source, "tokenizer", None)
    image = contract.modality == "image"
    workers = num_workers if image else 0
    samples = _samples(items, None, image_transform(contract) if image else None, max_pixels)
    return DataLoader(samples, batch_size=batch_size, num_workers=workers, collate_fn=collate_for(contract, tokenizer),
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def labelled_loader(data: LabelledData, contract: InputContract, *, tokenizer: Any = None, train: bool,
                    batch_size: int, num_workers: int = 0, randaugment: str | None = None,
                    min_crop: float = 0.08, generator: torch.Generator | None = None,
                    world: World = World(), seed: int = 0) -> DataLoader:
    """Batches of ``(inputs, labels)``: augmented and shuffled for training, plain otherwise.

    Built on the samples and collate of :func:`inference_loader`, so evaluation batches equal
    the ones prediction sees. Unlabelled data (a domain-adaptation target) gives label -1.

    Training order is a permutation drawn from ``seed`` and the epoch (:func:`set_loader_epoch`),
    dealt out over the job's processes (``world``): rank r takes every ``world.size``-th sample
    from r, so one process with batch B and N processes with batch B/N see the same global
    batches. Evaluation gives each rank every ``world.size``-th sample, none twice.
    Worker seeds draw from ``generator`` when given; augmentation in the main process draws
    from the global generators. Images are decoded under the pixel cap ``data`` was read with.
    """
    labels = data.y.tolist() if data.labels is not None else [-1] * len(data)
    image = contract.modality == "image"
    workers = num_workers if image else 0
    transform = image_transform(contract, train, randaugment, min_crop) if image else None
    samples = _samples(data.items, labels, transform, data.max_pixels)
    sampler = _sampler(samples, train, world, seed)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_for(contract, tokenizer),
                      drop_last=train and (len(sampler) if sampler is not None else len(samples)) > batch_size,
                      persistent_workers=False, prefetch_factor=2 if workers else None, generator=generator)


def _sampler(samples: Dataset | list, train: bool, world: World, seed: int) -> Sampler | None:
    if train:  # equal shards (a few samples of the epoch's permutation are left out when N does not divide)
        return DistributedSampler(samples, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
                                  drop_last=world.size > 1)
    return ShardSampler(len(samples), world) if world.size > 1 else None


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Draw the training order of ``epoch`` (a loader whose sampler has none ignores this)."""
    set_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)


def to_device(inputs: Any, device: torch.device | str, *, channels_last: bool = False,
              non_blocking: bool = False) -> Any:
    """Move model inputs (an image tensor or a tokenizer dict) to ``device``.

    ``channels_last`` (the contract's flag) makes image batches match a module converted to
    that layout, so convolutions take their fast path; otherwise the layout is kept.
    """
    if isinstance(inputs, dict):
        return {key: value.to(device, non_blocking=non_blocking) for key, value in inputs.items()}
    memory = torch.channels_last if channels_last else torch.preserve_format
    return inputs.to(device, non_blocking=non_blocking, memory_format=memory)


def call_module(module: nn.Module, inputs: Any) -> Any:
    """A backbone's output on a batch: image tensors go in as is, tokenizer dicts as keywords."""
    return module(**inputs) if isinstance(inputs, dict) else module(inputs)
