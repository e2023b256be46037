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
from torch.utils.data import DataLoader, Dataset

from ..contract import InputContract
from .images import load_image
from .samples import LabelledData
from .transforms import ImageCollate, TextCollate, image_transform

__all__ = ["ImageSamples", "call_module", "collate_for", "inference_loader", "labelled_loader", "to_device"]


class ImageSamples(Dataset):
    """Image paths, decoded and transformed one by one; with labels, ``(image, label)`` pairs."""

    def __init__(self, paths: Sequence[str], transform: Callable, labels: Sequence[int] | None = None) -> None:
        self.paths, self.transform, self.labels = list(paths), transform, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = self.transform(load_image(self.paths[index]))
        return image if self.labels is None else (image, self.labels[index])


def collate_for(contract: InputContract, tokenizer: Any = None) -> ImageCollate | TextCollate:
    """The ``collate_fn`` that makes a contract's model inputs: stacked images or tokenizer tensors."""
    if contract.modality == "image":
        return ImageCollate(contract.channels_last)
    return TextCollate(tokenizer, contract.max_length or 512)


def _samples(contract: InputContract, items: Sequence[str], labels: Sequence[int] | None,
             transform: Callable | None) -> Dataset | list:
    if contract.modality == "image":
        return ImageSamples(items, transform, labels)
    return list(items) if labels is None else list(zip(items, labels))


def inference_loader(source: Any, items: Sequence[str], *, tokenizer: Any = None, batch_size: int = 64,
                     num_workers: int = 0) -> DataLoader:
    """Batches of model inputs for ``items``, in order, prepared with the evaluation transform.

    ``source`` is a Backbone (its contract and tokenizer are used) or an InputContract (give
    ``tokenizer`` for text). Images come as one tensor in the contract's memory layout, texts as
    the tokenizer's dict. Only images use worker processes: decoding is the slow part, and
    tokenizing is fast and does not fork well. Workers prefetch 4 batches so the model never waits.
    """
    contract = getattr(source, "contract", source)
    tokenizer = tokenizer if tokenizer is not None else getattr(source, "tokenizer", None)
    image = contract.modality == "image"
    workers = num_workers if image else 0
    samples = _samples(contract, items, None, image_transform(contract) if image else None)
    return DataLoader(samples, batch_size=batch_size, num_workers=workers, collate_fn=collate_for(contract, tokenizer),
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def labelled_loader(data: LabelledData, contract: InputContract, *, tokenizer: Any = None, train: bool,
                    batch_size: int, num_workers: int = 0, randaugment: str | None = None,
                    min_crop: float = 0.08, generator: torch.Generator | None = None) -> DataLoader:
    """Batches of ``(inputs, labels)``: augmented and shuffled for training, plain otherwise.

    Built on the samples and collate of :func:`inference_loader`, so evaluation batches equal
    the ones prediction sees. Unlabelled data (a domain-adaptation target) gives label -1.

    Shuffling (and worker seeds) draw from ``generator`` when given, else from torch's global
    generator; augmentation in the main process draws from the global ones. Seeding them at the
    start of an epoch fixes that epoch's batches (resume relies on this).
    """
    labels = data.y.tolist() if data.labels is not None else [-1] * len(data)
    image = contract.modality == "image"
    workers = num_workers if image else 0
    transform = image_transform(contract, train, randaugment, min_crop) if image else None
    samples = _samples(contract, data.items, labels, transform)
    return DataLoader(samples, batch_size=batch_size, shuffle=train, num_workers=workers,
                      collate_fn=collate_for(contract, tokenizer), drop_last=train and len(samples) > batch_size,
                      persistent_workers=False, prefetch_factor=2 if workers else None, generator=generator)


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
