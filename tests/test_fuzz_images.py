"""Property tests: no mangled image file makes reading crash.

Whatever the bytes of a file with an image extension (truncated, bytes flipped, random, empty,
a valid header over a garbage body), ``ImageFolder`` and ``ImageFiles`` either read cleanly,
keeping every good file and reporting every other one as skipped, or raise a HeadstartError;
``load_image`` returns RGB or raises DataError. PIL's DecompressionBombWarning never escapes.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from headstart.data import ImageFiles, ImageFolder, load_image
from headstart.errors import DataError, HeadstartError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about damage it survives

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def valid_bytes(fmt: str) -> bytes:
    """A small, valid 16x12 image in ``fmt``: noise, so every byte of the body matters.

    The JPEG carries EXIF (camera make, orientation 6: shown rotated to 12x16, a date in a
    sub-IFD), so damage reaches PIL's EXIF parser and the transpose that rewrites it.
    """
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F], exif[0x0112], exif[0x8769] = "Camera", 6, {0x9003: "2020:01:01 00:00:00"}
    Image.fromarray(pixels).save(buffer, fmt, **({"exif": exif} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@st.composite
def mangled(draw) -> tuple[str, bytes]:
    """An image extension and bytes: a valid image of that format, damaged one of several ways."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    data = valid_bytes(fmt)
    how = draw(st.sampled_from(["truncate", "flip", "flip_header", "random", "empty", "garbage_body"]))
    if how == "truncate":
        data = data[:draw(st.integers(1, len(data) - 1))]
    elif how.startswith("flip"):  # flip_header: within the first 160 bytes (headers, EXIF)
        body = bytearray(data)
        last = min(len(data), 160) - 1 if how == "flip_header" else len(data) - 1
        for position in draw(st.lists(st.integers(0, last), min_size=1, max_size=8)):
            body[position] ^= draw(st.integers(1, 255))
        data = bytes(body)
    elif how == "random":
        data = draw(st.binary(min_size=1, max_size=300))
    elif how == "empty":
        data = b""
    else:
        header = draw(st.integers(8, 60))
        data = data[:header] + draw(st.binary(min_size=0, max_size=300))
    return FORMATS[fmt], data


def _write_tree(root: Path, files: list[tuple[str, bytes]]) -> tuple[set[str], set[str], set[str]]:
    """Two classes of two good images each, plus the mangled files spread over them.

    Returns the good paths, the empty (surely unusable) paths and all paths.
    """
    good, empty, every = set(), set(), set()
    for index, name in enumerate(["a", "b"] * 2):
        (root / name).mkdir(exist_ok=True)
        path = root / name / f"good{index}.png"
        path.write_bytes(valid_bytes("PNG"))
        good.add(str(path))
    for index, (suffix, data) in enumerate(files):
        path = root / ("a", "b")[index % 2] / f"m{index}{suffix}"
        path.write_bytes(data)
        (empty if not data else every).add(str(path))
    return good, empty, every | good | empty


def _check_read(data, good: set[str], empty: set[str], every: set[str]) -> None:
    kept, skipped = set(data.items), {issue.location for issue in data.skipped}
    assert good <= kept and empty <= skipped
    assert kept | skipped == every and not kept & skipped
    if data.labels is not None:
        assert data.class_counts() == {name: sum(f"/{name}/" in p for p in kept) for name in data.classes}


@FUZZ
@given(files=st.lists(mangled(), min_size=1, max_size=6), strict=st.booleans())
def test_image_folder_reads_cleanly_or_raises_a_headstart_error(files, strict):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = Path(tmp)
        good, empty, every = _write_tree(root, files)
        try:
            data = ImageFolder(root, strict=strict, workers=2)
        except HeadstartError:
            assert strict  # two good images per class: only strict may refuse
        else:
            _check_read(data, good, empty, every)
        try:
            found = ImageFiles([root / "a", root / "b"], strict=strict, workers=2)
        except HeadstartError:
            assert strict
        else:
            _check_read(found, good, empty, every)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@FUZZ
@given(file=mangled(), size_hint=st.sampled_from([None, 1, 4, 64]))
def test_load_image_returns_rgb_or_raises_data_error(file, size_hint):
    suffix, data = file
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp, f"x{suffix}")
        path.write_bytes(data)
        try:
            image = load_image(path, size_hint=size_hint)
        except DataError as error:
            assert str(error).startswith(f"{path}: ")
        else:
            assert image.mode == "RGB" and min(image.size) >= 1
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def _damaged_exif(flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(valid_bytes("JPEG"))
    start = data.index(b"Exif")
    for offset, mask in flips:
        data[start + offset] ^= mask
    return bytes(data)


def _raw_pil_error(data: bytes) -> type[Exception] | None:
    """What PIL itself raises opening, decoding and turning upright these bytes, if anything."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:  # noqa: BLE001 - the point is to see which kind
        return type(error)
    return None


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 255)), min_size=1, max_size=6))
def test_damaged_exif_raises_only_data_error(flips, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "exif.jpg"
    path.write_bytes(_damaged_exif(flips))
    try:
        assert sorted(load_image(path).size) == [12, 16]
    except DataError:
        pass


@pytest.mark.parametrize("flip", [(17, 5), (17, 16), (19, 9)], ids=["struct.error", "TypeError", "AttributeError"])
def test_exif_damage_that_breaks_pils_parser_is_a_data_error(flip, tmp_path):
    """Found by fuzzing: a flipped IFD type byte makes PIL raise neither OSError nor ValueError."""
    data = _damaged_exif([flip])
    raised = _raw_pil_error(data)
    if raised is None or issubclass(raised, (OSError, ValueError)):
        pytest.skip(f"this PIL version handles the damage itself ({raised})")
    (tmp_path / "x.jpg").write_bytes(data)
    with pytest.raises(DataError, match=r"x\.jpg: unreadable image"):
        load_image(tmp_path / "x.jpg")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_unmangled_images_are_read(fmt, tmp_path):
    """The property tests' baseline: each format's valid image loads at its true size."""
    path = tmp_path / f"x{FORMATS[fmt]}"
    path.write_bytes(valid_bytes(fmt))
    assert load_image(path).size == ((12, 16) if fmt == "JPEG" else (16, 12))
