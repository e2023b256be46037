"""The data audit: copies, leakage, label issues, outliers, text checks, dropping, and the command."""

from __future__ import annotations

import csv
import functools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from helpers import TINY_TIMM, colour_folder, run_cli, tiny_timm_weights
from PIL import Image, ImageDraw, ImageFilter
from sklearn.model_selection import StratifiedKFold

import headstart as hs
from headstart.backbones import build_backbone
from headstart.data_audit import (
    Audit,
    Finding,
    audit,
    check_drop_kinds,
    drop_flagged,
    split_leakage,
    split_leakage_message,
    write_audit,
)
from headstart.data_audit.copies import copy_groups, kept_member
from headstart.data_audit.labels import (
    label_issue_findings,
    neighbour_probabilities,
    lexical_probabilities,
    out_of_fold_probabilities,
    outlier_findings,
    outlier_scores,
)
from headstart.data_audit.pixels import AGREEMENT, confirmed_pairs, pixel_agreement, thumbnails
from headstart.data_audit.properties import image_properties, property_findings
from headstart.data_audit.similarity import connected_groups, similar_pairs, unit_rows
from headstart.data_audit.texts import may_exceed, one_word_apart, text_findings
from headstart.errors import ConfigError

SHAPES = ("circles", "stripes", "checks")


def shape_image(kind: str, rng: random.Random, size: int = 128) -> Image.Image:
    """A picture of its class (rings, lines or filled squares) in random places, sizes and colours
    on a random gradient, slightly blurred: no two alike, one class by the kind of shape."""
    top, bottom = (np.array([rng.randint(0, 255) for _ in range(3)]) for _ in range(2))
    ramp = np.linspace(0, 1, size)[:, None, None]
    image = Image.fromarray((top * (1 - ramp) + bottom * ramp).repeat(size, 1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        ink = tuple(rng.randint(0, 255) for _ in range(3))
        x, y, r = rng.randint(0, size), rng.randint(0, size), rng.randint(8, 30)
        if kind == "circles":
            draw.ellipse((x - r, y - r, x + r, y + r), outline=ink, width=rng.randint(3, 6))
        elif kind == "stripes":
            draw.line((x, y, rng.randint(0, size), rng.randint(0, size)), fill=ink, width=rng.randint(4, 9))
        else:
            draw.rectangle((x - r, y - r, x + r, y + r), fill=ink)
    return image.filter(ImageFilter.GaussianBlur(1.5))  # soft edges, as in a photo


def shape_folder(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, rng).save(root / kind / f"{kind}-{i}.png")
    return root


def resized(path: Path, target: Path) -> Path:
    """A copy of the image at 80 % of its size."""
    with Image.open(path) as image:
        image.convert("RGB").resize((round(image.width * 0.8), round(image.height * 0.8))).save(target)
    return target


def far_image(target: Path) -> Path:
    """A photo, nothing like the drawings of any class."""
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).resize((96, 96)).save(target)
    return target


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> dict:
    """A shapes folder with an exact duplicate, a resized copy, the same image under a second
    label, a flipped label and a far outlier; audited once with efficientnet_lite0."""
    root = shape_folder(tmp_path_factory.mktemp("audit") / "shapes")
    shutil.copyfile(root / "circles" / "circles-0.png", root / "circles" / "circles-0-again.png")
    resized(root / "stripes" / "stripes-1.png", root / "stripes" / "stripes-1-small.png")
    shutil.copyfile(root / "checks" / "checks-2.png", root / "stripes" / "checks-2-as-stripes.png")
    shutil.move(root / "stripes" / "stripes-3.png", root / "circles" / "stripes-3.png")
    far_image(root / "checks" / "astronaut.png")
    data = hs.ImageFolder(root)
    return {"root": root, "data": data, "audit": audit(data, num_workers=0)}


def _locations(result: Audit, *kinds: str) -> set[str]:
    return {Path(f.location).name for f in result.of_kind(*kinds)}


# -- copies ----------------------------------------------------------------------------------------
def test_similar_rows_are_paired_and_joined_into_groups():
    x = np.array([[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0, 1], [0.02, 0, 1]], dtype=np.float32)
    pairs = similar_pairs(unit_rows(x), 0.95)
    assert {(i, j) for i, j, _ in pairs} == {(0, 1), (3, 4)}
    assert connected_groups(5, pairs + [(1, 3, 1.0)]) == [[0, 1, 3, 4]]


def test_pixels_confirm_a_changed_copy_and_veto_a_different_picture(tmp_path):
    rng = random.Random(3)
    original = shape_image("circles", rng, size=160)
    original.save(tmp_path / "a.png")
    width, height = original.size
    changed = original.crop((4, 4, width - 4, height - 4)).resize((128, 128))  # 5 % cropped, then resized
    Image.fromarray(np.clip(np.asarray(changed, dtype=np.int16) + (12, -8, 5), 0, 255).astype(np.uint8)).save(
        tmp_path / "copy.jpg", quality=60)  # colour-shifted, JPEG q60
    shape_image("circles", rng, size=160).save(tmp_path / "other.png")  # the same class, another picture
    paths = [str(tmp_path / name) for name in ("a.png", "copy.jpg", "other.png")]
    a, copy, other = (thumbnails(Image.open(p)) for p in paths)
    assert pixel_agreement(a, copy) >= AGREEMENT > pixel_agreement(a, other)
    assert pixel_agreement(a, copy) == pixel_agreement(copy, a)
    assert confirmed_pairs([(0, 1, 0.95), (0, 2, 0.95)], paths) == [(0, 1, 0.95)]
    assert confirmed_pairs([(0, 0, 0.93), (0, 1, 0.93)], paths[:1], paths[1:]) == [(0, 0, 0.93)]


def test_a_copy_group_under_two_labels_is_called_out_and_a_tie_keeps_no_member():
    groups = copy_groups([b"a", b"a", b"b"], [], ["cat", "dog", "cat"], ["1.png", "2.png", "3.png"])
    assert len(groups) == 1 and groups[0]["kind"] == "duplicate" and groups[0]["cross_class"]
    assert kept_member(groups[0]) is None
    majority = copy_groups([b"a", b"a", b"a"], [], ["cat", "dog", "dog"], ["1", "2", "3"])[0]
    assert kept_member(majority) == 1


def test_exact_and_resized_copies_are_found_but_different_drawings_of_a_class_are_not(problems):
    result = problems["audit"]
    assert {"circles-0.png", "circles-0-again.png"} <= _locations(result, "duplicate")
    near = [g for g in result.groups if "stripes-1-small.png" in {Path(p).name for p in g["locations"]}]
    assert near and {Path(p).name for p in near[0]["locations"]} == {"stripes-1.png", "stripes-1-small.png"}
    flagged = _locations(result, "duplicate", "near-duplicate")
    assert flagged == {"circles-0.png", "circles-0-again.png", "stripes-1.png", "stripes-1-small.png",
                       "checks-2.png", "checks-2-as-stripes.png"}


def test_the_same_image_under_two_labels_is_a_cross_class_group(problems):
    crossing = [g for g in problems["audit"].groups if g["cross_class"]]
    assert [sorted(Path(p).name for p in g["locations"]) for g in crossing] == [["checks-2-as-stripes.png",
                                                                                 "checks-2.png"]]
    assert problems["audit"].summary()["cross_class_groups"] == 1


# -- labels and outliers ---------------------------------------------------------------------------------
def _blobs(per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 6
    x = np.concatenate([c + rng.normal(0, 1, (per_class, 16)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), per_class)


def test_a_flipped_label_is_a_label_issue_with_the_right_suggestion():
    x, y = _blobs()
    given = y.copy()
    given[5] = 2
    probabilities = out_of_fold_probabilities(x, given, 3)
    findings = label_issue_findings(given, probabilities, ["a", "b", "c"], [str(i) for i in range(60)],
                                    [None] * 60, None)
    assert [f.index for f in findings] == [5]
    assert findings[0].label == "c" and findings[0].suggested == "a" and findings[0].score > 0.5


def test_label_flags_from_unsure_models_come_with_a_warning():
    from headstart.data_audit.checks import _label_issues
    from headstart.data_audit.findings import Audit

    x, y = _blobs()
    data = hs.LabelledData("image", [f"{i}.png" for i in range(60)], [["a", "b", "c"][c] for c in y])
    noise = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)  # features that know no class
    notes = {}
    for name, features in (("separable", x), ("noise", noise)):
        result = Audit("data", "image", "m", 60, {"a": 20, "b": 20, "c": 20})
        _label_issues(data, features, 5, 0, [None] * 60, None, result)
        notes[name] = " ".join(result.notes)
    assert "agree with" not in notes["separable"]
    assert "out-of-fold models agree with" in notes["noise"] and "--drop label-issues" in notes["noise"]


def _worded(per_class: int = 20, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts whose class is in their words: each draws three words of its class's vocabulary."""
    rng = np.random.default_rng(seed)
    vocabularies = [["sunny", "bright", "warm", "clear"], ["rainy", "grey", "wet", "cold"], ["windy", "gusty", "stormy", "wild"]]
    texts = [" ".join(rng.choice(words, 3)) for words in vocabularies for _ in range(per_class)]
    return texts, np.repeat(np.arange(3), per_class)


def test_the_words_of_a_text_doubt_a_label_its_features_cannot():
    texts, y = _worded()
    given = y.copy()
    given[5] = 2
    x = np.random.default_rng(1).normal(size=(60, 16)).astype(np.float32)  # features that say nothing
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, given))
    lexical = lexical_probabilities(texts, given, 3, splits)
    assert lexical.shape == (60, 3) and np.allclose(lexical.sum(1), 1)
    assert lexical[5].argmax() == 0 and lexical[5, 2] < 0.2
    assert (lexical.argmax(1) == given).sum() == 59  # every other text is placed in its class
    blind, read = out_of_fold_probabilities(x, given, 3), out_of_fold_probabilities(x, given, 3, texts=texts)
    assert read[5, 2] < blind[5, 2] - 0.1 and np.allclose(read.sum(1), 1)
    no_words = ["!", "?", "a", "."] * 3
    assert lexical_probabilities(no_words, np.arange(12) % 2, 2, [(np.arange(6), np.arange(6, 12))]) is None
    unspaced = [f"{text.replace(' ', '')}{i}" for i, text in enumerate(texts)]  # one word each, none shared
    assert lexical_probabilities(unspaced, given, 3, splits) is None  # words that say nothing are left out


def test_neighbour_votes_leave_the_sample_itself_out_even_behind_an_exact_copy():
    x, y = _blobs()
    given = y.copy()
    given[5] = 2
    p = neighbour_probabilities(x, given, 3)
    assert p[5].argmax() == 0 and p[5, 2] < 0.1  # its own (flipped) label casts no vote
    assert np.allclose(p.sum(1), 1) and (p > 0).all()
    copies = neighbour_probabilities(np.concatenate([x, x[5:6]]), np.append(given, 1), 3)
    assert np.allclose(copies.sum(1), 1) and copies[5, 1] > copies[5, 2]  # the copy's label counts, its own not


def test_a_far_sample_is_an_outlier_and_the_rest_are_not():
    x, y = _blobs()
    x = np.concatenate([x, -8 * np.ones((1, 16), dtype=np.float32)])
    y = np.append(y, 0)
    findings = outlier_findings(outlier_scores(unit_rows(x), y), None, [str(i) for i in range(61)], [None] * 61, None)
    assert [f.index for f in findings] == [60] and 0.5 <= findings[0].score <= 1


def test_a_network_fitted_in_each_fold_predicts_every_sample_from_the_other_folds(tmp_path, monkeypatch):
    fits = []
    fit = hs.Transfer.fit
    monkeypatch.setattr(hs.Transfer, "fit", lambda self, train, *a, **k: fits.append(set(train.items)) or fit(
        self, train, *a, **k))
    root = colour_folder(tmp_path / "colours", per_class=9)
    shutil.move(root / "red" / "0.png", root / "blue" / "red-0.png")  # a red image labelled blue
    data = hs.ImageFolder(root)
    settings = {"cache_dir": tmp_path / "cache", "num_workers": 0, "device": "cpu"}
    network = hs.Transfer(f"timm:{TINY_TIMM}", "finetune", weights=tiny_timm_weights(tmp_path), config={"epochs": 2},
                          **settings)
    stages = []
    result = audit(data, model=f"timm:{TINY_TIMM}", weights=network.weights, folds=3, label_model=network,
                   progress=lambda stage, done, total: stages.append((stage, done, total)), **settings)
    assert len(fits) == 3 and all(sum(item not in trained for trained in fits) == 1 for item in data.items)
    assert [s for s in stages if s[0] == "audit finetune folds"] == [("audit finetune folds", i, 3) for i in (1, 2, 3)]
    assert result.thresholds["label_model"] == "finetune" and result.seconds["label_model"] > 0
    assert any("finetune on timm:" in note and "3 fits" in note for note in result.notes)
    assert [Path(f.location).name for f in result.of_kind("label-issue")] == ["red-0.png"]
    assert result.of_kind("label-issue")[0].suggested == "red"


def test_an_unknown_label_model_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'lora'"):
        audit(hs.LabelledData("text", ["a b c", "d e f"], ["x", "y"]), label_model="lorra")


def test_the_flipped_drawing_and_the_photo_are_found_in_the_image_folder(problems):
    result = problems["audit"]
    issues = {Path(f.location).name: f for f in result.of_kind("label-issue")}
    assert "stripes-3.png" in issues and issues["stripes-3.png"].suggested == "stripes"
    assert "astronaut.png" in _locations(result, "outlier")
    assert len(result.of_kind("outlier")) <= 2


# -- image properties ----------------------------------------------------------------------------------
def test_odd_sizes_shapes_and_exposures_are_flagged_and_ordinary_photos_are_not(tmp_path):
    rng = random.Random(5)
    paths = []
    for i in range(12):  # ordinary photos: sizes 100-200 px, landscape and portrait
        width, height = rng.randint(100, 200), rng.randint(100, 200)
        paths.append(tmp_path / f"photo-{i}.jpg")
        shape_image(SHAPES[i % 3], rng).resize((width, height)).save(paths[-1])
    drawing = np.asarray(shape_image("circles", rng), dtype=np.float32)
    low, high = np.percentile(drawing, [1, 99])
    stretched = np.clip((drawing - low) / (high - low), 0, 1)  # 0-1, full contrast
    odd = {"tiny.png": Image.fromarray(drawing.astype(np.uint8)).resize((24, 24)),
           "banner.png": Image.fromarray(drawing.astype(np.uint8)).resize((400, 60)),
           "dark.png": Image.fromarray((8 + stretched * 40).astype(np.uint8)),  # a night shot
           "light.png": Image.fromarray((222 + stretched * 33).astype(np.uint8)),  # over-exposed
           "blank.png": Image.new("RGB", (150, 150), (90, 140, 60))}
    for name, image in odd.items():
        paths.append(tmp_path / name)
        image.save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    properties = image_properties([str(p) for p in paths])
    assert np.isnan(properties[-1]).all() and not np.isnan(properties[:-1]).any()
    findings = property_findings(properties, None, [p.name for p in paths], [None] * len(paths))
    assert {(f.location, f.kind) for f in findings} == {("tiny.png", "odd-size"), ("banner.png", "odd-shape"),
                                                       ("dark.png", "dark"), ("light.png", "light"),
                                                       ("blank.png", "blank")}
    assert all(0 < f.score <= 1 and f.detail for f in findings)
    json.dumps([f.to_dict() for f in findings])  # --json and audit.json write them
    ordinary = property_findings(properties[:12], None, [p.name for p in paths[:12]], [None] * 12)
    assert ordinary == []
    panoramas = np.array([[900, 300, 0.2, 0.8]] * 10 + [[300, 300, 0.2, 0.8]])  # a square among panoramas
    [square] = property_findings(panoramas, None, [str(i) for i in range(11)], [None] * 11)
    assert (square.kind, square.index) == ("odd-shape", 10) and square.score > 0.5 and "crop" not in square.detail


def test_an_image_audit_counts_image_kinds_and_a_text_audit_text_kinds(problems):
    counts = problems["audit"].counts()
    assert {"odd-size", "dark", "blank"} <= set(counts) and "short-text" not in counts
    text = Audit("t.csv", "text", "minilm", 2, {"a": 2})
    assert "short-text" in text.counts() and "odd-size" not in text.counts()


# -- leakage -----------------------------------------------------------------------------------------
def test_a_copy_across_train_and_test_folders_is_leakage(tmp_path):
    root = tmp_path / "split"
    shape_folder(root / "train", per_class=4, seed=1)
    shape_folder(root / "test", per_class=2, seed=2)
    resized(root / "train" / "circles" / "circles-1.png", root / "test" / "circles" / "leak.png")
    result = audit(hs.ImageFolder(root), num_workers=0, folds=2)
    leaks = result.of_kind("leakage")
    assert [(Path(f.location).name, f.split) for f in leaks] == [("circles-1.png", "train")]
    assert "leak.png" in leaks[0].detail


def test_texts_with_a_copy_in_the_against_data_are_leakage(tmp_path):
    train = hs.LabelledData("text", ["the battery lasts all day long", "the screen cracked in a week", "fine"],
                            ["pos", "neg", "pos"], source="train.csv")
    test = hs.LabelledData("text", ["The battery lasts all day long!", "shipping was quick"], ["pos", "pos"],
                           source="test.csv")
    result = audit(train, against=test, num_workers=0)
    assert [f.index for f in result.of_kind("leakage")] == [0]


def test_split_leakage_counts_exact_copies_without_cached_features(tmp_path):
    train = hs.LabelledData("text", ["a b c", "d e f"], ["x", "y"])
    test = hs.LabelledData("text", ["a b c", "g h i"], ["x", "y"])
    leakage = split_leakage(train, test)
    assert leakage["checked"] == "digests" and leakage["exact"] == 1 and leakage["near"] is None
    assert "1 of 2 test samples have an exact copy" in split_leakage_message(leakage, 2)


# -- texts --------------------------------------------------------------------------------------------
def test_texts_one_word_apart_are_paired_but_short_ones_are_not():
    texts = ["the case fits my phone well", "The case fits my phone", "great phone", "great", "not bad at all"]
    assert [(i, j) for i, j, _ in one_word_apart(texts)] == [(0, 1)]


def test_texts_apart_only_in_spacing_or_a_contraction_are_copies_and_wordless_ones_are_not():
    texts = ["Good sound; good volume.Great headset", "good sound good volumeGreat headset!!",
             "Don't buy this product.", "buy this product", "Dont buy this product today", "\U0001F600",
             "\U0001F44E", "!!!"]
    groups = copy_groups([bytes([i]) * 32 for i in range(len(texts))], one_word_apart(texts), None,
                         [f"t.csv:{i}" for i in range(len(texts))], texts)
    assert sorted(sorted(g["members"]) for g in groups) == [[0, 1], [2, 3, 4]]


def test_text_audit_finds_copies_short_texts_and_counts_classes(tmp_path):
    texts = ["The battery lasts all day long.", "the battery lasts all day long", "Screen cracked within a week.",
             "ok", "Sound quality is superb and clear", "Sound quality is superb and very clear",
             "Terrible customer service on the phone", "Works as described, happy with it"]
    data = hs.LabelledData("text", texts, ["pos", "pos", "neg", "pos", "pos", "pos", "neg", "pos"], source="t.csv")
    result = audit(data, num_workers=0)
    grouped = sorted(sorted(g["members"]) for g in result.groups)
    assert grouped == [[0, 1], [4, 5]]
    assert [f.index for f in result.of_kind("short-text")] == [3]
    assert result.classes == {"neg": 2, "pos": 6} and result.imbalance() == 3


def test_a_warm_audit_reads_the_cache_without_building_the_backbone(tmp_path, monkeypatch):
    import headstart.data_audit.checks as checks

    texts = ["The battery lasts all day long.", "Screen cracked within a week.", "Sound quality is superb",
             "Terrible customer service", "Works as described", "Broke after two days"]
    data = hs.LabelledData("text", texts, ["pos", "neg", "pos", "neg", "pos", "neg"], source="t.csv")
    cold = audit(data, cache_dir=tmp_path, num_workers=0)
    assert cold.seconds["backbone"] > 0
    monkeypatch.setattr(checks, "build_backbone", lambda *a, **k: pytest.fail("a warm audit built the backbone"))
    warm = audit(data, cache_dir=tmp_path, num_workers=0)
    assert "backbone" not in warm.seconds and warm.to_dict()["findings"] == cold.to_dict()["findings"]
    longer = hs.LabelledData("text", texts + ["new words " * 200], ["pos"] * 4 + ["neg"] * 3, source="t.csv")
    with pytest.raises(pytest.fail.Exception, match="built the backbone"):  # one text not cached: it must build
        audit(longer, cache_dir=tmp_path, num_workers=0)


def test_the_audit_command_on_a_warm_cache_never_loads_torch(tmp_path):
    """torch takes 2-3 s to import: an audit that reads every feature from the cache needs none of it."""
    import subprocess
    import sys

    table = _write_rows(tmp_path / "t.csv", [("The battery lasts all day long.", "pos"), ("Broke in a week.", "neg"),
                                             ("Works as described", "pos"), ("Terrible service", "neg")])
    audit(hs.TextTable(table), cache_dir=tmp_path / "cache", num_workers=0)  # the cold pass fills the cache
    code = ("import sys; from headstart.cli import main; sys.argv = ['headstart', 'audit', sys.argv[1], '--cache-dir', "
            "sys.argv[2], '--json']\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "sys.stderr.write(f'torch={\"torch\" in sys.modules}')")
    done = subprocess.run([sys.executable, "-c", code, str(table), str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.endswith("torch=False"), done.stderr[-2000:]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_a_text_the_bound_calls_short_has_no_more_tokens_than_the_bound(text):
    """The over-long check asks the tokenizer only about texts ``may_exceed`` lets through: no text it
    calls short may have more tokens than the limit, however its characters normalise."""
    tokens = len(_minilm_tokenizer()(text, add_special_tokens=True)["input_ids"])
    assert may_exceed(text, tokens - 1), (text, tokens)


@functools.cache
def _minilm_tokenizer():
    return build_backbone("minilm").tokenizer


def test_an_over_long_text_is_flagged_and_short_texts_never_load_the_tokenizer():
    texts = ["short and sweet", "ok", "word " * 300]
    found = text_findings(texts, ["a:1", "a:2", "a:3"], None, [None] * 3, [], _minilm_tokenizer, 256)
    assert [(f.kind, f.index) for f in found] == [("short-text", 1), ("long-text", 2)]
    assert text_findings(texts[:2], ["a:1", "a:2"], None, [None] * 2, [], lambda: pytest.fail("loaded"), 256)


# -- dropping ---------------------------------------------------------------------------------------------
def test_drop_keeps_one_of_each_copy_group_and_records_why(problems):
    data, result = problems["data"], problems["audit"]
    kept, dropped = drop_flagged(data, result, ["duplicates", "label-issues", "outliers"])
    names = {Path(record["location"]).name for record in dropped}
    assert {"stripes-3.png", "astronaut.png"} <= names
    assert len({"circles-0.png", "circles-0-again.png"} & names) == 1  # one of the pair stays
    assert {"checks-2.png", "checks-2-as-stripes.png"} <= names  # two labels, one each: which is right is unknown
    assert len(kept) == len(data) - len(dropped)
    assert all(record["why"] and record["kind"] for record in dropped)


def test_drop_of_predefined_splits_keeps_the_parts_consistent(tmp_path):
    root = tmp_path / "split"
    shape_folder(root / "train", per_class=3, seed=1)
    shape_folder(root / "test", per_class=2, seed=2)
    data = hs.ImageFolder(root)
    flagged = Finding("outlier", 0, data.locations[0], 0.9)
    result = Audit(data.source, "image", "m", len(data), data.class_counts(), findings=[flagged])
    kept, dropped = drop_flagged(data, result, ["outliers"])
    assert len(dropped) == 1 and len(kept.splits["train"]) == 8 and len(kept.splits["test"]) == 6


def test_an_unknown_drop_kind_names_the_choices_and_the_near_miss():
    with pytest.raises(ConfigError, match="Did you mean 'outliers'") as caught:
        check_drop_kinds(["outlier"])
    assert "duplicates, leakage, label-issues, outliers" in str(caught.value)


# -- outputs -------------------------------------------------------------------------------------------------
def test_write_audit_writes_json_and_a_report_with_thumbnails(problems, tmp_path):
    folder = write_audit(problems["audit"], tmp_path / "audit")
    document = json.loads((folder / "audit.json").read_text())
    assert {"counts", "findings", "groups", "classes", "thresholds"} <= set(document)
    assert all({"kind", "location", "score"} <= set(f) for f in document["findings"])
    page = (folder / "report.html").read_text()
    assert 'id="audit"' in page and "data:image/jpeg;base64," in page
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no audit"):
        write_audit(problems["audit"], tmp_path / "other")


def test_the_package_root_exports_audit():
    assert hs.audit is audit and hs.Audit is Audit


# -- the command ---------------------------------------------------------------------------------------------
def test_audit_command_prints_tables_json_and_writes_the_folder(problems, tmp_path, monkeypatch, capsys):
    root = problems["root"]
    code, out, err = run_cli(monkeypatch, capsys, "audit", root, "--workers", "0", "--out", tmp_path / "a")
    assert code == 0, err
    assert "near-duplicate" in out and "label-issue" in out and "carry two labels" in out
    assert (tmp_path / "a" / "audit.json").is_file() and (tmp_path / "a" / "report.html").is_file()
    code, out, _ = run_cli(monkeypatch, capsys, "audit", root, "--workers", "0", "--json")
    document = json.loads(out)
    assert code == 0 and document["counts"]["duplicate"] == 4 and document["samples"] == len(problems["data"])


@pytest.mark.parametrize("args, message", [
    (["audit", "no/such/folder"], "does not exist"),
    (["audit", "{root}", "--threshold", "1.5"], "must be a cosine similarity in (0, 1]"),
    (["audit", "{root}", "--label-model", "lorra"], "Unknown strategy 'lorra'. Did you mean 'lora'?"),
    (["audit", "{root}", "--device", "tpu"], "must be auto, cpu or cuda"),  # refused even where no network runs
    (["fit", "{root}", "--out", "{tmp}/r", "--drop", "outlier"], "Did you mean 'outliers'"),
])
def test_bad_audit_input_gives_one_clear_line(problems, tmp_path, monkeypatch, capsys, args, message):
    args = [a.format(root=problems["root"], tmp=tmp_path) for a in args]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err


def test_fit_audit_drop_records_what_was_dropped_and_keeps_the_audit(problems, tmp_path, monkeypatch, capsys):
    root = shutil.copytree(problems["root"], tmp_path / "data")
    code, out, err = run_cli(monkeypatch, capsys, "fit", root, "--out", tmp_path / "run", "--workers", "0",
                             "--audit", "--drop", "duplicates,outliers")
    assert code == 0, err
    assert "near-duplicate" in out and "dropped" in err
    dropped = json.loads((tmp_path / "run" / "dropped.json").read_text())
    assert "astronaut.png" in {Path(r["location"]).name for r in dropped}
    assert (tmp_path / "run" / "audit.json").is_file() and 'id="audit"' in (tmp_path / "run" / "report.html").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split_leakage"]["checked"] == "features"


def test_fit_warns_when_its_split_puts_copies_on_both_sides(tmp_path, caplog):
    from headstart.workflows import fit_run

    root = shape_folder(tmp_path / "data", per_class=10)
    for i in range(4):
        shutil.copyfile(root / "circles" / f"circles-{i}.png", root / "circles" / f"again-{i}.png")
    with caplog.at_level("WARNING", logger="headstart.data_audit.fitting"):
        result = fit_run(root, tmp_path / "run", workers=0, test=0.5)
    assert any("test samples have an exact or near copy in the training split" in r.message for r in caplog.records)
    leakage = json.loads((result.out_dir / "metrics.json").read_text())["split_leakage"]
    assert leakage["near"] >= 1


def _write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_audit_command_on_a_text_table_against_a_test_table(tmp_path, monkeypatch, capsys):
    train = _write_rows(tmp_path / "train.csv", [("The battery lasts all day long.", "pos"), ("", "pos"),
                                                 ("Screen cracked within a week.", "neg"), ("ok", "pos"),
                                                 ("Works as described, happy with it", "pos"),
                                                 ("Terrible customer service on the phone", "neg")])
    test = _write_rows(tmp_path / "test.csv", [("the battery lasts all day long", "pos"), ("Meh.", "neg")])
    code, out, err = run_cli(monkeypatch, capsys, "audit", train, "--against", test, "--json")
    assert code == 0, err
    found = {(f["kind"], f["location"].split(":")[-1]) for f in json.loads(out)["findings"]}
    assert {("leakage", "2"), ("empty-text", "3"), ("short-text", "5")} <= found


# -- real data -------------------------------------------------------------------------------------------------
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED / "flowers5").is_dir(), reason=f"flowers5 not found at {SHARED}")
def test_injected_problems_in_a_flowers5_slice_are_found_far_above_chance(tmp_path):
    """40 photos per class; 10 labels flipped (5 %), 6 resized and re-encoded copies (3 %), 2 digit
    scans (1 %). Chance would flag each kind at its share: 5 %, 3 %, 1 % precision. The label bar
    is on the 10 surest label issues (chance: 0.5 flips among them): a linear probe on 200 flowers
    is right about 70 % of the time, so many true labels are doubted too (see bench/README.md). The
    outlier bar is on the ranking: both scans among the 5 % farthest samples (chance: 0.05 each)."""
    from headstart.backbones import build_backbone
    from headstart.demo import write_digits_folder

    rng = random.Random(0)
    flowers = hs.ImageFolder(SHARED / "flowers5")
    root = tmp_path / "flowers"
    picked = [(p, c) for c in flowers.classes for p in rng.sample(
        [p for p, label in zip(flowers.items, flowers.labels) if label == c], 40)]
    flipped, copies = set(), []
    for i, (path, label) in enumerate(picked):
        given = rng.choice([c for c in flowers.classes if c != label]) if i % 20 == 7 else label
        (root / given).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / given / Path(path).name)
        if given != label:
            flipped.add(Path(path).name)
        elif i % 33 == 3:
            copy = root / label / f"copy-{Path(path).stem}.jpg"
            with Image.open(path) as image:
                image.convert("RGB").resize((round(image.width * 0.8), round(image.height * 0.8))).save(copy, quality=60)
            copies.append((Path(path).name, copy.name))
    digits = write_digits_folder(tmp_path / "digits", per_class=1)
    for n, digit in enumerate(sorted(digits.rglob("*.png"))[:2]):
        shutil.copyfile(digit, root / flowers.classes[n] / f"digit-{digit.name}")
    data = hs.ImageFolder(root)
    result = audit(data, num_workers=0)
    issues, outliers = _locations(result, "label-issue"), _locations(result, "outlier")
    groups = {Path(f.location).name: f.group for f in result.of_kind("duplicate", "near-duplicate")}
    assert sum(groups.get(a) is not None and groups.get(a) == groups.get(b) for a, b in copies) == len(copies)
    assert len(groups) <= 2 * len(copies) + 2
    surest = {Path(f.location).name for f in result.of_kind("label-issue")[:len(flipped)]}
    assert len(issues & flipped) >= 0.6 * len(flipped) and len(surest & flipped) >= 0.3 * len(flipped)
    features = hs.extract_features(build_backbone("efficientnet_lite0"), data, num_workers=0)  # cached by the audit
    scores = outlier_scores(unit_rows(features), data.y)
    ranks = {Path(data.items[i]).name: rank for rank, i in enumerate(np.argsort(-scores))}
    assert all(rank < 0.05 * len(data) for name, rank in ranks.items() if name.startswith("digit-"))
    assert len(outliers) <= 6
