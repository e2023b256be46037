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
