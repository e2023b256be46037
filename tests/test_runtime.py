"""headstart.runtime: the torch-free predictor of exported bundles.

Its preprocessing is written again without torch, so it is compared numerically with the
training path (load_image + the timm evaluation transform, tokenizer + collate) on awkward
inputs; a bundle predicts what ``hs.load(run).predict_proba`` predicts; a changed file is refused;
and a fresh virtual environment without torch predicts with a bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    TINY_TIMM,
    colour_folder,
    review_table,
    tiny_bert_folder,
    tiny_timm_weights,
)
from PIL import Image

import headstart as hs
from headstart.contract import InputContract
from headstart.data import LabelledData, TextTable, image_transform, load_image
from headstart.errors import DataError
from headstart.export import bundle_contract, export_bundle
from headstart.runtime import Bundle, image_contract, is_bundle
from headstart.runtime.images import decode_file, in_memory_image, prepare_image
from headstart.runtime.text import TextEncoder
from headstart.workflows import fit_run

ROOT = Path(__file__).resolve().parents[1]


# -- preprocessing against the training path ----------------------------------------------------
def _odd_images(folder: Path) -> list[Path]:
    """Odd sizes and what training handles specially: alpha, palette, grey, 16 bit, EXIF rotation, and
large images it decodes at reduced scale (JPEG draft) or reduces (PNG) before resizing."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)

    def noise(h, w, c=3):
        return rng.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)
    images = {"odd.png": Image.fromarray(noise(97, 61)), "wide.jpg": Image.fromarray(noise(33, 301)),
              "tiny.bmp": Image.fromarray(noise(5, 7)), "alpha.png": Image.fromarray(noise(120, 77, 4)),
              "grey.png": Image.fromarray(noise(64, 129, 0)), "palette.gif": Image.fromarray(noise(90, 50)).convert("P"),
              "odd-big.jpg": Image.fromarray(noise(1203, 905)), "big.jpg": Image.fromarray(noise(904, 1200)),
              "big.png": Image.fromarray(noise(640, 800)),
              "deep.png": Image.fromarray(rng.integers(0, 65535, size=(81, 93), dtype=np.uint16))}
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    rotated = Image.fromarray(noise(150, 211))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(folder / "rotated.jpg", exif=exif)
    return [*paths, folder / "rotated.jpg"]


CONTRACTS = [
    InputContract("image", 8, input_size=160, crop_pct=0.95, interpolation="bicubic",
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    InputContract("image", 8, input_size=224, crop_pct=0.875, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3),
    InputContract("image", 8, input_size=97, crop_pct=None, interpolation="nearest", mean=(0.4, 0.5, 0.6),
                  std=(0.2, 0.3, 0.25)),
]


@pytest.mark.parametrize("contract", CONTRACTS, ids=["timm-160-bicubic", "lite-224-bilinear", "odd-97-nearest"])
def test_image_preprocessing_equals_the_training_transform(tmp_path, contract):
    transform = image_transform(contract)
    runtime = image_contract(bundle_contract(contract, "x", ["pixel_values"]))
    for path in _odd_images(tmp_path):
        expected = transform(load_image(path, size_hint=transform.size_hint)).numpy()
        got = prepare_image(decode_file(path, runtime), runtime)
        assert got.shape == expected.shape == (3, contract.input_size, contract.input_size), path.name
        assert np.abs(got - expected).max() < 1e-6, path.name


def test_in_memory_images_are_prepared_like_the_same_file(tmp_path):
    runtime = image_contract(bundle_contract(CONTRACTS[0], "x", ["pixel_values"]))
    for path in _odd_images(tmp_path):
        if path.suffix == ".jpg":  # a decoded JPEG cannot be drafted at reduced scale any more
            continue
        from_file = prepare_image(decode_file(path, runtime), runtime)
        with Image.open(path) as image:
            from_pil = prepare_image(in_memory_image(image, runtime), runtime)
        assert np.array_equal(from_file, from_pil), path.name
    pixels = np.random.default_rng(1).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    assert np.array_equal(prepare_image(in_memory_image(pixels, runtime), runtime),
                          prepare_image(in_memory_image(Image.fromarray(pixels), runtime), runtime))


def test_unusable_images_are_data_errors_naming_the_file(tmp_path):
    runtime = image_contract(bundle_contract(CONTRACTS[0], "x", ["pixel_values"]))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png: not an image file"):
        decode_file(tmp_path / "notes.png", runtime)
    with pytest.raises(DataError, match="uint8"):
        in_memory_image(np.zeros((4, 4, 3), dtype=np.float32), runtime)


def test_tokenization_equals_the_training_tokenizer(tmp_path):
    backbone = hs.build_backbone(f"hf:{tiny_bert_folder(tmp_path / 'bert')}")
    from headstart.export.bundle import _write_tokenizer

    _write_tokenizer(backbone.tokenizer, tmp_path / "tokenizer.json", 12)
    texts = ["short", "a sentence that is much longer than twelve tokens, so it must be truncated somewhere",
             "Ünïcödé and   spaces", "x"]
    names = list(backbone.tokenizer.model_input_names)
    expected = backbone.tokenizer(texts, padding=True, truncation=True, max_length=12, return_tensors="np")
    got = TextEncoder(tmp_path / "tokenizer.json", 12, names)(texts)
    for name in names:
        assert np.array_equal(got[name], expected[name]), name


# -- bundles ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-image")
    folder = colour_folder(root / "images", per_class=8, size=37)
    fit_run(folder, root / "run", model=f"timm:{TINY_TIMM}", weights=tiny_timm_weights(root), workers=0)
    export_bundle(root / "run", root / "bundle")
    return root / "run", root / "bundle", folder


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-text")
    table = review_table(root / "reviews.csv", per_class=20)
    fit_run(table, root / "run", model=f"hf:{tiny_bert_folder(root / 'bert')}", workers=0)
    export_bundle(root / "run", root / "bundle")
    return root / "run", root / "bundle", table


def test_an_image_bundle_predicts_what_the_run_predicts(image_bundle):
    run, path, folder = image_bundle
    images = sorted(str(p) for p in folder.rglob("*.png"))
    expected = hs.load(run, device="cpu").predict_proba(LabelledData("image", images))
    bundle = Bundle.load(path)
    assert np.abs(bundle.predict_proba(images, batch_size=5) - expected).max() < 1e-4
    assert bundle.predict(images[0]) == [bundle.labels[int(expected[0].argmax())]]
    with Image.open(images[0]) as image:
        assert np.abs(bundle.predict_proba(image) - expected[:1]).max() < 1e-4
    rows = bundle.predict_table(images[:2])
    assert rows[0]["input"] == images[0] and set(rows[0]["probabilities"]) == set(bundle.labels)
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    assert bundle.predict_proba([]).shape == (0, len(bundle.labels))


def test_a_text_bundle_predicts_what_the_run_predicts(text_bundle):
    run, path, table = text_bundle
    data = TextTable(table)
    expected = hs.load(run, device="cpu").predict_proba(data)
    bundle = Bundle.load(path)
    assert np.abs(bundle.predict_proba(data.items, batch_size=7) - expected).max() < 1e-4
    assert bundle.predict_table(data.items[0])[0]["input"] == data.items[0]
    with pytest.raises(DataError, match="strings"):
        bundle.predict([3])


@pytest.mark.parametrize("name", ["model.onnx", "labels.json", "contract.json"])
def test_a_changed_bundle_file_is_refused_by_name(image_bundle, tmp_path, name):
    copy = shutil.copytree(image_bundle[1], tmp_path / "bundle")
    with open(copy / name, "ab") as handle:
        handle.write(b" ")
    with pytest.raises(DataError, match=f"{name} changed after the bundle was written"):
        Bundle.load(copy)


def test_is_bundle_and_clear_errors_for_what_is_no_bundle(image_bundle, tmp_path):
    run, path, _ = image_bundle
    assert is_bundle(path) and not is_bundle(run) and not is_bundle(tmp_path / "nothing")
    with pytest.raises(DataError, match="not a headstart bundle"):
        Bundle.load(run)
    copy = shutil.copytree(path, tmp_path / "bundle")
    (copy / "labels.json").unlink()
    with pytest.raises(DataError, match="labels.json is missing"):
        Bundle.load(copy)


def test_importing_the_runtime_loads_no_torch():
    code = ("import sys, headstart.runtime\n"
            "print(sorted(m for m in ('torch', 'timm', 'transformers', 'peft') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- a deployment without torch -----------------------------------------------------------------------
def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


@pytest.mark.integration
def test_a_fresh_venv_without_torch_predicts_with_a_bundle(image_bundle, text_bundle, tmp_path):
    venv = tmp_path / "venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "onnxruntime", "numpy", "pillow", "tokenizers"], check=True)
    source = tmp_path / "headstart"  # a copy: building in place would write build/ into the repository
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([*pip, "--no-deps", str(source)], check=True)
    seconds = time.perf_counter() - started
    script = ("import json, sys\nfrom headstart.runtime import Bundle\n"
              "image = Bundle.load(sys.argv[1]).predict_proba(sys.argv[3:]).tolist()\n"
              "text = Bundle.load(sys.argv[2]).predict_proba(['great product', 'awful']).tolist()\n"
              "try:\n    import torch\n    has_torch = True\nexcept ImportError:\n    has_torch = False\n"
              "print(json.dumps({'image': image, 'text': text, 'torch': has_torch}))\n")
    images = sorted(str(p) for p in image_bundle[2].rglob("*.png"))[:4]
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script, str(image_bundle[1]), str(text_bundle[1]),
                             *images], capture_output=True, text=True, check=True, cwd=tmp_path)
    out = json.loads(result.stdout)
    assert out["torch"] is False
    assert np.abs(np.array(out["image"]) - Bundle.load(image_bundle[1]).predict_proba(images)).max() < 1e-6
    sizes = {"runtime venv MB": round(_size_mb(venv)), "main .venv MB": round(_size_mb(ROOT / ".venv")),
             "install seconds": round(seconds)}
    print(json.dumps(sizes), file=sys.stderr)
    assert seconds < 120, sizes
