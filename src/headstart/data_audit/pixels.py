"""Near-duplicate images confirmed by their pixels, not by features alone.

A backbone's features place two different photos of one texture (blurred foliage, a field of
tulips) as close as a re-encoded copy: of the 31 pairs of flowers5 at or above the threshold, 14
are different photos (cosine 0.920-0.955), among copies at 0.922-1. Pixels tell them apart:
those agree at most 0.85. Each image becomes a grey thumbnail of ``SIDE`` x ``SIDE`` (box-averaged, so resizing and
JPEG noise average out), mean-removed and scaled to length 1 (so brightness and contrast shifts do
not count), also from centred crops of ``CROPS`` (so a slightly cropped copy lines up); two images
agree by the largest correlation of one's whole thumbnail with any of the other's. Measured with
``bench/audit_threshold.py`` (images the audit benchmark does not score): copies made by resizing
to 80 %, JPEG q60, a 5 % crop or a colour shift agree at 0.965 or more, with all four at once at
0.93 or more; different photos at most 0.59, different faces at most 0.88 (LFW, one class of
look-alikes). Flat quarter crops of a photo (grass, gravel) and 8-pixel digit scans agree up to
0.95-0.98 with other ones, which the features' threshold separates. A pair is a near-duplicate when
both agree: features at or above the near-duplicate threshold and pixels at or above ``AGREEMENT``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..data import LabelledData
from ..data.images import load_image

__all__ = ["AGREEMENT", "CROPS", "SIDE", "confirmed", "confirmed_pairs", "pixel_agreement", "thumbnails"]

SIDE = 32
CROPS = (0.0, 0.025, 0.05, 0.1)  # centred crops: the share of each side taken off, both edges together
AGREEMENT = 0.9

Pair = tuple[int, int, float]


def thumbnails(image: Image.Image) -> np.ndarray:
    """``(len(CROPS), SIDE * SIDE)``: the unit-length, mean-removed grey thumbnail of each centred crop."""
    grey = image.convert("L")
    width, height = grey.size
    rows = []
    for share in CROPS:
        dx, dy = width * share / 2, height * share / 2
        small = grey.crop((dx, dy, width - dx, height - dy)).resize((SIDE, SIDE), Image.Resampling.BOX)
        row = np.asarray(small, dtype=np.float32).ravel()
        row -= row.mean()
        rows.append(row / max(float(np.linalg.norm(row)), 1e-6))
    return np.stack(rows)


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """How well two images' :func:`thumbnails` line up: the largest correlation of one's whole
    thumbnail with any crop of the other (1: the same picture)."""
    return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))


def confirmed_pairs(pairs: Sequence[Pair], paths: Sequence[str],
                    other_paths: Sequence[str] | None = None) -> list[Pair]:
    """The image pairs ``(i, j, similarity)`` whose pixels agree too; ``j`` indexes ``other_paths``
    when given (pairs between two data sets), else ``paths``. Only images in a pair are decoded."""
    other_paths = paths if other_paths is None else other_paths
    decoded: dict[str, np.ndarray] = {}

    def of(path: str) -> np.ndarray:
        if path not in decoded:
            decoded[path] = thumbnails(load_image(path, max_pixels=None, size_hint=4 * SIDE))
        return decoded[path]

    return [(i, j, s) for i, j, s in pairs if pixel_agreement(of(paths[i]), of(other_paths[j])) >= AGREEMENT]


def confirmed(pairs: Sequence[Pair], data: LabelledData, other: LabelledData | None = None) -> list[Pair]:
    """The feature-similar ``pairs`` of ``data`` (or between ``data`` and ``other``) that are
    near-duplicates: for images those whose pixels agree too (:func:`confirmed_pairs`); texts as given."""
    if data.modality != "image":
        return list(pairs)
    return confirmed_pairs(pairs, data.items, None if other is None else other.items)
