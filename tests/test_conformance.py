"""Conformance: every registered strategy, adaptation method and backbone through the same checks.

In the style of timm's model tests and scikit-learn's ``check_estimator``: the parameters come
from the registries, so a strategy, method or backbone added without passing these fails CI.
"""

from __future__ import annotations

import re
from dataclasses import fields

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.adaptation import adaptation_names, get_adaptation
from headstart.backbones import build_backbone, registered_names
from headstart.data import image_transform
from headstart.strategies import get_strategy, strategy_names
from headstart.training import group_of_parameters

from helpers import TINY_TIMM, colour_folder, review_table, tiny_bert_folder, tiny_timm_weights

pytestmark = pytest.mark.timeout(120)
SHIFTED = {"red": (230, 90, 60), "green": (90, 220, 110), "blue": (90, 110, 240)}


@pytest.fixture(scope="module")
def image_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-images")
    data = hs.ImageFolder(colour_folder(root / "source", per_class=8, size=32))
    colour_folder(root / "target", per_class=4, size=32, seed=1, colours=SHIFTED)
    target = hs.ImageFiles(sorted((root / "target").rglob("*.png")))  # a shifted, unlabelled domain
    return f"timm:{TINY_TIMM}", tiny_timm_weights(root), data, target


@pytest.fixture(scope="module")
def text_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-text")
    return f"hf:{tiny_bert_folder(root / 'bert')}", None, hs.TextTable(review_table(root / "reviews.csv", per_class=10)), None


def fast_config(strategy: str) -> dict:
    """One short epoch for anything that trains with the loop; defaults otherwise."""
    names = {f.name for f in fields(get_strategy(strategy).config_class)}
    wanted = {"epochs": 1, "batch_size": 8, "patience": 0}
    return {k: v for k, v in wanted.items() if k in names}


def _check_probabilities(probabilities: np.ndarray, n: int, n_classes: int) -> None:
    assert probabilities.shape == (n, n_classes)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)


def _round_trip(model: hs.Transfer, data: hs.LabelledData, tmp_path) -> hs.Transfer:
    """fit -> predict -> evaluate -> save -> load: the reloaded model predicts exactly the same."""
    before = model.predict_proba(data)
    _check_probabilities(before, len(data), len(model.classes_))
    metrics = model.evaluate(data)
    assert set(metrics) >= {"accuracy", "f1", "precision", "recall", "confusion_matrix", "per_class"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(data)
    loaded = hs.load(model.save(tmp_path / "run"), device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(data), before, atol=1e-5)
    assert loaded.predict(data) == model.predict(data)
    assert loaded.classes_ == model.classes_
    assert loaded.trainable_parameters() == model.trainable_parameters()
    assert loaded.config_ == model.config_
    return loaded


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_fits_predicts_evaluates_saves_and_reloads(strategy, modality, image_case, text_case, tmp_path):
    name, weights, data, _ = image_case if modality == "image" else text_case
    model = hs.Transfer(name, strategy, config=fast_config(strategy), weights=weights, num_workers=0, device="cpu",
                        cache_dir=tmp_path / "cache")
    with pytest.raises(hs.NotFittedError):
        model.predict(data)
    assert model.fit(data) is model
    assert 0 < model.trainable_parameters() <= model.strategy_.total_parameters()
    _round_trip(model, data, tmp_path)


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_repeats_exactly_from_its_seed_whatever_the_global_random_state(strategy, image_case, tmp_path):
    name, weights, data, _ = image_case
    model = hs.Transfer(name, strategy, config=fast_config(strategy), weights=weights, num_workers=0, device="cpu",
                        cache_dir=tmp_path / "cache")
    torch.manual_seed(1)
    first = hs.clone(model).fit(data).predict_proba(data)
    torch.manual_seed(2)  # a caller's other draws must not change the run
    np.testing.assert_array_equal(hs.clone(model).fit(data).predict_proba(data), first)


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_is_cloned_unfitted_with_equal_parameters(strategy):
    model = hs.Transfer("minilm", strategy, config=get_strategy(strategy).config_class(), seed=3)
    copy = hs.clone(model)
    assert copy.get_params() == model.get_params()
    assert copy.config is not model.config  # deep: changing the copy's config never changes the original's
    assert hs.clone(model, seed=4).seed == 4
    with pytest.raises(hs.NotFittedError):
        copy.predict_proba(None)


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_config_field_has_help_and_its_default_passes_its_own_check(strategy):
    config_class = get_strategy(strategy).config_class
    for spec in fields(config_class):
        assert spec.metadata.get("help"), f"{config_class.__name__}.{spec.name} has no help text"
        check = spec.metadata.get("check")
        if check is not None and spec.default is not None:
            assert check(spec.default), f"{config_class.__name__}.{spec.name}'s default breaks its own rule"
    config_class()  # the defaults construct


ADAPTATIONS = [(method, strategy) for method in adaptation_names() for strategy in get_adaptation(method).strategies]


@pytest.mark.parametrize(("method", "strategy"), ADAPTATIONS)
def test_every_adaptation_method_with_each_of_its_strategies_round_trips(method, strategy, image_case, tmp_path):
    name, weights, data, target = image_case
    model = hs.Transfer(name, strategy, config=fast_config(strategy), weights=weights, num_workers=0, device="cpu",
                        adapt=method, cache_dir=tmp_path / "cache").fit(data, target=target)
    assert model.adapt_.name == method
    loaded = _round_trip(model, data, tmp_path)
    assert loaded.adapt_.to_dict() == model.adapt_.to_dict()


@pytest.mark.parametrize("method", adaptation_names())
def test_every_adaptation_method_refuses_a_strategy_it_does_not_compose_with(method, image_case):
    others = [s for s in strategy_names() if s not in get_adaptation(method).strategies]
    name, weights, data, target = image_case
    for strategy in others:
        with pytest.raises(hs.ConfigError, match=method):
            hs.Transfer(name, strategy, weights=weights, adapt=method).fit(data, target=target)


@pytest.mark.parametrize("name", registered_names())
def test_every_registered_backbone_meets_its_contract(name):
    backbone = build_backbone(name, pretrained=False)  # the architecture; weights are tested in test_backbones_packaged
    contract = backbone.contract
    assert contract.modality in ("image", "text") and contract.feature_dim > 0
    module = backbone.module.eval()
    if contract.modality == "image":
        from PIL import Image

        pixels = image_transform(contract)(Image.new("RGB", (300, 200), (120, 60, 30)))
        assert tuple(pixels.shape[1:]) == (contract.input_size, contract.input_size)
        with torch.inference_mode():
            features = module(pixels.unsqueeze(0))
    else:
        batch = backbone.tokenizer(["a short text"], return_tensors="pt", truncation=True,
                                   max_length=contract.max_length)
        with torch.inference_mode():
            features = module(**batch)
    assert tuple(features.shape) == (1, contract.feature_dim)
    groups = contract.layer_groups
    assert groups, f"{name} declares no layer groups"
    names = [n for n, _ in module.named_parameters()]
    assert set(group_of_parameters(module, groups)) == set(names)  # every weight belongs to a group
    for group in groups:  # and every group's patterns name weights that exist
        assert any(re.match(pattern, n) for pattern in group.patterns for n in names), f"{name}: {group}"
