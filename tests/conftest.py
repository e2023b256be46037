"""Shared fixtures that generate small data sets in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


def _write_images(folder: Path, layout: dict, counter: list[int]) -> None:
    for name, content in layout.items():
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            _write_images(sub, content, counter)
            continue
        for i in range(content):
            counter[0] += 1
            shade = (counter[0] * 37) % 256
            Image.new("RGB", (8, 6), (shade, 255 - shade, 128)).save(sub / f"{i}.png")


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Build an image tree: ``{"cat": 3, "dog": 2}`` or ``{"train": {...}, "test": {...}}``."""

    def make(layout: dict, name: str = "images") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        _write_images(root, layout, [0])
        return root

    return make


@pytest.fixture
def make_text_table(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write ``content`` (text as UTF-8, or raw bytes) to ``tmp_path / name``."""

    def make(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return make


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's feature cache."""
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
