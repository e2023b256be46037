"""Per-image properties a person should look at before training: odd sizes and shapes, images too
dark, too light or nearly blank. The kinds cleanvision checks, read cheaply rather than with
cleanvision itself, which would decode every image again at full size (as long as the feature
extraction on a CPU) and bring pandas and imagehash into every install.

Sizes come from each file's header; exposure from a grey thumbnail decoded at reduced scale (a
JPEG's DCT gives a reduced scale for free): flowers5's 4,317 images take about 3 s, against about 2
minutes for their features on 2 cores. Sizes and shapes are judged against the data's own (Tukey's
far-out fence on the logarithm, and at least a factor ``SIZE_FACTOR`` or ``SHAPE_FACTOR`` from the
median), so a set of panoramas or of thumbnails is not flagged as a whole; exposure against fixed
levels, since a dark photo is dark whatever the others are:
- dark: even the image's brighter pixels (95th percentile of grey) stay below ``DARK``;
- light: even its darker pixels (5th percentile) stay above ``LIGHT``;
- blank: 90 % of its grey levels lie within ``BLANK`` of each other (5th to 95th percentile): one
  colour, nothing to learn (a black or white one is called dark or light).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..data.images import load_image
from ..errors import DataError
from .findings import Finding
from .labels import FENCE

__all__ = ["BLANK", "DARK", "LIGHT", "SHAPE_FACTOR", "SIZE_FACTOR", "image_properties", "property_findings"]

DARK = 0.2
LIGHT = 0.85
BLANK = 0.03  # about 8 of 256 grey levels
SIZE_FACTOR = 4.0  # area: a quarter (or four times) the median's, e.g. half the width and half the height
SHAPE_FACTOR = 2.0  # longer side / shorter side, against the median image's
THUMBNAIL = 32

COLUMNS = ("width", "height", "p05", "p95")


def _properties(path: str) -> tuple[float, ...]:
    try:
        with Image.open(path) as header:
            width, height = header.size
        grey = np.asarray(load_image(path, size_hint=THUMBNAIL).convert("L"), dtype=np.float32) / 255
    except (OSError, DataError, Image.DecompressionBombError):  # the reader refused it already
        return (np.nan,) * len(COLUMNS)
    low, high = np.percentile(grey, [5, 95])
    return float(width), float(height), float(low), float(high)


def image_properties(paths: Sequence[str]) -> np.ndarray:
    """``(len(paths), 4)``: width and height from the header, then the 5th and 95th percentiles of the
    grey levels (0-1) of a reduced decode; NaN where a file cannot be read."""
    rows = [_properties(path) for path in paths]  # in threads it was slower: most of the time is Python's
    return np.array(rows, dtype=np.float64).reshape(len(paths), len(COLUMNS))


def _odd(values: np.ndarray, factor: float) -> np.ndarray:
    """Where log ``values`` lie beyond the far-out fence of all of them and a ``factor`` from their median."""
    logs = np.log(values)
    q1, median, q3 = np.nanpercentile(logs, [25, 50, 75])
    spread = FENCE * (q3 - q1)
    beyond = (logs < q1 - spread) | (logs > q3 + spread)
    return beyond & (np.abs(logs - median) >= np.log(factor))


def property_findings(properties: np.ndarray, labels: Sequence[str] | None, locations: Sequence[str],
                      parts: Sequence[str | None]) -> list[Finding]:
    """Odd-size, odd-shape, dark, light and blank images (see the module's docstring for the rules)."""
    width, height, low, high = properties.T
    readable = ~np.isnan(width)
    findings: list[Finding] = []
    if not readable.any():
        return findings
    area, shape = width * height, np.maximum(width, height) / np.minimum(width, height)  # NaN where unreadable
    median_area, median_shape = np.nanmedian(area), np.nanmedian(shape)

    def add(kind: str, i: int, score: float, detail: str) -> None:
        findings.append(Finding(kind, int(i), locations[i], float(np.clip(score, 0, 1)),
                                label=labels[i] if labels else None, split=parts[i], detail=detail))

    with np.errstate(invalid="ignore"):
        odd_size, odd_shape = _odd(area, SIZE_FACTOR), _odd(shape, SHAPE_FACTOR)
    for i in np.flatnonzero(odd_size):
        ratio = area[i] / median_area
        share = f"1/{1 / ratio:.0f}" if ratio < 1 else f"{ratio:.0f}x"
        add("odd-size", i, 1 - min(ratio, 1 / ratio),
            f"{width[i]:.0f}x{height[i]:.0f} px: {share} the pixels of the median image")
    for i in np.flatnonzero(odd_shape):
        ratio = shape[i] / median_shape
        add("odd-shape", i, 1 - min(ratio, 1 / ratio),
            f"{width[i]:.0f}x{height[i]:.0f} px: sides {shape[i]:.1f} to 1 (the median image {median_shape:.1f} to 1)"
            + ("; a centre crop loses much of it" if ratio > 1 else ""))
    for i in np.flatnonzero(readable):
        if high[i] < DARK:
            add("dark", i, 1 - high[i] / DARK, f"95 % of its pixels below {high[i]:.2f} of full brightness")
        elif low[i] > LIGHT:
            add("light", i, (low[i] - LIGHT) / (1 - LIGHT),
                f"95 % of its pixels above {low[i]:.2f} of full brightness")
        elif high[i] - low[i] < BLANK:
            add("blank", i, 1 - (high[i] - low[i]) / BLANK,
                f"nearly one colour: 90 % of its grey levels within {high[i] - low[i]:.3f} of each other")
    return findings
