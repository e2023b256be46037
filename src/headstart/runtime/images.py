"""Images into model inputs without torch: the evaluation transform training uses, in numpy.

Training decodes with :func:`headstart.data.load_image` and prepares with timm's evaluation
transform (resize the shorter side to ``floor(size / crop_pct)``, centre crop, scale to [0, 1],
normalise). Decoding is shared: both call the torch-free :mod:`headstart.imaging`. ``headstart.data``
imports torch, so the transform's few steps are written again here on PIL and numpy, step for step
the same (PIL does the resizing in both); ``tests/test_runtime.py`` compares the two numerically,
so a change on either side that breaks the equality fails there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from ..imaging import check_size, decode_image, reduced_rgb, to_model_rgb

__all__ = ["ImageContract", "decode_file", "in_memory_image", "prepare_image", "to_model_rgb"]

_DEFAULT_CROP_PCT = 0.875  # timm's, when a contract gives none
_RESAMPLING = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
               "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class ImageContract:
    """How a bundle's images are prepared (the image part of ``contract.json``)."""

    size: int
    crop_pct: float | None
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_pixels: int | None

    @property
    def resize(self) -> int:
        """The shorter side before the centre crop (timm: ``floor(size / crop_pct)``)."""
        return math.floor(self.size / (self.crop_pct or _DEFAULT_CROP_PCT))


# -- decoding: headstart.imaging, which headstart.data.load_image uses too ------------------------
def _over_cap(path: str, width: int, height: int, cap: int) -> str:
    return f"{path}: {width}x{height} pixels is over the bundle's limit of {cap} pixels."


def decode_file(path: str | os.PathLike[str], contract: ImageContract) -> Image.Image:
    """An image file as upright RGB, decoded as training decodes it; unusable files raise DataError."""
    return decode_image(os.fspath(path), cap=contract.max_pixels, over_cap=_over_cap, size_hint=contract.resize)


# -- the evaluation transform -----------------------------------------------------------------------
def _resize_shorter(image: Image.Image, contract: ImageContract) -> Image.Image:
    """torchvision's ``Resize(int)`` on a PIL image: shorter side to the size, longer side truncated."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = contract.resize, int(contract.resize * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size == image.size:
        return image
    return image.resize(size, _RESAMPLING[contract.interpolation])


def _centre_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """torchvision's ``CenterCrop``: zero padding when smaller, then the rounded centre."""
    height, width = pixels.shape[:2]
    if size > height or size > width:
        pad_h, pad_w = max(size - height, 0), max(size - width, 0)
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = pixels.shape[:2]
    top, left = round((height - size) / 2.0), round((width - size) / 2.0)
    return pixels[top:top + size, left:left + size]


def prepare_image(image: Image.Image, contract: ImageContract) -> np.ndarray:
    """One RGB image as the network's ``(3, size, size)`` float32 input, normalised as in training."""
    if contract.interpolation not in _RESAMPLING:
        raise DataError(f"the bundle's contract names an unknown interpolation {contract.interpolation!r}.")
    pixels = np.asarray(_resize_shorter(image.convert("RGB"), contract), dtype=np.uint8)
    pixels = _centre_crop(pixels, contract.size)
    scaled = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(contract.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(contract.std, dtype=np.float32)[:, None, None]
    return (scaled - mean) / std


def in_memory_image(item: Image.Image | np.ndarray, contract: ImageContract) -> Image.Image:
    """A PIL image or an ``(H, W, 3)`` / ``(H, W)`` uint8 array, treated as a decoded file is:
    EXIF orientation applied, converted to RGB, reduced by the same rule."""
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise DataError(f"an image array must be uint8 of shape (H, W, 3), (H, W, 4) or (H, W). "
                            f"Got {item.dtype} of shape {item.shape} instead.")
        item = Image.fromarray(item)
    check_size("an in-memory image", item.size, contract.max_pixels, _over_cap)
    return reduced_rgb(ImageOps.exif_transpose(item), contract.resize)
