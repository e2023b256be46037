"""Perturbed copies of images and texts, as the audit benchmarks inject them (seeded).

Images: resized to 80 %, re-encoded as JPEG quality 60, cropped by 5 % (2.5 % each side), or
colour-shifted (each channel moved by up to 12 of 255 levels). Texts: case changed,
punctuation changed, or one word dropped.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_CHANGES = ("resize80", "jpeg60", "crop5", "colour")
TEXT_CHANGES = ("case", "punctuation", "drop-word")


def change_image(image: Image.Image, change: str, rng: random.Random) -> Image.Image:
    """One perturbed copy of ``image`` (RGB); ``change`` is one of IMAGE_CHANGES or "all" (every one in turn)."""
    if change == "all":
        for one in IMAGE_CHANGES:
            image = change_image(image, one, rng)
        return image
    width, height = image.size
    if change == "resize80":
        return image.resize((max(1, round(width * 0.8)), max(1, round(height * 0.8))), Image.Resampling.BICUBIC)
    if change == "jpeg60":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=60)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if change == "crop5":
        dx, dy = round(width * 0.025), round(height * 0.025)
        return image.crop((dx, dy, width - dx, height - dy))
    if change == "colour":
        shift = np.array([rng.randint(-12, 12) for _ in range(3)])
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + shift, 0, 255).astype(np.uint8))
    raise ValueError(change)


def save_changed(source: str | Path, target: Path, change: str, rng: random.Random) -> Path:
    """Write a perturbed copy of the image file ``source`` to ``target`` (PNG, or JPEG for jpeg60)."""
    with Image.open(source) as image:
        changed = change_image(image.convert("RGB"), change, rng)
    target.parent.mkdir(parents=True, exist_ok=True)
    changed.save(target, quality=95) if target.suffix.lower() in (".jpg", ".jpeg") else changed.save(target)
    return target


def change_text(text: str, change: str, rng: random.Random) -> str:
    """One perturbed copy of ``text``; ``change`` is one of TEXT_CHANGES or "all"."""
    if change == "all":
        for one in TEXT_CHANGES:
            text = change_text(text, one, rng)
        return text
    if change == "case":
        return rng.choice([str.lower, str.upper, str.title, str.swapcase])(text)
    if change == "punctuation":
        stripped = re.sub(r"[.!?,;:]+", "", text).strip()
        return stripped + rng.choice(["!", "!!", "...", " ?"]) if stripped != text.strip() else text.strip() + "!"
    if change == "drop-word":
        words = text.split()
        if len(words) < 2:
            return text + "!"
        del words[rng.randrange(len(words))]
        return " ".join(words)
    raise ValueError(change)
