"""Image sources: decoding every mode, validation, folder layouts and transforms."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.contract import InputContract
from headstart.data import (
    IMAGE_EXTENSIONS,
    DataIssue,
    ImageFiles,
    ImageFolder,
    LabelledData,
    image_transform,
    load_image,
)
from headstart.errors import ConfigError, DataError

# --- load_image: every mode becomes upright 8-bit RGB ---------------------------------------


def _loaded(path: Path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_grayscale_is_converted_to_rgb(tmp_path):
    Image.new("L", (4, 4), 200).save(tmp_path / "g.png")
    assert (_loaded(tmp_path / "g.png") == 200).all()


def test_palette_with_transparency_is_composited_onto_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=0)
    pixels = _loaded(tmp_path / "p.png")
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 255]


def test_rgba_is_composited_onto_white(tmp_path):
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    image.save(tmp_path / "a.png")
    pixels = _loaded(tmp_path / "a.png")
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [10, 20, 30]


def test_grayscale_with_alpha_is_composited_onto_white(tmp_path):
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    assert (_loaded(tmp_path / "la.png") == 255).all()


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert (_loaded(tmp_path / "c.jpg") > 250).all()


def test_16_bit_is_scaled_to_8_bit_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert _loaded(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 128, 255]


def test_float_image_is_scaled_to_8_bit(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tiff")
    assert _loaded(tmp_path / "f.tiff")[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("suffix", [".webp", ".bmp"])
def test_webp_and_bmp_are_read(tmp_path, suffix):
    Image.new("RGB", (5, 3), (0, 200, 0)).save(tmp_path / f"x{suffix}", lossless=True)
    pixels = _loaded(tmp_path / f"x{suffix}")
    assert pixels.shape == (3, 5, 3) and pixels[0, 0].tolist() == [0, 200, 0]


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert _loaded(tmp_path / "anim.gif")[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (20, 10), (90, 90, 90)).save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").size == (10, 20)


def test_unreadable_file_raises_data_error_naming_it(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"bad\.jpg: not an image file"):
        load_image(tmp_path / "bad.jpg")


# --- ImageFolder: validation -----------------------------------------------------------------


def _add_broken_images(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    (folder / "random.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noise.save(folder / "whole.jpg", quality=95)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "half.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("hello, I am not a picture")
    return ["random.jpg", "half.jpg", "text.png"]


def test_corrupt_truncated_and_fake_images_are_skipped_with_one_warning(make_image_folder, caplog):
    root = make_image_folder({"cat": 3, "dog": 3})
    broken = _add_broken_images(root / "cat")
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = ImageFolder(root)
    assert len(data) == 6
    assert sorted(Path(i.location).name for i in data.skipped) == sorted(broken)
    problems = {Path(i.location).name: i.problem for i in data.skipped}
    assert problems["half.jpg"] == "truncated image"
    assert problems["text.png"] == "not an image file (cannot identify image)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 unusable images" in warnings[0].getMessage()
    assert all(name in warnings[0].getMessage() for name in broken)


def test_strict_raises_listing_every_unreadable_image(make_image_folder):
    root = make_image_folder({"cat": 3, "dog": 3})
    broken = _add_broken_images(root / "dog")
    with pytest.raises(DataError, match="3 unusable images") as error:
        ImageFolder(root, strict=True)
    assert all(name in str(error.value) for name in broken)


def test_labels_follow_folders_and_items_are_absolute_paths(make_image_folder):
    data = ImageFolder(make_image_folder({"dog": 2, "cat": 3}))
    assert isinstance(data, LabelledData) and data.modality == "image"
    assert data.classes == ["cat", "dog"]
    assert data.class_counts() == {"cat": 3, "dog": 2}
    assert data.y.tolist() == [0, 0, 0, 1, 1]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.items)
    assert data.locations == data.items and data.splits == {}


def test_other_files_hidden_files_are_ignored_and_subfolders_are_read(make_image_folder):
    root = make_image_folder({"cat": 2, "dog": 2, ".cache": 1})
    (root / "cat" / "notes.txt").write_text("not an image")
    Image.new("RGB", (4, 4)).save(root / "cat" / ".hidden.png")
    (root / "cat" / "deeper").mkdir()
    Image.new("RGB", (4, 4)).save(root / "cat" / "deeper" / "x.JPG")
    data = ImageFolder(root)
    assert data.class_counts() == {"cat": 3, "dog": 2}
    assert data.skipped == []
    assert ".jpg" in IMAGE_EXTENSIONS


def test_empty_class_folder_is_an_error(make_image_folder):
    root = make_image_folder({"daisy": 2, "rose": 2})
    (root / "tulip").mkdir()
    with pytest.raises(DataError, match=r"class 'tulip' \(.*tulip\) has no readable images"):
        ImageFolder(root)


def test_class_with_only_unreadable_images_is_an_error(make_image_folder):
    root = make_image_folder({"daisy": 2, "rose": 2})
    (root / "tulip").mkdir()
    (root / "tulip" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="class 'tulip' .* has no readable images"):
        ImageFolder(root)


def test_single_class_is_an_error(make_image_folder):
    with pytest.raises(DataError, match="needs at least 2 classes, found 1: 'daisy'"):
        ImageFolder(make_image_folder({"daisy": 3}))


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")


def test_root_without_class_folders_is_an_error(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "1.png")
    with pytest.raises(DataError, match="has no class sub-folders: put the images of each class"):
        ImageFolder(tmp_path)


def test_fewer_than_min_per_class_is_an_error(make_image_folder):
    root = make_image_folder({"cat": 3, "dog": 1})
    with pytest.raises(DataError, match="class 'dog' .* has 1 readable sample, fewer than the 2"):
        ImageFolder(root, min_per_class=2)


def test_predefined_train_test_folders_are_used_as_given(make_image_folder):
    root = make_image_folder({"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    data = ImageFolder(root)
    assert len(data) == 7 and set(data.splits) == {"train", "test"}
    train, test = data.split(test=0.5, seed=3)
    assert len(train) == 5 and len(test) == 2
    assert all("/test/" in p for p in test.items)
    assert train.classes == test.classes == ["cat", "dog"]
    with pytest.raises(DataError, match="has train/ and test/ but no val/ folder"):
        data.split(val=0.1)


def test_predefined_val_folder_gives_three_parts(make_image_folder):
    root = make_image_folder({"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1},
                              "test": {"a": 1, "b": 1}})
    train, val, test = ImageFolder(root).split(val=0.2)
    assert (len(train), len(val), len(test)) == (4, 2, 2)


def test_class_only_in_test_is_an_error(make_image_folder):
    root = make_image_folder({"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "owl": 1}})
    with pytest.raises(DataError, match="class 'owl' is in .*test but not in .*train"):
        ImageFolder(root)


def test_test_folder_without_train_is_an_error(make_image_folder):
    root = make_image_folder({"test": {"cat": 1, "dog": 1}})
    with pytest.raises(DataError, match="no train/ folder"):
        ImageFolder(root)


# --- ImageFiles ------------------------------------------------------------------------------


def test_image_files_reads_a_flat_folder_unlabelled(tmp_path):
    for i in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    data = ImageFiles(tmp_path)
    assert len(data) == 3 and data.labels is None and data.classes == []
    assert [i.problem for i in data.skipped] == ["not an image file (cannot identify image)"]
    with pytest.raises(DataError, match="has no labels"):
        data.y


def test_image_files_accepts_a_list_of_files_and_folders(make_image_folder):
    root = make_image_folder({"a": 2, "b": 1})
    data = ImageFiles([root / "a", root / "b" / "0.png", root / "a" / "0.png"])
    assert len(data) == 3


def test_image_files_with_nothing_found_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        ImageFiles(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        ImageFiles(tmp_path / "missing.jpg")


# --- image_transform -------------------------------------------------------------------------

CONTRACT = InputContract(modality="image", feature_dim=8, input_size=32, crop_pct=1.0,
                         interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_image_transform_resizes_and_normalises_with_the_contract():
    transform = image_transform(CONTRACT)
    white = transform(Image.new("RGB", (50, 40), (255, 255, 255)))
    black = transform(Image.new("RGB", (50, 40), (0, 0, 0)))
    assert white.shape == (3, 32, 32) and white.dtype == torch.float32
    assert torch.allclose(white, torch.ones_like(white))
    assert torch.allclose(black, -torch.ones_like(black))


def test_training_transform_gives_the_same_shape_and_accepts_grayscale():
    tensor = image_transform(CONTRACT, train=True)(Image.new("L", (64, 48), 128))
    assert tensor.shape == (3, 32, 32)


def test_image_transform_rejects_a_text_contract():
    text = InputContract(modality="text", feature_dim=8, tokenizer="x", max_length=16)
    with pytest.raises(ConfigError, match="needs an image contract"):
        image_transform(text)


def test_data_issue_reads_as_location_and_problem():
    assert str(DataIssue("reviews.csv:12", "empty text")) == "reviews.csv:12: empty text"


# --- symlinks: followed only inside the root, never into a cycle or a copy of a class --------------


def _skipped(data: LabelledData) -> dict[str, str]:
    return {Path(issue.location).name: issue.problem for issue in data.skipped}


def test_links_to_folders_and_files_inside_the_root_are_followed(make_image_folder):
    root = make_image_folder({"cat": 2, "dog": 2, ".store": {"bird": 2, "more": 1}})
    (root / "bird").symlink_to(".store/bird")
    (root / "cat" / "extra").symlink_to("../.store/more")
    (root / "cat" / "also.png").symlink_to("../dog/0.png")
    data = ImageFolder(root)
    assert data.class_counts() == {"bird": 2, "cat": 4, "dog": 2}
    assert data.skipped == []
    assert str(root / "cat" / "extra" / "0.png") in data.items


def test_link_to_the_root_or_an_ancestor_is_skipped_naming_it_never_a_class(make_image_folder, caplog):
    root = make_image_folder({"cat": 2, "dog": 2})
    (root / "loop").symlink_to(".")
    (root / "cat" / "up").symlink_to("..")
    (root / "dog" / "self").symlink_to(".")
    with caplog.at_level(logging.WARNING, logger="headstart"):
        data = ImageFolder(root)
    assert data.classes == ["cat", "dog"] and data.class_counts() == {"cat": 2, "dog": 2}
    problems = _skipped(data)
    assert set(problems) == {"loop", "up", "self"}
    assert all("(a cycle); not followed" in problem for problem in problems.values())
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "3 unusable images" in warning and str(root / "loop") in warning
    with pytest.raises(DataError, match="loop: link to .*a cycle"):
        ImageFolder(root, strict=True)


def test_links_leading_outside_the_root_are_skipped(make_image_folder, tmp_path):
    root = make_image_folder({"cat": 2, "dog": 2})
    outside = make_image_folder({"owl": 2}, name="outside")
    (root / "owl").symlink_to(outside / "owl")
    (root / "cat" / "owls").symlink_to(outside / "owl")
    (root / "dog" / "owl.png").symlink_to(outside / "owl" / "0.png")
    (root / "dog" / "gone.png").symlink_to(tmp_path / "missing.png")
    data = ImageFolder(root)
    assert data.class_counts() == {"cat": 2, "dog": 2}
    problems = _skipped(data)
    assert {name for name, problem in problems.items() if ", outside " in problem} == {"owl", "owls", "owl.png"}
    assert problems["gone.png"].startswith("broken link to ")


def test_a_class_of_links_outside_the_root_says_why_it_is_empty(make_image_folder):
    root = make_image_folder({"cat": 2, "dog": 2})
    outside = make_image_folder({"owl": 2}, name="outside")
    (root / "owl").mkdir()
    for name in ("0.png", "1.png"):
        (root / "owl" / name).symlink_to(outside / "owl" / name)
    with pytest.raises(DataError, match=r"class 'owl' .* has no readable images; skipped .*owl.0\.png: link to "
                                        r".*, outside .*; not followed \(and 1 more\); add images"):
        ImageFolder(root)


def test_a_link_to_another_class_is_no_copy_of_it(make_image_folder):
    root = make_image_folder({"cat": 2, "dog": 2})
    (root / "acat").symlink_to("cat")  # sorts before cat: real folders still come first
    (root / "dog" / "cats").symlink_to("../cat")
    data = ImageFolder(root)
    assert data.class_counts() == {"cat": 2, "dog": 2}
    assert set(_skipped(data)) == {"acat", "cats"}
    assert all("a folder read already" in p for p in _skipped(data).values())


def test_a_split_folder_linked_to_another_split_is_skipped(make_image_folder):
    root = make_image_folder({"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    (root / "val").symlink_to("train")
    data = ImageFolder(root)
    assert set(data.splits) == {"train", "test"} and len(data) == 6
    assert set(_skipped(data)) == {"val"}


def test_image_files_skips_a_link_back_into_its_folder(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "again").symlink_to(".")
    data = ImageFiles(tmp_path)
    assert len(data) == 1 and set(_skipped(data)) == {"again"}


# --- the pixel cap: read from the header, before any decoding ---------------------------------


def test_image_over_max_pixels_is_skipped_with_its_size(make_image_folder):
    root = make_image_folder({"cat": 2, "dog": 2})  # 8x6 = 48 pixels each
    Image.new("RGB", (20, 10)).save(root / "cat" / "big.png")
    data = ImageFolder(root, max_pixels=100)
    assert data.class_counts() == {"cat": 2, "dog": 2}
    assert _skipped(data) == {"big.png": "20x10 = 200 pixels is over the 100 pixels limit; "
                                         "raise it with --max-pixels (max_pixels in Python)"}
    assert ImageFolder(root, max_pixels=None).class_counts()["cat"] == 3
    assert ImageFolder(root, max_pixels=0).class_counts()["cat"] == 3
    assert len(ImageFiles(root / "cat", max_pixels=100)) == 2


def test_load_image_applies_the_cap_and_none_or_zero_lift_it(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"x\.png: 20x10 = 200 pixels is over the 199 pixels limit"):
        load_image(tmp_path / "x.png", max_pixels=199)
    assert load_image(tmp_path / "x.png", max_pixels=200).size == (20, 10)
    assert load_image(tmp_path / "x.png", max_pixels=None).size == (20, 10)
    assert load_image(tmp_path / "x.png", max_pixels=0).size == (20, 10)
    with pytest.raises(ConfigError, match="max_pixels must be a whole number"):
        load_image(tmp_path / "x.png", max_pixels=-1)
    with pytest.raises(ConfigError, match="max_pixels must be a whole number"):
        ImageFolder(tmp_path, max_pixels=2.5)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to ``width`` x ``height``."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("name, data, size", [
    ("huge.png", _png_header(100_000, 100_000), "100000x100000 = 10000.0 MP"),
    ("huge.jpg", _jpeg_header(60_000, 50_000), "60000x50000 = 3000.0 MP"),
])
def test_a_huge_header_is_refused_without_decoding_or_a_bomb_warning(tmp_path, monkeypatch, name, data, size):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    (tmp_path / name).write_bytes(data)
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would raise here
        with pytest.raises(DataError, match=f"{name}: {size} is over the 89.5 MP limit; raise it with --max-pixels"):
            load_image(tmp_path / name)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_an_image_past_pils_own_limits_is_read_when_the_cap_allows_it(tmp_path):
    """PIL would warn above 89.5 MP and refuse above 179 MP; with the cap lifted, neither happens."""
    (tmp_path / "wide.jpg").write_bytes(_jpeg_header(10_000, 9_000))
    (tmp_path / "huge.jpg").write_bytes(_jpeg_header(15_000, 15_000))
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "wide.jpg", max_pixels=None, size_hint=1).size == (10, 9)  # 1/8, then 1/125
        assert load_image(tmp_path / "huge.jpg", max_pixels=0, size_hint=1).size == (1, 1)
        assert len(ImageFiles(tmp_path, max_pixels=None)) == 2
    assert Image.MAX_IMAGE_PIXELS == limit


# --- reduced decoding: as small as the transform allows, never smaller ---------------------------


def test_a_jpeg_is_drafted_to_the_smallest_scale_that_keeps_the_hint(tmp_path):
    Image.new("RGB", (800, 600), (10, 120, 200)).save(tmp_path / "x.jpg")
    assert load_image(tmp_path / "x.jpg").size == (800, 600)
    assert load_image(tmp_path / "x.jpg", size_hint=100).size == (200, 150)  # 1/4; 1/8 would be 75 < 100
    assert load_image(tmp_path / "x.jpg", size_hint=75).size == (100, 75)
    assert load_image(tmp_path / "x.jpg", size_hint=400).size == (800, 600)
    Image.new("RGB", (804, 600), (10, 120, 200)).save(tmp_path / "odd.jpg")
    assert load_image(tmp_path / "odd.jpg", size_hint=70).size == (201, 150)  # 1/8 would leave a partial pixel


def test_other_formats_are_reduced_only_when_twice_the_hint(tmp_path):
    Image.new("RGB", (800, 600), (10, 120, 200)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", size_hint=250).size == (400, 300)
    assert load_image(tmp_path / "x.png", size_hint=301).size == (800, 600)
    assert load_image(tmp_path / "x.png", size_hint=90).size == (160, 120)  # 6 does not divide 800: 5


def test_reduced_decoding_barely_changes_the_final_crop(tmp_path):
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    coarse.resize((1600, 1200), Image.BICUBIC).save(tmp_path / "x.jpg", quality=95)
    transform = image_transform(CONTRACT)
    assert transform.size_hint == 32
    reduced = load_image(tmp_path / "x.jpg", size_hint=transform.size_hint)
    assert reduced.size == (100, 75)  # drafted to 1/8 (200x150), reduced by 2: the largest factor dividing both
    difference = (transform(load_image(tmp_path / "x.jpg")) - transform(reduced)).abs().mean() * 0.5 * 255
    assert difference < 1.0  # mean absolute difference of 8-bit pixels


def test_the_transform_size_hint_covers_the_resize_and_the_smallest_training_crop():
    contract = InputContract(modality="image", feature_dim=8, input_size=224, crop_pct=0.875,
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert image_transform(contract).size_hint == 256
    assert image_transform(contract, train=True).size_hint == 915  # 224 / sqrt(0.08 * 3/4)
    assert image_transform(contract, train=True, min_crop=1.0).size_hint == 259


def test_loaders_carry_max_pixels_and_the_transform_size_hint(tmp_path):
    from headstart.data import inference_loader, labelled_loader

    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    loader = inference_loader(CONTRACT, [str(tmp_path / "x.png")], max_pixels=100)
    assert (loader.dataset.max_pixels, loader.dataset.size_hint) == (100, 32)
    with pytest.raises(DataError, match="over the 100 pixels limit"):
        next(iter(loader))
    assert next(iter(inference_loader(CONTRACT, [str(tmp_path / "x.png")], max_pixels=None))).shape == (1, 3, 32, 32)
    data = LabelledData("image", [str(tmp_path / "x.png")] * 2, ["a", "b"], max_pixels=500)
    train = labelled_loader(data, CONTRACT, train=True, batch_size=2)  # the cap the data was read with
    assert (train.dataset.max_pixels, train.dataset.size_hint) == (500, 131)  # 32 / sqrt(0.08 * 3/4)


def test_a_root_holding_only_a_loop_says_why_it_has_no_classes(tmp_path):
    (tmp_path / "loop").symlink_to(".")
    with pytest.raises(DataError, match=r"has no class sub-folders \(skipped .*loop: link to .*a cycle"):
        ImageFolder(tmp_path)


# --- ImageTable: a table of image paths and labels ---------------------------------------------

def _image_table(tmp_path: Path) -> Path:
    """A CSV naming images relative to its folder and by absolute path, one missing, one corrupt."""
    (tmp_path / "pics").mkdir()
    for name, colour in (("r0", "red"), ("r1", "red"), ("b0", "blue"), ("b1", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "pics" / f"{name}.png")
    (tmp_path / "pics" / "broken.png").write_bytes(b"not a png")
    rows = ["image,label", "pics/r0.png,red", f"{tmp_path / 'pics' / 'r1.png'},red", "pics/b0.png,blue",
            "pics/b1.png,blue", "pics/gone.png,blue", "pics/broken.png,red"]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "table.csv"


def test_an_image_table_reads_relative_and_absolute_paths_and_skips_missing_and_broken_images(tmp_path, caplog):
    from headstart.data import ImageTable

    with caplog.at_level(logging.WARNING):
        data = ImageTable(_image_table(tmp_path))
    assert data.modality == "image" and data.classes == ["blue", "red"]
    assert [Path(p).name for p in data.items] == ["r0.png", "r1.png", "b0.png", "b1.png"]
    assert data.labels == ["red", "red", "blue", "blue"] and data.y.tolist() == [1, 1, 0, 0]
    skipped = {issue.location: issue.problem for issue in data.skipped}
    assert "table.csv:6" in " ".join(skipped) and "gone.png does not exist" in " ".join(skipped.values())
    assert any(location.endswith("broken.png") for location in skipped)
    assert "skipped 2 unusable images" in caplog.text
    with pytest.raises(DataError, match="2 unusable images"):
        ImageTable(tmp_path / "table.csv", strict=True)
    unlabelled = ImageTable(tmp_path / "table.csv", label=None)
    assert unlabelled.labels is None and len(unlabelled) == 4


def test_an_image_table_names_its_columns_and_refuses_a_class_left_without_images(tmp_path):
    from headstart.data import ImageTable

    table = _image_table(tmp_path)
    with pytest.raises(DataError, match="no column 'path'; columns are: image, label"):
        ImageTable(table, image="path")
    (tmp_path / "gone.csv").write_text("image,label\npics/r0.png,red\npics/gone.png,blue\n")
    with pytest.raises(DataError, match="class 'blue' .* has no readable images"):
        ImageTable(tmp_path / "gone.csv")
    (tmp_path / "none.csv").write_text("image,label\nnowhere.png,red\nelsewhere.png,blue\n")
    with pytest.raises(DataError, match="none of its 2 image paths is a readable image; paths are read relative to"):
        ImageTable(tmp_path / "none.csv")


def test_modality_reads_a_table_as_images_or_refuses_what_contradicts_it(tmp_path):
    from headstart.data.reading import ReadOptions
    from headstart.data.opening import open_data, open_inputs, open_unlabelled

    table = _image_table(tmp_path)
    assert open_data(table, reading=ReadOptions(modality="image")).modality == "image"
    assert open_data(table, reading=ReadOptions()).modality == "image"  # an image column and no text one
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(table.read_text().replace("image,label", "picture,label", 1))
    with pytest.raises(DataError, match="no column 'text'; columns are: picture, label"):
        open_data(renamed, reading=ReadOptions())  # neither: a table holds texts unless told
    assert open_data(renamed, "picture", reading=ReadOptions(modality="image")).modality == "image"
    assert len(open_inputs([table], "image")) == 4  # predicting: one table of image paths
    assert open_unlabelled(table, reading=ReadOptions(modality="image")).modality == "image"
    with pytest.raises(DataError, match="is a folder, which holds images"):
        open_data(tmp_path / "pics", reading=ReadOptions(modality="text"))
    with pytest.raises(ConfigError, match="`--modality text` contradicts the model, which takes images"):
        open_inputs([table], "image", reading=ReadOptions(modality="text"))
    with pytest.raises(ConfigError, match="modality"):
        ReadOptions(modality="audio")
