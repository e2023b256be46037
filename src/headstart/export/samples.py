"""The inputs an export is checked on: the run's own test samples, or generated ones when they are gone.

A run's ``predictions.json`` lists its test split: each image's path (``location``) or each
text (``text``, with ``file.csv:LINE`` as location) and its true class. Images of a slice the
run did not test on calibrate static int8 quantization, so agreement is never measured on the
images the ranges were fit to.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import IMAGE_EXTENSIONS, ImageTable, TextTable
from ..errors import DataError
from ..integrity import changed_files, read_manifest

__all__ = ["Samples", "test_samples", "generated_images", "generated_texts", "calibration_images",
           "calibration_texts"]


@dataclass
class Samples:
    """Inputs (image paths or texts), their true classes when known, and where they came from."""

    items: list[str]
    labels: list[str] | None
    origin: str

    def subset(self, limit: int, seed: int = 0) -> Samples:
        """At most ``limit`` of them, drawn with a fixed seed and kept in their order."""
        if len(self.items) <= limit:
            return self
        chosen = sorted(random.Random(seed).sample(range(len(self.items)), limit))
        labels = None if self.labels is None else [self.labels[i] for i in chosen]
        return Samples([self.items[i] for i in chosen], labels, self.origin)


def _prediction_rows(run: Path) -> list[dict]:
    """The rows of the run's ``predictions.json``; none when it is missing, damaged or changed."""
    path = run / "predictions.json"
    if not path.is_file() or changed_files(run, [path.name], read_manifest(run)):
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def test_samples(run: Path, modality: str) -> Samples | None:
    """The run's test samples that still exist (images on disk; texts are kept in the run), or None."""
    rows = _prediction_rows(run)
    if modality == "text":
        usable = [row for row in rows if isinstance(row.get("text"), str)]
        items = [row["text"] for row in usable]
    else:
        usable = [row for row in rows if isinstance(row.get("location"), str) and os.path.isfile(row["location"])]
        items = [row["location"] for row in usable]
    if not usable:
        return None
    labels = [str(row.get("true")) for row in usable]
    gone = len(rows) - len(usable)
    return Samples(items, labels, f"the run's test split ({len(usable)} samples"
                                  f"{f'; {gone} whose files are gone left out' if gone else ''})")


def generated_images(folder: Path, count: int, seed: int = 0) -> Samples:
    """Noise images of odd sizes, written as PNG files so both sides decode the same bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(33, 400, size=2))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        paths.append(str(folder / f"generated-{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return Samples(paths, None, f"{count} generated images (the run's test images are gone)")


def generated_texts(tokenizer, count: int, seed: int = 0) -> Samples:
    """Sentences of random words from the tokenizer's vocabulary, of varied lengths."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2)
    rnd = random.Random(seed)
    texts = [" ".join(rnd.choices(words, k=rnd.randint(1, 40))) for _ in range(count)]
    return Samples(texts, None, f"{count} generated texts (the run records no test texts)")


def calibration_images(source: str | None, exclude: list[str], count: int, seed: int = 0) -> list[str]:
    """Up to ``count`` images of the run's data (a folder, or a table of image paths in its ``image``
    column) that are not in its test split."""
    if not source or not os.path.exists(source):
        return []
    tested = {os.path.abspath(p) for p in exclude}
    if os.path.isdir(source):
        found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(source) for name in names
                       if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith("."))
    else:
        found = _table_images(source)
    return _drawn([p for p in found if os.path.abspath(p) not in tested], count, seed)


def calibration_texts(source: str | None, exclude: list[str], count: int, seed: int = 0) -> list[str]:
    """Up to ``count`` texts of the run's table (read with the default columns) that are not among
    ``exclude`` (its test texts); none when the table is gone or reads otherwise."""
    if not source or not os.path.isfile(source):
        return []
    try:
        texts = TextTable(source, label=None).items
    except DataError:
        return []
    tested = set(exclude)
    return _drawn(sorted({text for text in texts if text not in tested}), count, seed)


def _drawn(candidates: list[str], count: int, seed: int) -> list[str]:
    """Up to ``count`` of ``candidates``, drawn with ``seed``, in sorted order."""
    return sorted(random.Random(seed).sample(candidates, min(count, len(candidates))))


def _table_images(table: str) -> list[str]:
    """The readable images a table of image paths names (none when it is no such table)."""
    try:
        return ImageTable(table, label=None).items
    except DataError:
        return []
