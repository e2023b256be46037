"""Preprocessing built from a backbone's input contract, never typed in by hand.

Resize, crop, interpolation and normalisation all come from the contract, so a model is
always fed the way it was pre-trained (the silent mismatch headstart exists to prevent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import get_worker_info

from headstart.contract import InputContract
from headstart.errors import ConfigError

__all__ = ["ImageCollate", "ImageTransform", "TextCollate", "image_transform"]


class _ToRGB:
    """Make sure the transform sees RGB, whatever mode the caller's image has."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _size_hint(size: int, crop_pct: float, train: bool, min_crop: float) -> int | None:
    """The shorter image side the transform needs to lose nothing when decoding is reduced.

    Evaluation resizes the shorter side to ``size / crop_pct`` (as timm does); in training the
    smallest random crop (``min_crop`` of the area at aspect 3:4) must still span ``size`` pixels.
    """
    resized = math.floor(size / crop_pct)
    if not train:
        return resized
    return max(resized, math.ceil(size / math.sqrt(min_crop * 0.75))) if min_crop > 0 else None


def image_transform(contract: InputContract, train: bool = False, randaugment: str | None = None,
                    min_crop: float = 0.08) -> ImageTransform:
    """Build the PIL -> (3, H, W) float tensor transform a backbone's contract asks for.

    ``train=True`` gives timm's training transform (random resized crop, horizontal flip,
    colour jitter, and RandAugment when ``randaugment`` is a timm policy such as
    ``rand-m9-mstd0.5``; random crops cover at least ``min_crop`` of the image); otherwise
    resize, centre crop at ``crop_pct``. Its ``size_hint`` tells :func:`load_image` how small
    an image may be decoded without changing the result.
    """
    if contract.modality != "image":
        raise ConfigError(f"image_transform needs an image contract. Got a {contract.modality} "
                          "contract instead; text backbones use a tokenizer (TextCollate).")
    missing = [name for name in ("input_size", "mean", "std")
               if getattr(contract, name) is None]
    if missing:
        raise ConfigError(f"the image contract has no {', '.join(missing)}; "
                          "the backbone must declare them.")
    from timm.data import create_transform  # here, not above: a text job need not import timm (seconds)
    from timm.data.constants import DEFAULT_CROP_PCT

    size = int(contract.input_size)  # type: ignore[arg-type]
    transform = create_transform(
        input_size=(3, size, size),
        is_training=train,
        interpolation=contract.interpolation or "bilinear",
        mean=tuple(contract.mean),  # type: ignore[arg-type]
        std=tuple(contract.std),  # type: ignore[arg-type]
        crop_pct=contract.crop_pct,
        auto_augment=randaugment if train else None,
        scale=(min_crop, 1.0),
    )
    return ImageTransform(transform, _size_hint(size, contract.crop_pct or DEFAULT_CROP_PCT, train, min_crop))


class ImageTransform:
    """RGB conversion followed by the timm transform; picklable for DataLoader workers.

    ``size_hint`` is the shorter image side the transform needs at full quality (None: any
    size), so images far larger can be decoded at reduced size (see :func:`load_image`).
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], size_hint: int | None = None) -> None:
        self.to_rgb = _ToRGB()
        self.transform = transform
        self.size_hint = size_hint

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(self.to_rgb(image))

    def __repr__(self) -> str:
        return f"{self.to_rgb!r} -> {self.transform!r}"


class _Collate:
    """A DataLoader ``collate_fn`` for items alone or ``(item, label)`` pairs: subclasses turn
    the items into model inputs in :meth:`inputs`; labels become an int64 tensor."""

    def inputs(self, items: Sequence[Any]) -> Any:
        raise NotImplementedError

    def __call__(self, batch: Sequence[Any]) -> Any:
        if batch and isinstance(batch[0], (tuple, list)):
            items, labels = zip(*batch)
            return self.inputs(items), torch.as_tensor(labels, dtype=torch.int64)
        return self.inputs(batch)


class ImageCollate(_Collate):
    """Stack image tensors (and labels) into a batch in the backbone's memory layout; picklable.

    The batch is written straight into a channels_last tensor (in shared memory when built in
    a worker, as torch's default collate does), so neither a later layout conversion nor the
    hand-over to the main process copies it again. ``(image, label)`` pairs give
    ``(images, labels)`` with labels as an int64 tensor.
    """

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = channels_last

    def inputs(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        first = images[0]
        channels, height, width = first.shape
        if get_worker_info() is not None:
            flat = first.new(first._typed_storage()._new_shared(len(images) * first.numel(), device=first.device))
        else:
            flat = first.new_empty(len(images) * first.numel())
        if self.channels_last:
            out = flat.view(len(images), height, width, channels).permute(0, 3, 1, 2)
        else:
            out = flat.view(len(images), channels, height, width)
        return torch.stack(list(images), out=out)

    def __repr__(self) -> str:
        return f"ImageCollate(channels_last={self.channels_last})"


class TextCollate(_Collate):
    """Tokenize a batch of texts for a DataLoader (``collate_fn``); picklable for workers.

    A batch of strings gives the tokenizer's tensors as a dict; a batch of
    ``(text, label)`` pairs gives ``(tensors, labels)`` with labels as an int64 tensor.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(list(texts), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        return dict(encoded)

    def __repr__(self) -> str:
        return f"TextCollate(max_length={self.max_length})"
