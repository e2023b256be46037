"""Domain adaptation: each method on a two-domain problem where source-only fails, the
gradient-reversal layer, the shift score, and adapted models as ordinary runs."""

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import headstart as hs
from headstart.adaptation import (AdaBNConfig, CoralAlignment, DannConfig, DomainAdversarialLoss, MmdConfig, MmdLoss,
                                  domain_shift, ganin_schedule, make_adaptation, multi_kernel_mmd,
                                  reestimate_batchnorm, reverse_gradient)
from headstart.errors import ConfigError
from headstart.heads import fit_linear_probe
from headstart.training import LoopSettings, Trainer, TransferNet

from helpers import TINY_TIMM, colour_folder, tiny_bert_folder, tiny_timm_weights
from test_cli import run_cli

pytestmark = pytest.mark.timeout(180)


def two_domains(n=400, d=16, seed=0, angle=0.6, offset=6.0):
    """A 3-class Gaussian mixture (source) and the same mixture stretched, rotated and shifted (target)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 2 * n)
    means = np.zeros((3, d))
    means[0, 0], means[1, 1], means[2, :2] = 3.0, 3.0, -2.2
    x = means[y] + rng.normal(size=(2 * n, d)) * np.linspace(0.5, 1.5, d)
    rotation = np.eye(d)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    target = x[n:] @ np.diag(np.linspace(4.0, 0.25, d)) @ rotation + offset
    return x[:n].astype(np.float32), y[:n], target.astype(np.float32), y[n:]


def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


def probe(x_train, y_train, x_val, y_val):
    return fit_linear_probe(x_train, y_train, x_val, y_val, 3).head


def train_mlp(xs, ys, xt, auxiliary_of=None, epochs=20, seed=0):
    """An MLP 'backbone' + linear head trained by the one loop, with an optional adaptation loss."""
    torch.manual_seed(seed)
    net = TransferNet(nn.Sequential(nn.Linear(xs.shape[1], 64), nn.ReLU(), nn.Linear(64, 16)), nn.Linear(16, 3))
    source = DataLoader(TensorDataset(torch.as_tensor(xs[:300]), torch.as_tensor(ys[:300])), batch_size=32,
                        shuffle=True, drop_last=True)
    val = DataLoader(TensorDataset(torch.as_tensor(xs[300:]), torch.as_tensor(ys[300:])), batch_size=100)
    target = DataLoader(TensorDataset(torch.as_tensor(xt), torch.full((len(xt),), -1)), batch_size=32,
                        shuffle=True, drop_last=True)
    auxiliary = auxiliary_of(target) if auxiliary_of else None
    optimizer = torch.optim.AdamW(list(net.parameters()) + (auxiliary.parameters() if auxiliary else []), lr=3e-3)
    trainer = Trainer(net, optimizer, LoopSettings(epochs=epochs, warmup_epochs=0.0), ["a", "b", "c"],
                      callbacks=[auxiliary] if auxiliary else [])
    trainer.fit(source, val)
    return net, trainer.history


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small networks gain nothing from threads, and lose much when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def domains():
    return two_domains()


@pytest.fixture(scope="module")
def source_only_mlp(domains):
    xs, ys, xt, yt = domains
    net, _ = train_mlp(xs, ys, xt)
    return accuracy(net, xs[300:], ys[300:]), accuracy(net, xt, yt)


# -- the methods recover what source-only loses ----------------------------------------------
def test_coral_recovers_most_of_the_accuracy_a_shifted_and_rotated_mixture_loses(domains):
    xs, ys, xt, yt = domains
    source_acc = accuracy(probe(xs[:300], ys[:300], xs[300:], ys[300:]), xs[300:], ys[300:])
    source_only = accuracy(probe(xs[:300], ys[:300], xs[300:], ys[300:]), xt, yt)
    alignment = CoralAlignment().fit(xs[:300], xt)
    adapted = accuracy(probe(alignment.transform(xs[:300]), ys[:300], alignment.transform(xs[300:]), ys[300:]), xt, yt)
    assert source_acc > 0.97 and source_only < 0.75  # the shift costs source-only a lot
    assert adapted - source_only > 0.6 * (source_acc - source_only)


def test_coral_maps_source_statistics_onto_the_target_statistics():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2000, 3)) * [1.0, 2.0, 0.5]
    target = rng.normal(size=(2000, 3)) @ [[2, 0.5, 0], [0, 1, 0.3], [0, 0, 3]] + 5
    moved = CoralAlignment(regularisation=1e-6).fit(source, target).transform(source)
    assert np.allclose(moved.mean(0), target.mean(0), atol=1e-3)
    assert np.allclose(np.cov(moved, rowvar=False), np.cov(target, rowvar=False), atol=1e-2)


def test_mmd_fine_tuning_recovers_most_of_the_lost_accuracy(domains, source_only_mlp):
    xs, ys, xt, yt = domains
    source_acc, source_only = source_only_mlp
    net, history = train_mlp(xs, ys, xt, lambda target: MmdLoss(MmdConfig(), target))
    assert source_only < 0.75
    assert accuracy(net, xt, yt) - source_only > 0.6 * (source_acc - source_only)
    assert "train_auxiliary_loss" in history[0]


def test_dann_fine_tuning_recovers_most_of_the_lost_accuracy(domains, source_only_mlp):
    xs, ys, xt, yt = domains
    source_acc, source_only = source_only_mlp
    net, _ = train_mlp(xs, ys, xt, lambda target: DomainAdversarialLoss(DannConfig(hidden=64), 16, target), seed=1)
    assert accuracy(net, xt, yt) - source_only > 0.6 * (source_acc - source_only)


def test_adabn_undoes_a_per_feature_shift_of_the_target():
    xs, ys, _, _ = two_domains(d=8)
    offset = np.zeros(8)
    offset[:2] = [3.0, -3.0]
    xt, yt = (xs * np.linspace(0.3, 3.0, 8) + offset).astype(np.float32), ys  # same samples, other scales and offsets
    torch.manual_seed(0)
    net = TransferNet(nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    loader = DataLoader(TensorDataset(torch.as_tensor(xs), torch.as_tensor(ys)), batch_size=50, shuffle=True)
    Trainer(net, optimizer, LoopSettings(epochs=10, warmup_epochs=0.0), ["a", "b", "c"]).fit(loader, loader)
    source_only = accuracy(net, xt, yt)
    reestimate_batchnorm(net.backbone, DataLoader(TensorDataset(torch.as_tensor(xt)), batch_size=64))
    assert source_only < 0.7 and accuracy(net, xt, yt) > 0.95


# -- the parts ------------------------------------------------------------------------------
def test_gradient_reversal_reverses_and_scales_gradients():
    x = torch.randn(4, 3, requires_grad=True)
    out = reverse_gradient(x, 0.25)
    assert torch.equal(out, x)
    (out * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


def test_ganin_schedule_ramps_from_zero_to_almost_one():
    assert ganin_schedule(0.0) == 0.0
    assert 0.45 < ganin_schedule(0.1) < 0.5 and ganin_schedule(1.0) > 0.9999
    assert all(a < b for a, b in zip([ganin_schedule(p / 10) for p in range(10)], [ganin_schedule(p / 10) for p in range(1, 11)]))


def test_mmd_is_zero_for_one_sample_and_grows_with_the_shift():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    assert float(multi_kernel_mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    values = [float(multi_kernel_mmd(x[:100], x[100:] + shift)) for shift in (0.0, 0.5, 2.0)]
    assert values[0] < values[1] < values[2]


def test_shift_score_is_near_zero_within_a_domain_and_near_two_across_disjoint_domains(domains):
    xs, _, xt, _ = domains
    same = domain_shift(xs[:200], xs[200:])
    apart = domain_shift(xs, xt)
    assert same.proxy_a_distance < 0.3 and apart.proxy_a_distance > 1.9
    assert same.mmd < apart.mmd
    assert "overlap" in same.verdict() and "separable" in apart.verdict()


def test_adapt_configs_from_names_dicts_and_objects_with_clear_errors():
    assert make_adaptation("mmd").config == MmdConfig()
    assert make_adaptation({"method": "dann", "weight": 0.3}).config.weight == 0.3
    assert make_adaptation(AdaBNConfig(source_statistics=False)).config.source_statistics is False
    assert make_adaptation(AdaBNConfig()).name == "adabn"
    with pytest.raises(ConfigError, match="Did you mean 'coral'"):
        make_adaptation("corel")
    with pytest.raises(ConfigError, match="hidden does not apply to the mmd method"):
        make_adaptation({"method": "mmd", "hidden": 3})
    with pytest.raises(ConfigError, match="'weight' option of dann must be a float > 0"):
        DannConfig(weight=0)


# -- through Transfer, on tiny images and texts ---------------------------------------------
DARK = {"red": (110, 30, 30), "green": (30, 100, 45), "blue": (30, 45, 110)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    weights = tiny_timm_weights(root)
    source = colour_folder(root / "source", per_class=10, size=32)
    target = colour_folder(root / "target", per_class=8, size=32, seed=1, colours=DARK)
    return weights, source, target


def test_an_adapted_model_is_a_normal_run_that_loads_and_predicts(tiny, tmp_path):
    weights, source, target = tiny
    for method in ("coral", "adabn"):
        fitted = hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, adapt=method, num_workers=0).fit(
            hs.ImageFolder(source), target=hs.ImageFiles(target))
        metrics = fitted.evaluate(hs.ImageFolder(target))
        fitted.save(tmp_path / method, metrics={"target": metrics})
        loaded = hs.load(tmp_path / method)
        assert loaded.evaluate(hs.ImageFolder(target))["accuracy"] == metrics["accuracy"]
        assert yaml.safe_load((tmp_path / method / "config.yaml").read_text())["adapt"]["method"] == method
    # adabn: the saved network normalises with the target's statistics, not the pre-trained ones
    pretrained = hs.build_backbone(f"timm:{TINY_TIMM}", weights=weights).module
    bn = next(n for n, m in pretrained.named_modules() if isinstance(m, nn.BatchNorm2d))
    saved = dict(loaded.net_.backbone.named_modules())[bn]
    assert not torch.allclose(saved.running_mean, dict(pretrained.named_modules())[bn].running_mean)


def test_target_without_method_method_without_target_and_wrong_strategy_are_errors(tiny):
    weights, source, target = tiny
    data, unlabelled = hs.ImageFolder(source), hs.ImageFiles(target)
    with pytest.raises(ConfigError, match="only used for domain adaptation"):
        hs.Transfer(f"timm:{TINY_TIMM}", weights=weights).fit(data, target=unlabelled)
    with pytest.raises(ConfigError, match="needs unlabelled target data"):
        hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, adapt="coral").fit(data)
    with pytest.raises(ConfigError, match="does not work with strategy 'linear-probe'; use strategy 'finetune'"):
        hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, adapt="dann").fit(data, target=unlabelled)


def test_adabn_on_a_text_backbone_says_it_has_no_batchnorm_and_suggests_coral(tmp_path):
    from helpers import review_table

    folder = tiny_bert_folder(tmp_path / "bert")
    table = hs.TextTable(review_table(tmp_path / "reviews.csv"))
    with pytest.raises(ConfigError, match="has no BatchNorm layer.*Use `--method coral`"):
        hs.Transfer(f"hf:{folder}", adapt="adabn").fit(table, target=hs.TextTable(tmp_path / "reviews.csv", label=None))


def test_unlabelled_text_table_is_a_target(tmp_path):
    from helpers import review_table

    folder = tiny_bert_folder(tmp_path / "bert")
    path = review_table(tmp_path / "reviews.csv")
    fitted = hs.Transfer(f"hf:{folder}", adapt="coral").fit(hs.TextTable(path), target=hs.TextTable(path, label=None))
    assert fitted.evaluate(hs.TextTable(path))["accuracy"] > 0.9


# -- the commands -----------------------------------------------------------------------------
def test_cli_adapt_reports_source_only_and_adapted_metrics(tiny, tmp_path, monkeypatch, capsys):
    weights, source, target = tiny
    code, out, err = run_cli(monkeypatch, capsys, "adapt", source, target, "--model", f"timm:{TINY_TIMM}", "--weights",
                             weights, "--method", "mmd", "--epochs", "1", "--train-batch", "8", "--out", tmp_path / "run",
                             "--target-eval", target, "--workers", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == "mmd" and set(report) == {"method", "source_only", "adapted"}
    assert {"accuracy", "balanced_accuracy", "f1", "per_class", "confusion_matrix"} <= set(report["adapted"])
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", tmp_path / "run", target, "--json")
    assert code == 0 and json.loads(out)["accuracy"] == report["adapted"]["accuracy"]
    page = (tmp_path / "run" / "report.html").read_text()  # an adapted run is a normal run, with its report
    assert '<section id="adaptation">' in page and "<b>mmd</b>" in page and "source-only" in page
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())  # export checks parity on them
    assert len(predictions) == metrics["test"]["samples"] and {"location", "true", "predicted"} <= set(predictions[0])


def test_cli_adapt_rejects_training_options_of_a_head_only_method(tiny, tmp_path, monkeypatch, capsys):
    weights, source, target = tiny
    code, _, err = run_cli(monkeypatch, capsys, "adapt", source, target, "--method", "coral", "--epochs", "3",
                           "--out", tmp_path / "run")
    assert code == 2 and "--epochs does not apply to coral" in err


def test_cli_shift_scores_the_same_domain_low_and_another_high(tiny, monkeypatch, capsys):
    weights, source, target = tiny
    scores = {}
    for name, other in (("same", source), ("other", target)):
        code, out, err = run_cli(monkeypatch, capsys, "shift", source, other, "--model", f"timm:{TINY_TIMM}",
                                 "--weights", weights, "--json")
        assert code == 0, err
        scores[name] = json.loads(out)
    assert scores["same"]["proxy_a_distance"] < 0.5 < 1.5 < scores["other"]["proxy_a_distance"]
    assert scores["other"]["verdict"]
