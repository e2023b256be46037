"""Extraction, prediction, AdaBN and training turn items into backbone inputs one way.

Each user is compared with the backbone (or network) applied by hand to the batches of the
shared :func:`headstart.data.inference_loader`: equal inputs give bit-identical outputs.
"""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from headstart.adaptation.adabn import AdaBN, AdaBNConfig, batchnorm_layers, reestimate_batchnorm, with_batchnorm_statistics
from headstart.adaptation.coral import Coral, CoralAlignment, CoralConfig
from headstart.backbones import build_backbone
from headstart.data import (ImageFolder, LabelledData, call_module, image_transform, inference_loader, labelled_loader,
                            load_image, to_device)
from headstart.errors import ConfigError
from headstart.features import embed
from headstart.inference import network_probabilities
from headstart.training import TransferNet

from helpers import TINY_TIMM, colour_folder, tiny_bert_folder, tiny_timm_weights

TEXTS = ["a very long review of a product that broke after a week", "short", "fine", "good value for money",
         "it works", "the worst purchase I have made in years, do not buy"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference-path")
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(root))
    return backbone, ImageFolder(colour_folder(root / "imgs", per_class=3))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    backbone = build_backbone(f"hf:{tiny_bert_folder(tmp_path_factory.mktemp('bert') / 'bert')}")
    return backbone, LabelledData("text", TEXTS, ["pos", "neg", "pos", "pos", "pos", "neg"])


def _by_hand(module, batches) -> np.ndarray:
    """A backbone's outputs (or a TransferNet's, which takes a tokenizer dict whole) on the batches."""
    run = (lambda batch: module(batch)) if isinstance(module, TransferNet) else (lambda batch: call_module(module, batch))
    module.eval()
    with torch.inference_mode():
        return torch.cat([run(batch) for batch in batches]).numpy()


def _net(backbone, n_classes=3) -> TransferNet:
    torch.manual_seed(0)
    return TransferNet(backbone.module.eval(), nn.Linear(backbone.contract.feature_dim, n_classes)).eval()


def test_image_batches_are_the_evaluation_transform_in_the_contracts_layout(images):
    backbone, data = images
    batches = list(inference_loader(backbone, data.items, batch_size=4))
    transform = image_transform(backbone.contract)
    assert backbone.contract.channels_last
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in batches)
    torch.testing.assert_close(torch.cat(batches), torch.stack([transform(load_image(p)) for p in data.items]),
                               rtol=0, atol=0)


def test_worker_processes_give_the_same_batches(images):
    backbone, data = images
    alone = list(inference_loader(backbone, data.items, batch_size=4, num_workers=0))
    workers = list(inference_loader(backbone, data.items, batch_size=4, num_workers=1))
    assert all(torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last) for a, b in zip(alone, workers))


def test_evaluation_batches_of_labelled_loader_are_the_inference_batches(images):
    backbone, data = images
    pairs = list(labelled_loader(data, backbone.contract, train=False, batch_size=4))
    for (inputs, labels), batch in zip(pairs, inference_loader(backbone, data.items, batch_size=4)):
        assert torch.equal(inputs, batch) and labels.dtype == torch.int64
    assert torch.cat([labels for _, labels in pairs]).tolist() == data.y.tolist()


def test_embed_and_network_probabilities_see_the_inference_batches_of_images(images):
    backbone, data = images
    batches = list(inference_loader(backbone, data.items, batch_size=4))
    got = embed(backbone, data.items, batch_size=4, num_workers=0)
    np.testing.assert_array_equal(got, _by_hand(backbone.module, batches))
    net = _net(backbone)
    expected = torch.softmax(torch.as_tensor(_by_hand(net, batches)), dim=1).numpy()
    np.testing.assert_array_equal(network_probabilities(net, data, backbone, torch.device("cpu"), 4, 0), expected)


def test_adabn_estimates_statistics_on_the_inference_batches(images):
    backbone, data = images
    got = with_batchnorm_statistics(backbone, data, batch_size=4)
    expected = reestimate_batchnorm(copy.deepcopy(backbone.module), inference_loader(backbone, data.items, batch_size=4))
    for a, b in zip(batchnorm_layers(got), batchnorm_layers(expected)):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    assert got is not backbone.module


def test_text_users_see_the_inference_batches(texts):
    backbone, data = texts
    order = sorted(range(len(TEXTS)), key=lambda i: len(TEXTS[i]))  # embed pads little: texts in length order
    sorted_batches = list(inference_loader(backbone, [TEXTS[i] for i in order], batch_size=2))
    assert all(isinstance(b, dict) and "input_ids" in b for b in sorted_batches)
    expected = np.empty((len(TEXTS), backbone.contract.feature_dim), np.float32)
    expected[order] = _by_hand(backbone.module, sorted_batches)
    np.testing.assert_array_equal(embed(backbone, TEXTS, batch_size=2, num_workers=0), expected)
    net = _net(backbone, 2)
    logits = _by_hand(net, inference_loader(backbone, TEXTS, batch_size=2))
    np.testing.assert_array_equal(network_probabilities(net, data, backbone, torch.device("cpu"), 2, 0),
                                  torch.softmax(torch.as_tensor(logits), dim=1).numpy())


def test_text_labelled_loader_tokenizes_like_inference(texts):
    backbone, data = texts
    pairs = labelled_loader(data, backbone.contract, tokenizer=backbone.tokenizer, train=False, batch_size=4)
    for (inputs, labels), batch in zip(pairs, inference_loader(backbone.contract, TEXTS, tokenizer=backbone.tokenizer,
                                                               batch_size=4)):
        assert inputs.keys() == batch.keys() and all(torch.equal(inputs[k], batch[k]) for k in batch)
        assert labels.dtype == torch.int64


def test_to_device_moves_tensors_and_dicts_into_the_asked_layout():
    image = torch.zeros(2, 3, 4, 4)
    assert to_device(image, "cpu", channels_last=True).is_contiguous(memory_format=torch.channels_last)
    assert to_device(image, "cpu").is_contiguous()
    moved = to_device({"input_ids": torch.ones(2, 3, dtype=torch.int64)}, "cpu")
    assert moved["input_ids"].dtype == torch.int64


# -- the registered methods ---------------------------------------------------------------------------
def _job(backbone, train, val, target, calls, trains_backbone=False):
    def features(data, stage, module=None):  # FitJob.features: a given module is a modified backbone copy
        calls.append((stage, module))
        return _by_hand(backbone.module if module is None else module, inference_loader(backbone, data.items, batch_size=4))
    return SimpleNamespace(backbone=backbone, train=train, val=val, target=target, batch_size=4, num_workers=0,
                           device=torch.device("cpu"), features=features,
                           strategy=SimpleNamespace(trains_backbone=trains_backbone))


def test_adabn_fits_a_probe_on_source_statistics_and_ends_on_the_targets(images):
    backbone, data = images
    train, val, target = data.subset(range(0, 9, 2)), data.subset(range(1, 9, 2)), data.subset(range(3, 9))
    calls = []
    job = _job(backbone, train, val, target, calls)
    method = AdaBN()
    method.check_backbone(job)
    x_train, _ = method.head_features(job)
    assert [stage for stage, _ in calls] == ["train features", "validation features"]
    assert calls[0][1] is calls[1][1] is not None  # one copy, normalised with train's statistics
    np.testing.assert_array_equal(x_train, _by_hand(with_batchnorm_statistics(backbone, train, batch_size=4),
                                                    inference_loader(backbone, train.items, batch_size=4)))
    for method_of_run, fine_tunes in ((AdaBN({"source_statistics": False}), False), (AdaBN(), True)):
        calls.clear()  # without source statistics, or before fine-tuning: the cached default features
        method_of_run.head_features(_job(backbone, train, val, target, calls, trains_backbone=fine_tunes))
        assert [module for _, module in calls] == [None, None]
    strategy = SimpleNamespace(net_=_net(backbone), replace_backbone=lambda module: setattr(strategy, "new", module))
    method.after_fit(job, strategy)
    expected = with_batchnorm_statistics(backbone, target, batch_size=4)
    assert torch.equal(batchnorm_layers(strategy.new)[-1].running_mean, batchnorm_layers(expected)[-1].running_mean)


def test_coral_fits_the_head_on_aligned_features(images):
    backbone, data = images
    train, val, target = data.subset(range(0, 9, 2)), data.subset(range(1, 9, 2)), data.subset(range(3, 9))
    calls = []
    x_train, x_val = Coral({"regularisation": 2.0}).head_features(_job(backbone, train, val, target, calls))
    assert [stage for stage, _ in calls] == ["train features", "validation features", "target features"]
    features = {name: embed(backbone, d.items, batch_size=4, num_workers=0) for name, d in
                (("train", train), ("val", val), ("target", target))}
    alignment = CoralAlignment(2.0, True).fit(features["train"], features["target"])
    np.testing.assert_allclose(x_val, alignment.transform(features["val"]), atol=1e-5)
    np.testing.assert_allclose(x_train, alignment.transform(features["train"]), atol=1e-5)


def test_method_configs_check_their_options():
    with pytest.raises(ConfigError, match=r"The 'regularisation' option of coral must be a float > 0. Got 0 instead."):
        CoralConfig(regularisation=0)
    with pytest.raises(ConfigError, match="'source_statistics' option of adabn"):
        AdaBNConfig(source_statistics="yes")
    assert Coral.strategies == ("linear-probe",) and AdaBN.strategies == ("linear-probe", "finetune", "lp-ft")
