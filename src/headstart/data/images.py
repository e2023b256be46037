"""Image sources: class folders, loose files and tables of image paths, every image checked once up front.

Opening every file before any model work (its header, then a decode at the smallest scale
the format allows) means a corrupt JPEG, a decompression bomb or a symlink loop costs the
user one warning naming it, not a crash or an endless walk an hour into training.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image

from headstart.data.samples import DEFAULT_MAX_PIXELS, DataIssue, LabelledData, report_issues, sorted_classes
from headstart.errors import ConfigError, DataError
from headstart.imaging import decode_image

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageFiles", "ImageFolder", "ImageTable", "load_image",
           "median_shorter_side"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
SPLIT_NAMES = ("train", "val", "test")
_CHECK_SIZE = 1  # validation decodes as small as a format allows: it needs the errors, not the pixels


# --- decoding ------------------------------------------------------------------------------

def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def _over_cap(path: str, width: int, height: int, cap: int) -> str:
    return (f"{path}: {width}x{height} = {_megapixels(width * height)} is over the "
            f"{_megapixels(cap)} limit; raise it with --max-pixels (max_pixels in Python)")


def _pixel_cap(max_pixels: int | None) -> int | None:
    """The cap as a positive pixel count, or None for no cap (``None`` or 0)."""
    if max_pixels is None or max_pixels == 0:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0:
        raise ConfigError(f"max_pixels must be a whole number of pixels (0 or None for no limit). "
                          f"Got {max_pixels!r} instead.")
    return max_pixels


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               size_hint: int | None = None) -> Image.Image:
    """Open any supported image as upright 8-bit RGB, the form every backbone expects.

    EXIF orientation is applied, transparency is composited onto white, 16-bit and
    float images are scaled down (not clipped), and an animated GIF gives its first frame.
    An image over ``max_pixels`` (None or 0: no cap) is refused from its header, before
    decoding. With ``size_hint`` the image may come back smaller by a whole factor, its
    shorter side never below the hint: a JPEG is decoded at 1/2 to 1/8 scale, others are
    reduced when 2x larger. Any unusable file raises :class:`DataError` naming it.
    """
    return decode_image(os.fspath(path), cap=_pixel_cap(max_pixels), over_cap=_over_cap, size_hint=size_hint)


def median_shorter_side(paths: Sequence[str], sample: int = 200, seed: int = 0) -> float | None:
    """The median of the images' shorter sides in pixels, from the headers of at most ``sample`` of them
    (drawn with ``seed``): what the photos hold, against what a backbone's input asks for. None when no
    file's header can be read."""
    picked = random.Random(seed).sample(list(paths), sample) if len(paths) > sample else list(paths)
    sides = []
    for path in picked:
        try:
            with Image.open(path) as header:
                sides.append(min(header.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # the reader reported it when the data was opened
    return float(sorted(sides)[len(sides) // 2]) if sides else None


def _problem(path: str, cap: int | None) -> str | None:
    """Why ``path`` is unusable, or None: its header, then a decode at the smallest scale, are checked."""
    try:
        decode_image(path, cap=cap, over_cap=_over_cap, size_hint=_CHECK_SIZE, exact=False)
    except DataError as exc:
        return str(exc)[len(path) + 2:]
    return None


def _validate(paths: list[str], workers: int, cap: int | None) -> tuple[list[str], list[DataIssue]]:
    """Decode every image in a thread pool; return the readable ones and the issues."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(partial(_problem, cap=cap), paths))
    good = [p for p, problem in zip(paths, problems) if problem is None]
    issues = [DataIssue(p, problem) for p, problem in zip(paths, problems) if problem is not None]
    return good, issues


# --- finding files -------------------------------------------------------------------------

def _within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """Finds the image files under one data root, following only symlinks that stay inside it.

    ``os.walk(followlinks=True)`` would loop on a link to an ancestor and read a linked class
    twice, so links are resolved here one by one. Folders read whole (class folders, then the
    targets of followed links) are claimed by real path; a folder link is followed only when its
    target is inside the root, holds no part of its own path (a cycle) and overlaps no claimed
    folder, so no image is read twice and no link becomes a copy of a class. Every link not
    followed is kept as a skipped-file issue naming it.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.claimed: list[str] = []
        self.issues: list[DataIssue] = []

    def _skip(self, path: str, problem: str) -> None:
        self.issues.append(DataIssue(path, problem))

    def _link_problem(self, link: str) -> str | None:
        target = os.path.realpath(link)
        if not os.path.exists(target):
            return f"broken link to {target}"
        if not _within(target, self.root):
            return f"link to {target}, outside {self.root}; not followed"
        if os.path.isdir(target) and _within(os.path.realpath(os.path.dirname(link)), target):
            return f"link to {target}, a folder holding the link itself (a cycle); not followed"
        return None

    def select(self, folders: list[Path], taken: list[str]) -> list[Path]:
        """The folders to read, real ones before links; each must overlap none in ``taken``."""
        kept = []
        for folder in sorted(folders, key=lambda f: (f.is_symlink(), f)):
            path, target = os.path.abspath(folder), os.path.realpath(folder)
            problem = self._link_problem(path) if folder.is_symlink() else None
            if problem is None and any(_within(target, t) or _within(t, target) for t in taken):
                problem = f"leads to {target}, a folder read already; not followed"
            if problem is None:
                taken.append(target)
                kept.append(folder)
            else:
                self._skip(path, problem)
        return sorted(kept)

    def skipped_note(self) -> str:
        """The links skipped so far, for an error that their skipping caused."""
        return f" (skipped {'; '.join(str(issue) for issue in self.issues)})" if self.issues else ""

    def _unreadable(self, error: OSError) -> None:
        self._skip(str(error.filename), f"cannot list the folder ({error.strerror or error})")

    def _wanted(self, path: str) -> bool:
        if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            logger.debug("ignoring %s: not an image extension", path)
            return False
        problem = self._link_problem(path) if os.path.islink(path) else None
        if problem is not None:
            self._skip(path, problem)
        return problem is None

    def files(self, folder: Path) -> list[str]:
        """Image files under a claimed ``folder``, recursively, hidden files and folders excluded."""
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder, onerror=self._unreadable):
            dirpath = os.path.abspath(dirpath)
            paths = [os.path.join(dirpath, n) for n in sorted(filenames) if not n.startswith(".")]
            found.extend(p for p in paths if self._wanted(p))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            links = [Path(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in links]
            for link in self.select(links, self.claimed):
                found.extend(self.files(link))
        return found


def _class_folders(root: Path) -> list[Path]:
    """Visible sub-folders, links to folders and broken links (reported when read) of ``root``."""
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or (p.is_symlink() and not p.exists())))


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise DataError(f"{root} does not exist; check the path to the image folder.")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds one sub-folder "
                        "per class, or use ImageFiles for single images.")


def _build(source: Path, files: dict[str, list[str]], good: set[str],
           classes: list[str], max_pixels: int | None) -> LabelledData:
    items = [p for name in sorted_classes(files) for p in files[name] if p in good]
    index = {p: name for name in files for p in files[name]}
    return LabelledData("image", items, [index[p] for p in items], classes=classes,
                        source=str(source), max_pixels=max_pixels)


def _split_parts(root: Path, walk: _Walk) -> dict[str, Path]:
    """The folders holding class trees: train/, val/, test/ when present (no two the same), else root."""
    present = [root / name for name in SPLIT_NAMES if (root / name).is_dir()]
    if not present:
        return {"": root}
    kept = {part.name: part for part in walk.select(present, [])}
    if "train" not in kept:
        have = " and ".join(name + "/" for name in kept) or "no usable split folder"
        raise DataError(f"{root} has {have} but no train/ folder{walk.skipped_note()}; add train/, "
                        "or point at a folder of class sub-folders.")
    others = [p.name for p in _class_folders(root) if p.name not in SPLIT_NAMES]
    if others:
        logger.warning("%s: ignoring folders beside train/: %s", root, ", ".join(others))
    return {name: kept[name] for name in SPLIT_NAMES if name in kept}


def _read_trees(root: Path, walk: _Walk) -> dict[str, dict[str, list[str]]]:
    """Class trees (class -> image files, before validation) keyed by split name, or by "" without splits.

    Every split's class folders are claimed before any is read, so a link inside one class
    can never take over another class's real folder.
    """
    parts = _split_parts(root, walk)
    folders = walk.select([f for part in parts.values() for f in _class_folders(part)], walk.claimed)
    trees = {}
    for name, part in parts.items():
        classes = [folder for folder in folders if folder.parent == part]
        if not classes:
            raise DataError(f"{part} has no class sub-folders{walk.skipped_note()}: put the images of "
                            f"each class in their own folder, e.g. {part}/cat/1.jpg")
        trees[name] = {folder.name: walk.files(folder) for folder in classes}
    return trees


def _check_classes(root: Path, trees: dict[str, dict[str, list[str]]], good: set[str],
                   issues: list[DataIssue], min_classes: int) -> list[str]:
    """Refuse empty classes (naming the first file skipped in one, e.g. a link that was not
    followed), classes missing from train/, and fewer than ``min_classes`` classes."""
    for part, tree in trees.items():
        for name, paths in tree.items():
            if not any(p in good for p in paths):
                note = f" ({len(paths)} unreadable)" if paths else ""
                folder = os.path.abspath(root / part / name)
                skipped = [issue for issue in issues if _within(os.path.abspath(issue.location), folder)]
                if skipped:
                    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
                    note += f"; skipped {skipped[0]}{more}"
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
    if len(classes) < min_classes:
        raise DataError(f"{root} needs at least {min_classes} classes, found {len(classes)}: "
                        f"{', '.join(repr(c) for c in classes)}; add a folder for each class.")
    return classes


def ImageFolder(root: str | os.PathLike[str], *, strict: bool = False, min_per_class: int = 1,
                workers: int = 4, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_classes: int = 2) -> LabelledData:
    """Read a folder with one sub-folder of images per class (class = folder name).

    If ``root`` holds ``train/`` (and optionally ``val/``, ``test/``), each is read as its
    own class tree and kept in ``splits``. Unreadable images, images over ``max_pixels``
    (None or 0: no cap) and symlinks leading outside ``root`` or back into folders read
    already are skipped with one warning, or raise :class:`DataError` when ``strict``.
    ``workers`` threads check the images. Give the loaders the same ``max_pixels``.
    ``min_classes``: 2 to train on; 1 to score a model on new images of one class.
    """
    root = Path(root).expanduser()
    cap = _pixel_cap(max_pixels)
    _check_folder(root)
    walk = _Walk(root)
    trees = _read_trees(root, walk)
    all_files = [p for tree in trees.values() for paths in tree.values() for p in paths]
    good_list, unreadable = _validate(all_files, workers, cap)
    issues = walk.issues + unreadable
    report_issues(issues, str(root), "images", strict)
    good = set(good_list)
    classes = _check_classes(root, trees, good, issues, min_classes)

    parts = {name: _build(root / name, tree, good, classes, max_pixels) for name, tree in trees.items()}
    items = [p for part in parts.values() for p in part.items]
    labels = [label for part in parts.values() for label in (part.labels or [])]
    splits = {} if "" in parts else parts
    data = LabelledData("image", items, labels, classes=classes, skipped=issues,
                        splits=splits, source=str(root), max_pixels=max_pixels)
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


def _listed_files(entries: list[Path]) -> tuple[list[str], list[DataIssue]]:
    """The files named, and the images under the folders named, each folder its own data root."""
    found: list[str] = []
    issues: list[DataIssue] = []
    for entry in entries:
        if entry.is_dir():
            walk = _Walk(entry)
            walk.claimed.append(walk.root)
            found.extend(walk.files(entry))
            issues.extend(walk.issues)
        elif entry.exists():  # named by the caller: read whatever it is, load_image judges it
            found.append(os.path.abspath(entry))
        else:
            raise DataError(f"{entry} does not exist; check the image path.")
    return list(dict.fromkeys(found)), issues


def ImageFiles(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               strict: bool = False, workers: int = 4,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LabelledData:
    """Collect unlabelled images (files, or folders searched recursively) for prediction.

    Skips what :func:`ImageFolder` skips; give the loaders the same ``max_pixels``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    cap = _pixel_cap(max_pixels)
    found, issues = _listed_files([Path(p).expanduser() for p in paths])
    source = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    if not found:
        raise DataError(f"no images found in {source}; supported extensions: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    good, unreadable = _validate(found, workers, cap)
    issues += unreadable
    report_issues(issues, source, "images", strict)
    if not good:
        raise DataError(f"no readable images in {source}; all {len(found)} were unusable.")
    return LabelledData("image", good, None, skipped=issues, source=source, max_pixels=max_pixels)


def ImageTable(path: str | os.PathLike[str], *, image: str = "image", label: str | None = "label",
               strict: bool = False, min_per_class: int = 1, workers: int = 4,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, sep: str | None = None, encoding: str | None = None,
               skip_bad_rows: bool = False, min_classes: int = 2) -> LabelledData:
    """Read a table (CSV, TSV, JSONL) whose ``image`` column holds image paths, absolute or
    relative to the table's folder, and whose ``label`` column their classes (``label=None``:
    images to predict). The table is read as :func:`~headstart.data.TextTable` reads one;
    rows naming a missing file, and unreadable images, are skipped with one warning naming
    them (table line, path), or raise :class:`DataError` when ``strict``.
    """
    from headstart.data.text import TextTable

    path = Path(path).expanduser()
    rows = TextTable(path, text=image, label=label, strict=strict, sep=sep, encoding=encoding,
                     skip_bad_rows=skip_bad_rows, min_classes=min_classes)
    folder = path.resolve().parent
    files = [os.path.abspath(folder / Path(item).expanduser()) for item in rows.items]
    missing = [DataIssue(line, f"{file} does not exist") for line, file in zip(rows.locations, files)
               if not os.path.isfile(file)]
    readable, unreadable = _validate([f for f in dict.fromkeys(files) if os.path.isfile(f)], workers,
                                     _pixel_cap(max_pixels))
    issues = missing + unreadable
    report_issues(issues, str(path), "images", strict)
    good = set(readable)
    keep = [i for i, file in enumerate(files) if file in good]
    if not keep:
        raise DataError(f"{path}: none of its {len(files)} image paths is a readable image; paths are read "
                        f"relative to {folder}.")
    labels = None if rows.labels is None else [rows.labels[i] for i in keep]
    data = LabelledData("image", [files[i] for i in keep], labels, classes=rows.classes or None,
                        skipped=rows.skipped + issues, source=str(path), label_reading=rows.label_reading,
                        max_pixels=max_pixels)
    if labels is not None:
        for name, count in data.class_counts().items():
            if count == 0:
                raise DataError(f"class '{name}' in {path} has no readable images left; fix its rows or remove them.")
        _check_min_per_class(data, min_per_class)
    logger.info("%s: %d images in %d classes", path, len(data), len(data.classes))
    return data
