"""Image sources: class folders and loose files, every image decoded once up front.

Opening every file before any model work means a corrupt JPEG costs the user one
warning naming it, not a crash an hour into training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from headstart.data.samples import DataIssue, LabelledData, report_issues, sorted_classes
from headstart.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "ImageFolder", "load_image"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
SPLIT_NAMES = ("train", "val", "test")


# --- decoding ------------------------------------------------------------------------------

def _to_uint8(array: np.ndarray, full_scale: float) -> Image.Image:
    """Scale a one-channel array whose maximum possible value is ``full_scale`` to 8 bits."""
    scaled = np.clip(array.astype(np.float64) * (255.0 / full_scale), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Convert 16-bit, 32-bit integer and float images by scaling, not clipping."""
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            return _to_uint8(array, 1.0)
        return _to_uint8(array - low, max(high - low, 1e-12))
    if image.mode.startswith("I;16"):
        return _to_uint8(array, 65535.0)
    low, high = int(array.min()), int(array.max())  # mode "I": guess the bit depth
    if low >= 0 and high <= 255:
        return _to_uint8(array, 255.0)
    if low >= 0 and high <= 65535:
        return _to_uint8(array, 65535.0)
    return _to_uint8(array - low, max(high - low, 1))


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA")
    if has_alpha or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode == "F" or mode == "I" or mode.startswith("I;16"):
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open any supported image as upright 8-bit RGB, the form every backbone expects.

    EXIF orientation is applied, transparency is composited onto white, 16-bit and
    float images are scaled down (not clipped), and an animated GIF gives its first frame.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
            return rgb.copy() if rgb is image else rgb
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (cannot identify image)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large ({exc})") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise DataError(f"{path}: truncated image") from None
        raise DataError(f"{path}: unreadable image ({exc})") from None
    except (ValueError, SyntaxError, EOFError) as exc:  # raised by some broken decoders
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _problem(path: str) -> str | None:
    try:
        load_image(path)
    except DataError as exc:
        return str(exc)[len(path) + 2:]
    return None


def _validate(paths: list[str], workers: int) -> tuple[list[str], list[DataIssue]]:
    """Decode every image in a thread pool; return the readable ones and the issues."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(_problem, paths))
    good = [p for p, problem in zip(paths, problems) if problem is None]
    issues = [DataIssue(p, problem) for p, problem in zip(paths, problems) if problem is not None]
    return good, issues


# --- finding files -------------------------------------------------------------------------

def _image_files(folder: Path) -> list[str]:
    """All image files under ``folder`` (recursively), hidden files and folders excluded."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(os.path.abspath(dirpath), name)
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(path)
            else:
                logger.debug("ignoring %s: not an image extension", path)
    return found


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise DataError(f"{root} does not exist; check the path to the image folder.")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds one sub-folder "
                        "per class, or use ImageFiles for single images.")


def _read_class_tree(root: Path) -> dict[str, list[str]]:
    """Map each class (sub-folder name) to its image files, before validation."""
    folders = _class_folders(root)
    if not folders:
        raise DataError(
            f"{root} has no class sub-folders: put the images of each class in their own "
            f"folder, e.g. {root}/cat/1.jpg"
        )
    return {folder.name: _image_files(folder) for folder in folders}


def _build(source: Path, files: dict[str, list[str]], good: set[str],
           classes: list[str]) -> LabelledData:
    items = [p for name in sorted_classes(files) for p in files[name] if p in good]
    index = {p: name for name in files for p in files[name]}
    return LabelledData("image", items, [index[p] for p in items], classes=classes,
                        source=str(source))


def _read_trees(root: Path) -> dict[str, dict[str, list[str]]]:
    """Class trees keyed by split name ("train", "val", "test"), or by "" without splits."""
    present = [name for name in SPLIT_NAMES if (root / name).is_dir()]
    if not present:
        return {"": _read_class_tree(root)}
    if "train" not in present:
        raise DataError(f"{root} has {' and '.join(n + '/' for n in present)} but no train/ "
                        "folder; add train/, or point at a folder of class sub-folders.")
    others = [p.name for p in _class_folders(root) if p.name not in SPLIT_NAMES]
    if others:
        logger.warning("%s: ignoring folders beside train/: %s", root, ", ".join(others))
    return {name: _read_class_tree(root / name) for name in present}


def _check_classes(root: Path, trees: dict[str, dict[str, list[str]]], good: set[str]) -> list[str]:
    """Refuse empty classes, classes missing from train/, and fewer than two classes."""
    for part, tree in trees.items():
        for name, paths in tree.items():
            if not any(p in good for p in paths):
                note = f" ({len(paths)} unreadable)" if paths else ""
                raise DataError(f"class '{name}' ({root / part / name}) has no readable "
                                f"images{note}; add images or remove the folder.")
    for part in [name for name in trees if name not in ("", "train")]:
        extra = sorted_classes(set(trees[part]) - set(trees["train"]))
        if extra:
            raise DataError(
                f"class '{extra[0]}' is in {root / part} but not in {root / 'train'}; "
                "the model cannot learn a class it never sees: add its training images."
            )
    classes = sorted_classes(name for tree in trees.values() for name in tree)
    if len(classes) < 2:
        raise DataError(f"{root} needs at least 2 classes, found {len(classes)}: "
                        f"{', '.join(repr(c) for c in classes)}; add a folder for each class.")
    return classes


def ImageFolder(root: str | os.PathLike[str], *, strict: bool = False, min_per_class: int = 1,
                workers: int = 4) -> LabelledData:
    """Read a folder with one sub-folder of images per class (class = folder name).

    If ``root`` holds ``train/`` (and optionally ``val/``, ``test/``), each is read as its
    own class tree and kept in ``splits``. Unreadable images are skipped with one warning,
    or raise :class:`DataError` when ``strict``. ``workers`` threads decode the images.
    """
    root = Path(root).expanduser()
    _check_folder(root)
    trees = _read_trees(root)
    all_files = [p for tree in trees.values() for paths in tree.values() for p in paths]
    good_list, issues = _validate(all_files, workers)
    report_issues(issues, str(root), "images", strict)
    good = set(good_list)
    classes = _check_classes(root, trees, good)

    parts = {name: _build(root / name, tree, good, classes) for name, tree in trees.items()}
    items = [p for part in parts.values() for p in part.items]
    labels = [label for part in parts.values() for label in (part.labels or [])]
    splits = {} if "" in parts else parts
    data = LabelledData("image", items, labels, classes=classes, skipped=issues,
                        splits=splits, source=str(root))
    _check_min_per_class(data, min_per_class)
    logger.info("%s: %d images in %d classes", root, len(data), len(classes))
    return data


def _check_min_per_class(data: LabelledData, min_per_class: int) -> None:
    for name, count in data.class_counts().items():
        if count < min_per_class:
            raise DataError(
                f"class '{name}' in {data.source} has {count} readable "
                f"sample{'s' if count != 1 else ''}, fewer than the {min_per_class} required; "
                "add samples or lower `min_per_class`."
            )


def ImageFiles(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               strict: bool = False, workers: int = 4) -> LabelledData:
    """Collect unlabelled images (files, or folders searched recursively) for prediction."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    for entry in (Path(p).expanduser() for p in paths):
        if entry.is_dir():
            found.extend(_image_files(entry))
        elif entry.is_file():
            found.append(os.path.abspath(entry))
        else:
            raise DataError(f"{entry} does not exist; check the image path.")
    found = list(dict.fromkeys(found))
    source = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    if not found:
        raise DataError(f"no images found in {source}; supported extensions: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    good, issues = _validate(found, workers)
    report_issues(issues, source, "images", strict)
    if not good:
        raise DataError(f"no readable images in {source}; all {len(found)} were unusable.")
    return LabelledData("image", good, None, skipped=issues, source=source)
