import json

import numpy as np
import pytest

import headstart as hs
from headstart.backbones import build_backbone
from headstart.backbones.layers import FINAL, layer_candidates, tap_layers
from headstart.errors import ConfigError
from headstart.ranking import rank

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights

KEYS = {"model", "layer", "logme", "leep", "nce", "hscore", "knn_accuracy", "seconds"}


@pytest.fixture
def data(tmp_path):
    return hs.ImageFolder(colour_folder(tmp_path / "imgs", per_class=8, size=32))


@pytest.fixture
def backbones(tmp_path):
    return [build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path, seed)) for seed in (0, 1)]


def test_rank_scores_every_candidate_best_logme_first(tmp_path, data, backbones):
    rows = rank(backbones, data, cache_dir=tmp_path / "cache", num_workers=0)
    assert len(rows) == 2 and KEYS <= set(rows[0].to_dict())
    assert rows[0].logme >= rows[1].logme
    assert all(row.leep is not None and row.nce is not None for row in rows)  # timm keeps its source classifier
    assert all(np.isfinite(row.hscore) and 0 <= row.knn_accuracy <= 1 for row in rows)


def test_layer_candidates_come_from_one_pass_and_include_the_final_features(tmp_path, data, backbones):
    rows = rank(backbones[:1], data, layers=True, cache_dir=tmp_path / "cache", num_workers=0)
    layers = [row.layer for row in rows]
    assert FINAL in layers and len(layers) == len(layer_candidates(backbones[0]))
    assert [row.leep is not None for row in rows if row.layer != FINAL] == [False] * (len(rows) - 1)


def test_tapped_final_features_equal_the_plain_features():
    import torch

    backbone = build_backbone(f"timm:{TINY_TIMM}", pretrained=False)
    tapped, columns = tap_layers(backbone, layer_candidates(backbone))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = tapped.module(x)
        plain = backbone.module(x)
    assert torch.allclose(both[:, dict(columns)[FINAL]], plain, atol=1e-5)
    assert tapped.contract.feature_dim == both.shape[1]


def test_tapping_an_unknown_layer_lists_the_real_ones():
    backbone = build_backbone(f"timm:{TINY_TIMM}", pretrained=False)
    with pytest.raises(ConfigError, match="has no layer group 'stage99'; its groups are: stem"):
        tap_layers(backbone, ["stage99"])


def test_auto_model_fits_the_best_ranked_candidate_and_records_the_ranking(tmp_path, data, monkeypatch):
    import headstart.transfer as transfer_module

    weights = {seed: tiny_timm_weights(tmp_path, seed) for seed in (0, 1)}
    built = {f"tiny{seed}": build_backbone(f"timm:{TINY_TIMM}", weights=path) for seed, path in weights.items()}
    for name, backbone in built.items():
        backbone.name = name
    real_build = transfer_module.build_backbone
    monkeypatch.setattr(transfer_module, "build_backbone",
                        lambda name, weights=None, pretrained=True: built[name] if name in built else real_build(name))
    monkeypatch.setattr("headstart.ranking.build_backbone", lambda name: built[name])
    model = hs.Transfer("auto", candidates=["tiny0", "tiny1"], cache_dir=tmp_path / "cache", num_workers=0).fit(data)
    assert model.model_name_ == model.ranking_[0]["model"]
    assert [r["model"] for r in model.ranking_] in (["tiny0", "tiny1"], ["tiny1", "tiny0"])
    model.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "ranking.json").read_text())
    assert saved[0]["model"] == model.model_name_


# -- ranking on a stratified sample of large data ---------------------------------------------------------
def test_a_stratified_sample_keeps_each_class_share_is_seeded_and_grows_by_adding():
    from headstart.data import stratified_sample

    y = np.repeat([0, 1, 2, 3], [600, 90, 3, 1])
    picked = stratified_sample(y, 100, seed=3)
    assert len(picked) == 100 and list(np.bincount(y[picked])) == [86, 12, 1, 1]  # shares, and every class
    assert np.array_equal(picked, stratified_sample(y, 100, seed=3)) and list(picked) == sorted(picked)
    assert not np.array_equal(picked, stratified_sample(y, 100, seed=4))
    assert set(picked) <= set(stratified_sample(y, 300, seed=3))  # a larger sample embeds only the rest
    assert np.array_equal(stratified_sample(y, len(y), seed=3), np.arange(len(y)))
    with pytest.raises(ConfigError, match="must be an int >= 1"):
        stratified_sample(y, 0)


def test_rank_scores_a_stratified_sample_of_data_larger_than_the_sample(tmp_path, data, backbones):
    from headstart.ranking import sample_for_ranking

    chosen = sample_for_ranking(data, 12, seed=0)
    assert len(chosen) == 12 and set(chosen.class_counts().values()) == {4}  # 3 classes of 8: 4 of each
    assert chosen.items == sample_for_ranking(data, 12, seed=0).items
    rows = rank(backbones, data, sample=12, cache_dir=tmp_path / "cache", num_workers=0)
    again = rank(backbones, data, sample=12, cache_dir=tmp_path / "cache", num_workers=0)
    assert [row.samples for row in rows] == [12, 12]
    assert [(r.model, r.logme) for r in rows] == [(r.model, r.logme) for r in again]


@pytest.mark.parametrize("sample", ["all", None, 1000, "auto"])
def test_rank_on_all_samples_when_asked_or_when_the_data_is_not_larger(tmp_path, data, backbones, sample):
    rows = rank(backbones[:1], data, sample=sample, cache_dir=tmp_path / "cache", num_workers=0)
    assert rows[0].samples == len(data) == 24


@pytest.mark.parametrize("sample", [0, -5, "some", True, 2.5])
def test_a_bad_sample_is_refused_by_name(data, backbones, sample):
    with pytest.raises(ConfigError, match="The 'sample' option of rank must be an int >= 1, 'auto' or 'all'"):
        rank(backbones, data, sample=sample)


def test_rank_command_says_it_ranked_on_a_sample_and_how_to_rank_on_all(tmp_path, data, backbones, monkeypatch,
                                                                        capsys):
    from helpers import run_cli
    from headstart.ranking import DEFAULT_SAMPLE, PER_CLASS

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("headstart.ranking.build_backbone", lambda name: backbones[0])
    model = ["--models", "tiny0", "--workers", "0"]
    code, out, err = run_cli(monkeypatch, capsys, "rank", data.source, *model, "--sample", "9")
    said = " ".join(out.split())
    assert code == 0, err
    assert "(9 samples)" in said and "ranked on a stratified sample of 9 of 24 samples; `--sample all`" in said
    code, out, err = run_cli(monkeypatch, capsys, "rank", data.source, *model, "--sample", "all", "--json")
    assert code == 0 and {row["samples"] for row in json.loads(out)} == {24}
    code, out, _ = run_cli(monkeypatch, capsys, "rank", data.source, *model)  # the default: 24 is not larger
    assert code == 0 and "stratified sample" not in out
    code, _, err = run_cli(monkeypatch, capsys, "rank", data.source, *model, "--sample", "half")
    assert code == 2 and "--sample takes a number of samples (>= 1) or 'all'. Got 'half'" in " ".join(err.split())
    code, out, _ = run_cli(monkeypatch, capsys, "rank", "--help")
    assert f"default: {DEFAULT_SAMPLE:,}, or {PER_CLASS} per class" in " ".join(out.split())  # the library's


def test_fit_auto_ranks_on_the_default_sample(tmp_path, data, monkeypatch):
    import headstart.ranking as ranking
    import headstart.transfer as transfer_module

    built = build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path, 0))
    built.name = "tiny0"
    monkeypatch.setattr(transfer_module, "build_backbone", lambda name, weights=None, pretrained=True: built)
    monkeypatch.setattr(ranking, "build_backbone", lambda name: built)
    monkeypatch.setattr(ranking, "DEFAULT_SAMPLE", 6)  # as if the data were large
    monkeypatch.setattr(ranking, "PER_CLASS", 1)
    model = hs.Transfer("auto", candidates=["tiny0"], cache_dir=tmp_path / "cache", num_workers=0).fit(data)
    assert model.ranking_[0]["samples"] == 6 < model.fit_info_["train_samples"]


def test_the_default_sample_keeps_enough_of_every_class(data, monkeypatch):
    import headstart.ranking as ranking

    monkeypatch.setattr(ranking, "DEFAULT_SAMPLE", 6)
    monkeypatch.setattr(ranking, "PER_CLASS", 3)  # 3 classes: 9 samples, more than 6
    assert len(ranking.sample_for_ranking(data)) == 9 and set(ranking.sample_for_ranking(data).class_counts().values()) == {3}
    monkeypatch.setattr(ranking, "PER_CLASS", 1)
    assert len(ranking.sample_for_ranking(data)) == 6


def test_ranking_on_all_after_a_sample_embeds_only_the_rest(tmp_path, data, backbones, monkeypatch):
    import headstart.features as features

    embedded, real = [], features.embed
    monkeypatch.setattr(features, "embed", lambda backbone, items, **kw: embedded.append(len(items)) or
                        real(backbone, items, **kw))
    rank(backbones[:1], data, sample=10, cache_dir=tmp_path / "cache", num_workers=0)
    rank(backbones[:1], data, sample="all", cache_dir=tmp_path / "cache", num_workers=0)
    assert embedded == [10, 14]


def test_rank_command_on_data_with_a_test_folder_ranks_on_the_train_part_only(tmp_path, backbones, monkeypatch,
                                                                              capsys):
    from helpers import run_cli

    root = tmp_path / "split"
    colour_folder(root / "train", per_class=6, size=32)
    colour_folder(root / "test", per_class=2, size=32, seed=1)
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("headstart.ranking.build_backbone", lambda name: backbones[0])
    code, out, err = run_cli(monkeypatch, capsys, "rank", root, "--models", "tiny0", "--workers", "0", "--json")
    assert code == 0, err
    assert {row["samples"] for row in json.loads(out)} == {18}  # 3 classes x 6: the 6 test images stay unseen
    assert "ranking on the train part" in err and "its test part stays unseen" in " ".join(err.split())
