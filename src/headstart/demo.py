"""Demo data that ships inside an installed package: scikit-learn's handwritten digits.

The 8x8 digit scans are written out as PNG files in one folder per class, so the demo runs
the same path a user's image folder takes: validation, contract-driven preprocessing,
feature extraction with a pre-trained backbone, linear probe, evaluation, saved run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from .errors import DataError

__all__ = ["write_digits_folder"]


def write_digits_folder(root: str | Path, per_class: int = 60, seed: int = 0) -> Path:
    """Write ``per_class`` digit images of each class 0-9 under ``root/<digit>/``."""
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / "0").is_dir():
        raise DataError(f"{root} exists and is not a demo digits folder; choose another `--data-dir`.")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        indices = rng.permutation(np.flatnonzero(digits.target == label))[:per_class]
        for index in indices:
            pixels = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(255 - pixels, mode="L").save(folder / f"{index:04d}.png")
    return root
