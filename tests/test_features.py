import numpy as np
import torch
from PIL import Image

import headstart.features as features
from headstart.backbones import build_backbone
from headstart.data import ImageFolder, image_transform, load_image
from headstart.features import extract_features

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights


def _record_embeds(monkeypatch) -> list:
    """Make every call that embeds samples (a cache miss) append its items to the returned list."""
    embedded = []
    original = features.embed
    monkeypatch.setattr(features, "embed", lambda b, items, **kw: embedded.append(list(items)) or original(b, items, **kw))
    return embedded


def _backbone(tmp_path, seed=0):
    return build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path, seed))


def test_features_equal_the_backbone_applied_by_hand(tmp_path):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=3))
    backbone = _backbone(tmp_path)
    got = extract_features(backbone, data, cache_dir=tmp_path / "cache", batch_size=4, num_workers=0)
    transform = image_transform(backbone.contract)
    batch = torch.stack([transform(load_image(p)) for p in data.items])
    with torch.no_grad():
        expected = backbone.module.eval()(batch).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got.shape == (len(data), backbone.contract.feature_dim) and got.dtype == np.float32


def test_worker_processes_give_the_same_features(tmp_path):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=3))
    backbone = _backbone(tmp_path)
    a = extract_features(backbone, data, use_cache=False, batch_size=4, num_workers=0)
    b = extract_features(backbone, data, use_cache=False, batch_size=4, num_workers=2)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_second_run_reads_the_cache_and_a_changed_file_is_embedded_again(tmp_path, monkeypatch):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=3))
    backbone = _backbone(tmp_path)
    first = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    embedded = _record_embeds(monkeypatch)
    second = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    np.testing.assert_array_equal(first, second)
    assert embedded == []
    changed = data.items[0]
    Image.new("RGB", (40, 40), (255, 255, 0)).save(changed)
    third = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    assert embedded == [[changed]]
    assert not np.allclose(third[0], first[0]) and np.allclose(third[1:], first[1:])


def test_other_weights_do_not_share_cache_entries(tmp_path):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=2))
    a, b = _backbone(tmp_path, seed=0), _backbone(tmp_path, seed=1)
    assert a.cache_key != b.cache_key
    fa = extract_features(a, data, cache_dir=tmp_path / "cache", num_workers=0)
    fb = extract_features(b, data, cache_dir=tmp_path / "cache", num_workers=0)
    assert not np.allclose(fa, fb)


def test_weights_overwritten_in_place_change_the_cache_key(tmp_path):
    path = tiny_timm_weights(tmp_path, seed=0)
    before = build_backbone(f"timm:{TINY_TIMM}", weights=path).cache_key
    assert build_backbone(f"timm:{TINY_TIMM}", weights=path).cache_key == before  # read once, remembered
    (tmp_path / "other").mkdir()
    path.write_bytes(tiny_timm_weights(tmp_path / "other", seed=1).read_bytes())  # same size and name, other numbers
    assert build_backbone(f"timm:{TINY_TIMM}", weights=path).cache_key != before


def test_a_damaged_cache_shard_is_ignored(tmp_path):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=2))
    backbone = _backbone(tmp_path)
    first = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    for shard in (tmp_path / "cache").rglob("*.safetensors"):
        shard.write_bytes(b"garbage")
    again = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    np.testing.assert_allclose(first, again, atol=1e-6)


def test_progress_is_reported_per_batch(tmp_path):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=3))
    calls = []
    extract_features(_backbone(tmp_path), data, use_cache=False, batch_size=4, num_workers=0,
                     progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 9), (8, 9), (9, 9)]


def test_files_with_equal_content_are_served_from_one_cache_entry(tmp_path, monkeypatch):
    import shutil

    folder = colour_folder(tmp_path / "imgs", per_class=3)
    shutil.copy(folder / "red" / "0.png", folder / "blue" / "copy.png")  # the same bytes in two classes
    data = ImageFolder(folder)
    backbone = _backbone(tmp_path)
    first = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    embedded = _record_embeds(monkeypatch)
    second = extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0)
    assert embedded == []
    np.testing.assert_array_equal(first, second)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1


def test_text_features_come_back_in_the_callers_order(tmp_path):
    from helpers import tiny_bert_folder

    backbone = build_backbone(f"hf:{tiny_bert_folder(tmp_path / 'bert')}")
    texts = ["a much longer text than the others", "b", "a middle one"]
    together = features.embed(backbone, texts, batch_size=1, num_workers=0)  # batch 1: no padding either way
    for text, row in zip(texts, together):
        np.testing.assert_allclose(row, features.embed(backbone, [text], batch_size=1, num_workers=0)[0], atol=1e-6)


def test_copies_are_embedded_once_and_the_counter_counts_samples_cold_or_warm(tmp_path, monkeypatch):
    import shutil

    folder = colour_folder(tmp_path / "imgs", per_class=3)
    shutil.copy(folder / "red" / "0.png", folder / "red" / "copy.png")
    data = ImageFolder(folder)
    backbone = _backbone(tmp_path)
    embedded = _record_embeds(monkeypatch)
    for run in ("cold", "warm"):
        calls = []
        extract_features(backbone, data, cache_dir=tmp_path / "cache", batch_size=4, num_workers=0,
                         progress=lambda done, total: calls.append((done, total)))
        assert calls[-1] == (len(data), len(data)), run  # 10 samples, cold or warm
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert [len(items) for items in embedded] == [len(data) - 1]  # the copy was embedded once, then read
