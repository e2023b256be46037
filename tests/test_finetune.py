"""The fine-tuning engine on a tiny timm model and tiny generated images (seconds each)."""

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.backbones import build_backbone
from headstart.errors import ConfigError
from headstart.strategies import FinetuneConfig
from headstart.training import group_of_parameters, optimizer_groups

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def data(tmp_path):
    return hs.ImageFolder(colour_folder(tmp_path / "imgs", per_class=10, size=32))


@pytest.fixture
def weights(tmp_path):
    return tiny_timm_weights(tmp_path)


def _train(weights, data, tmp_path, strategy="finetune", callbacks=(), resume=False, **options):
    """Fit through the public API with a checkpoint; return the start backbone and its weights,
    the trained network and its history."""
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=weights, pretrained=strategy != "scratch")
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    train, val = data.split(test=0.3, seed=0)
    model = hs.Transfer(f"timm:{TINY_TIMM}", strategy, weights=weights, num_workers=0, device="cpu",
                        cache_dir=tmp_path / "cache", config={"epochs": 2, "batch_size": 8, "patience": 0, **options})
    model.fit(train, val, checkpoint=tmp_path / "ckpt.pt", resume=resume, callbacks=list(callbacks))
    return backbone, before, model.net_, model.history_


def _changed(before, after, prefix):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_frozen_groups_do_not_change_and_keep_batchnorm_statistics(tmp_path, data, weights):
    backbone, before, net, _ = _train(weights, data, tmp_path, unfreeze="1")
    after = net.backbone.state_dict()
    groups = backbone.contract.layer_groups
    index = group_of_parameters(net.backbone, groups)
    top = len(groups) - 1
    frozen_modules = {n.rsplit(".", 1)[0] for n, g in index.items() if g < top}
    for key in before:
        if key.rsplit(".", 1)[0] in frozen_modules:  # weights AND running mean/var of frozen layers
            assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if index.get(k, -1) == top)


def test_layer_decay_sets_each_group_rate_from_the_group_above():
    backbone = build_backbone(f"timm:{TINY_TIMM}", pretrained=False)
    index = group_of_parameters(backbone.module, backbone.contract.layer_groups)
    n = len(backbone.contract.layer_groups)
    head = torch.nn.Linear(backbone.contract.feature_dim, 3)
    groups = optimizer_groups(backbone.module, head, index, n, lr=1e-2, layer_decay=0.5, weight_decay=0.1,
                              head_scale=10)
    rates = {g["name"].split("/")[0]: g["lr"] for g in groups}
    assert rates["head"] == pytest.approx(1e-1)
    assert rates[f"group{n - 1}"] == pytest.approx(1e-2)
    for i in range(n - 1):
        assert rates[f"group{i}"] == pytest.approx(rates[f"group{i + 1}"] * 0.5)
    for g in groups:
        assert (g["weight_decay"] == 0.0) == g["name"].endswith("/no_decay")
        if g["weight_decay"] == 0.0:
            assert all(p.ndim <= 1 for p in g["params"])


def test_l2sp_pulls_weights_towards_the_pretrained_ones(tmp_path, data, weights):
    _, before, free, _ = _train(weights, data, tmp_path, lr=5e-2, weight_decay=0.0)
    _, _, anchored, _ = _train(weights, data, tmp_path, lr=5e-2, weight_decay=0.0, l2sp=100.0)  # clear of batch-order noise

    def distance(net):
        params = dict(net.backbone.named_parameters())
        return sum(float((params[k].detach() - before[k]).pow(2).sum()) for k in params)

    assert distance(anchored) < 0.8 * distance(free)


def test_gradual_unfreezing_adds_one_group_per_step(tmp_path, data, weights):
    from headstart.training import Callback

    seen = []

    class Count(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            seen.append(sum(p.requires_grad for p in trainer.net.backbone.parameters()))

    _train(weights, data, tmp_path, epochs=3, gradual=1, callbacks=[Count()])
    assert seen[0] < seen[1] < seen[2]


def test_resume_continues_the_same_curve(tmp_path, data, weights):
    from headstart.training import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            if epoch == 2:
                raise KeyboardInterrupt

    _, _, straight, full = _train(weights, data, tmp_path / "a", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _train(weights, data, tmp_path / "b", epochs=3, callbacks=[Interrupt()])
    _, _, _, resumed = _train(weights, data, tmp_path / "b", epochs=3, resume=True)
    assert len(resumed) == 3
    for a, b in zip(full, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_early_stopping_restores_the_best_epoch(tmp_path, data, weights):
    _, _, net, history = _train(weights, data, tmp_path, epochs=4, patience=1, lr=0.5)
    best = max(history, key=lambda row: row["val_f1"])
    assert len(history) <= 4
    train, val = data.split(test=0.3, seed=0)
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=weights)
    from headstart.inference import network_probabilities

    probabilities = network_probabilities(net, val.with_classes(data.classes), backbone, torch.device("cpu"), 8, 0)
    from sklearn.metrics import f1_score

    f1 = f1_score(val.y, probabilities.argmax(1), average="macro", labels=sorted(set(val.y) | set(probabilities.argmax(1))))
    assert f1 == pytest.approx(best["val_f1"], abs=1e-6)


@pytest.mark.parametrize("strategy", ["finetune", "lp-ft", "scratch"])
def test_each_network_strategy_fits_saves_and_reloads(tmp_path, data, weights, strategy):
    train, test = data.split(test=0.3, seed=0)
    model = hs.Transfer(f"timm:{TINY_TIMM}", strategy, weights=weights, num_workers=0,
                        config={"epochs": 2, "batch_size": 8}).fit(train)
    assert len(model.history_) >= 1 and model.fit_info_["trainable_params"] > 0
    assert all(row["seconds"] > 0 for row in model.history_)  # each epoch's wall time, for history.csv
    model.save(tmp_path / "run")
    assert (tmp_path / "run" / "history.csv").read_text().startswith("epoch,train_loss")
    loaded = hs.load(tmp_path / "run", device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-5)


def test_a_diverging_loss_stops_with_a_clear_message(tmp_path, data, weights, monkeypatch):
    from headstart.training import TrainingDiverged
    from headstart.training import loop

    monkeypatch.setattr(loop.nn.CrossEntropyLoss, "forward", lambda self, a, b: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match="became nan at epoch 1, step 1"):
        _train(weights, data, tmp_path)


def test_bad_finetune_options_are_rejected():
    with pytest.raises(ConfigError, match="The 'lr' option of finetune must be a float > 0. Got -1"):
        FinetuneConfig(lr=-1)
    with pytest.raises(ConfigError, match="'unfreeze' option"):
        FinetuneConfig(unfreeze="some")
    with pytest.raises(ConfigError, match="'randaugment' option of finetune must be a timm RandAugment policy"):
        FinetuneConfig(randaugment="bogus")
    with pytest.raises(ConfigError, match="'randaugment' option"):
        FinetuneConfig(randaugment="randx")
    assert FinetuneConfig(randaugment="rand-m9-mstd0.5").randaugment == "rand-m9-mstd0.5"


def test_batchnorm_statistics_stay_pretrained_unless_train_bn(tmp_path, data, weights):
    _, before, net, _ = _train(weights, data, tmp_path)
    after = net.backbone.state_dict()
    running = [k for k in before if k.endswith("running_mean")]
    assert running and all(torch.equal(before[k], after[k]) for k in running)
    _, before, net, _ = _train(weights, data, tmp_path, train_bn=True)
    assert any(not torch.equal(before[k], net.backbone.state_dict()[k]) for k in running)


def test_lp_ft_starts_from_a_probe_that_never_saw_the_validation_split(tmp_path, data, weights, monkeypatch):
    """lp-ft early-stops on val, so its starting head must be fit on train alone."""
    from headstart.features import extract_features
    from headstart.heads import fit_linear_probe
    from headstart.strategies import network

    started_from = {}
    real_train_network = network.train_network

    def spy(plan, config, job):
        started_from["weight"] = plan.head.weight.detach().clone()
        return real_train_network(plan, config, job)

    monkeypatch.setattr(network, "train_network", spy)
    train, val = data.split(test=0.3, seed=0)
    hs.Transfer(f"timm:{TINY_TIMM}", "lp-ft", weights=weights, num_workers=0, cache_dir=tmp_path / "cache",
                config={"epochs": 1, "batch_size": 8}).fit(train, val)
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=weights)
    x_train, x_val = (extract_features(backbone, part, cache_dir=tmp_path / "cache", num_workers=0) for part in (train, val))
    val = val.with_classes(train.classes)
    on_train = fit_linear_probe(x_train, train.y, x_val, val.y, len(train.classes), refit_on_all=False).head
    on_both = fit_linear_probe(x_train, train.y, x_val, val.y, len(train.classes), refit_on_all=True).head
    assert not torch.allclose(on_train.weight, on_both.weight, atol=1e-4)  # the test can tell them apart
    torch.testing.assert_close(started_from["weight"], on_train.weight, atol=1e-5, rtol=1e-4)


def test_refit_trains_again_on_all_the_training_data_for_the_best_epoch_count(tmp_path, data, weights):
    train, test = data.split(test=0.3, seed=0)
    options = {"epochs": 3, "batch_size": 8, "patience": 0}
    chosen = hs.Transfer(f"timm:{TINY_TIMM}", "finetune", weights=weights, num_workers=0, device="cpu",
                         cache_dir=tmp_path / "cache", config=options).fit(train)
    refitted = hs.Transfer(f"timm:{TINY_TIMM}", "finetune", weights=weights, num_workers=0, device="cpu",
                           cache_dir=tmp_path / "cache", config=options, refit=True).fit(train)
    refit = refitted.fit_info_["refit"]
    assert refit == {"train_samples": len(train), "epochs": refitted.fit_info_["best_epoch"]}  # validation included
    losses = [[row[k] for row in model.history_ for k in ("train_loss", "val_loss")] for model in (chosen, refitted)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)  # the selection's curves are kept
    first, second = chosen.net_.state_dict(), refitted.net_.state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)  # a new network, trained on more data
    assert refitted.evaluate(test)["samples"] == len(test)
    with pytest.raises(ConfigError, match="leave `refit` off"):
        hs.Transfer(f"timm:{TINY_TIMM}", "finetune", weights=weights, device="cpu", refit=True).fit(train, test)
    probe = hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, num_workers=0, device="cpu",
                        cache_dir=tmp_path / "cache", refit=True).fit(train)
    assert "refit" not in probe.fit_info_  # the linear probe's final head already uses its validation share
