"""`headstart pretrain`: each method trains and lowers its loss, its run is a backbone (`run:PATH`) with the
base's contract and a digest of its own, resume continues exactly, the report shows the curve and the probe;
on tiny models and data (seconds each)."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.backbones import build_backbone
from headstart.errors import ConfigError, DataError
from headstart.pretraining import pretrain, resume_pretraining
from headstart.workflows import CHECKPOINT, work_dir

from helpers import TINY_TIMM, colour_folder, review_table, run_cli, tiny_bert_folder, tiny_timm_weights

pytestmark = pytest.mark.timeout(300)
TEXT = {"epochs": 3, "lr": 1e-3, "batch_size": 8, "val_fraction": 0.25}
IMAGES = {"epochs": 3, "lr": 1e-3, "batch_size": 7, "val_fraction": 0.25}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def bert(root):
    return tiny_bert_folder(root / "bert")


@pytest.fixture(scope="module")
def reviews(root):
    return review_table(root / "reviews.csv", per_class=12)


@pytest.fixture(scope="module")
def texts(root, reviews):
    """The reviews' texts without labels, one per line."""
    path = root / "texts.txt"
    with open(reviews, newline="") as handle:
        path.write_text("".join(row["text"] + "\n" for row in csv.DictReader(handle)))
    return path


@pytest.fixture(scope="module")
def images(root):
    return colour_folder(root / "images", per_class=6, size=24)


@pytest.fixture(scope="module")
def flat_images(root, images):
    """The same images in one folder: no class folders, no labels."""
    flat = root / "flat"
    flat.mkdir()
    for path in images.rglob("*.png"):
        shutil.copy(path, flat / f"{path.parent.name}-{path.name}")
    return flat


@pytest.fixture(scope="module")
def weights(root):
    return tiny_timm_weights(root)


def _text(texts, out, bert, method, **settings):
    return pretrain(texts, out, method=method, model=f"hf:{bert}", config=TEXT, device="cpu",
                    cache_dir=out.parent / "cache", **settings)


@pytest.fixture(scope="module")
def runs(root, bert, texts, reviews, flat_images, images, weights):
    """One run of each self-supervised method, the text ones probed on the labelled reviews."""
    made = {method: _text(texts, root / method, bert, method, eval_data=reviews) for method in ("tsdae", "simcse")}
    made["simclr"] = pretrain(flat_images, root / "simclr", method="simclr", model=f"timm:{TINY_TIMM}", weights=weights,
                              config=IMAGES, device="cpu", workers=0, cache_dir=root / "cache", eval_data=images)
    return made


def _base(method, bert, weights):
    return build_backbone(f"timm:{TINY_TIMM}", weights=weights) if method == "simclr" else build_backbone(f"hf:{bert}")


@pytest.mark.parametrize("method", ["tsdae", "simcse", "simclr"])
def test_each_method_lowers_its_validation_loss(runs, method):
    curve = runs[method].history
    assert len(curve) == 3
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    if method != "simclr":  # two batches an epoch: simclr's training mean is noisy at this size
        assert curve[-1]["train_loss"] < curve[0]["train_loss"]


@pytest.mark.parametrize("method", ["tsdae", "simcse", "simclr"])
def test_a_pretrained_run_is_a_backbone_with_the_base_contract_and_a_digest_of_its_own(runs, method, bert, weights,
                                                                                   texts, flat_images):
    base, run = _base(method, bert, weights), runs[method]
    backbone = build_backbone(run.backbone_name)
    assert backbone.name == f"run:{run.out_dir.resolve()}"
    assert backbone.contract == base.contract and backbone.contract.layer_groups == base.contract.layer_groups
    assert backbone.weights_digest != base.weights_digest and backbone.cache_key != base.cache_key
    assert backbone.source_head is None  # no classes: nothing for LEEP
    data = hs.ImageFiles(flat_images) if method == "simclr" else hs.TextTable(texts, label=None)
    features = [hs.extract_features(b, data, use_cache=False, num_workers=0) for b in (backbone, base)]
    assert not np.allclose(*features, atol=1e-4)


@pytest.fixture(scope="module")
def masked_lm(root, texts):
    bert = tiny_bert_folder(root / "bert-mlm", masked_lm=True)
    return bert, _text(texts, root / "mlm", bert, "mlm")


def test_mlm_continues_the_encoders_masked_lm_training_and_its_run_is_a_backbone(masked_lm, texts):
    bert, run = masked_lm
    curve = run.history
    assert len(curve) == 3 and curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    data = hs.TextTable(texts, label=None)
    base, trained = build_backbone(f"hf:{bert}"), build_backbone(run.backbone_name)
    assert trained.contract == base.contract
    features = [hs.extract_features(b, data, use_cache=False, num_workers=0) for b in (trained, base)]
    assert not np.allclose(*features, atol=1e-4)


def test_mlm_refuses_an_encoder_that_kept_no_masked_lm_head(bert, texts, tmp_path):
    with pytest.raises(ConfigError, match="keeps no masked-LM head.*--method tsdae"):
        pretrain(texts, tmp_path / "x", method="mlm", model=f"hf:{bert}", device="cpu")


def test_the_feature_cache_keys_a_pretrained_run_apart_from_its_base(runs, bert, texts, tmp_path):
    data = hs.TextTable(texts, label=None)
    base = hs.extract_features(build_backbone(f"hf:{bert}"), data, cache_dir=tmp_path)
    run = build_backbone(runs["simcse"].backbone_name)
    assert not np.allclose(hs.extract_features(run, data, cache_dir=tmp_path), base, atol=1e-4)


def test_a_probe_fits_on_a_pretrained_run_and_a_chain_pretrains_it_again(runs, reviews, texts, bert, tmp_path):
    probe = hs.Transfer(runs["simcse"].backbone_name, cache_dir=tmp_path).fit(hs.TextTable(reviews))
    assert probe.evaluate(hs.TextTable(reviews))["accuracy"] > 0.7
    chained = pretrain(texts, tmp_path / "again", method="tsdae", model=runs["simcse"].backbone_name,
                       config={**TEXT, "epochs": 1}, device="cpu")
    assert chained.model == runs["simcse"].backbone_name
    assert build_backbone(chained.backbone_name).contract == build_backbone(f"hf:{bert}").contract


def test_tsdae_keeps_a_run_backbones_own_weights_when_it_ties_its_decoder(runs, texts):
    from headstart.pretraining.configs import TsdaeConfig
    from headstart.pretraining.job import PretrainJob
    from headstart.pretraining.text import tsdae_objective

    backbone = build_backbone(runs["simcse"].backbone_name)  # its encoder folder holds the base's weights
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    data = hs.TextTable(texts, label=None)
    tsdae_objective(PretrainJob(backbone, backbone.name, None, data, None, TsdaeConfig()))
    after = backbone.module.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_the_run_and_its_report_hold_the_curve_the_cost_and_the_probe_before_and_after(runs):
    run = runs["tsdae"]
    document = json.loads((run.out_dir / "pretraining.json").read_text())
    assert document["method"] == "tsdae" and len(document["curve"]) == 3
    assert document["cost"]["samples_seen"] > 0 and document["cost"]["seconds_per_1000_samples"] > 0
    probe = document["probe"]
    assert set(probe["before"]) >= {"accuracy", "f1"} and set(probe["after"]) >= {"accuracy", "f1"}
    assert probe["gain_points"] == pytest.approx(100 * (probe["after"]["accuracy"] - probe["before"]["accuracy"]),
                                                 abs=0.01)
    page = (run.out_dir / "report.html").read_text()
    assert 'id="pretraining"' in page and "Linear probe before and after" in page and 'alt="pre-training loss"' in page
    assert "pre-training method" in page and "finetune" not in page  # how the run is read back is no strategy


def test_supervised_pretraining_is_a_finetune_run_the_next_task_uses_as_backbone(images, weights, tmp_path):
    run = pretrain(images, tmp_path / "source", method="supervised", model=f"timm:{TINY_TIMM}", weights=weights,
                   config={"epochs": 1, "batch_size": 8}, device="cpu", workers=0, cache_dir=tmp_path / "cache")
    assert hs.load(run.out_dir, device="cpu").classes_ == ["blue", "green", "red"]  # a classifier of the source
    backbone = build_backbone(run.backbone_name)
    assert backbone.source_head.out_features == 3
    assert json.loads((run.out_dir / "pretraining.json").read_text())["method"] == "supervised"
    target = hs.Transfer(run.backbone_name, cache_dir=tmp_path / "cache").fit(hs.ImageFolder(images))
    assert target.evaluate(hs.ImageFolder(images))["accuracy"] > 0.6


def test_an_interrupted_pretraining_resumes_where_it_stopped_and_ends_as_the_uninterrupted_one(runs, bert, texts,
                                                                                             tmp_path):
    out = tmp_path / "run"

    def stop_after_first_epoch(stage, done, total, note=""):
        if note and stage.endswith("epoch 1/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _text(texts, out, bert, "simcse", progress=stop_after_first_epoch)
    assert (work_dir(out) / CHECKPOINT).is_file() and not out.exists()
    with pytest.raises(ConfigError, match="--resume"):
        _text(texts, out, bert, "simcse")
    resumed = resume_pretraining(out)
    whole = runs["simcse"].history
    assert resumed.resumed and [row["epoch"] for row in resumed.history] == [1, 2, 3]
    for key in ("train_loss", "val_loss"):
        assert [row[key] for row in resumed.history] == pytest.approx([row[key] for row in whole], rel=1e-5)
    assert not work_dir(out).exists()


def test_steps_are_spread_over_equal_epochs():
    from headstart.pretraining.objective import epoch_plan

    assert epoch_plan(None, 4, 10) == (4, None)
    assert epoch_plan(25, 1, 10) == (3, 9)  # 3 epochs of 9 steps: 27, the fewest equal epochs that cover 25
    assert epoch_plan(5, 1, 10) == (1, 5)


def test_a_method_meets_data_or_options_it_cannot_take_with_a_clear_error(texts, bert, flat_images, tmp_path):
    with pytest.raises(ConfigError, match="The simclr method pre-trains image backbones"):
        pretrain(texts, tmp_path / "a", method="simclr", model=f"hf:{bert}", device="cpu")
    with pytest.raises(DataError, match="no class sub-folders"):  # supervised pre-training needs labels
        pretrain(flat_images, tmp_path / "b", method="supervised", device="cpu")
    with pytest.raises(ConfigError, match="temperature does not apply to the tsdae method"):
        pretrain(texts, tmp_path / "c", method="tsdae", config={"temperature": 0.1})
    with pytest.raises(ConfigError, match="Unknown pre-training method 'simclr2'"):
        pretrain(texts, tmp_path / "d", method="simclr2")
    assert not any(tmp_path.iterdir())  # nothing written, nothing left half-made


def test_loading_a_pretrained_backbone_as_a_classifier_says_how_to_use_it(runs):
    with pytest.raises(ConfigError, match="not a classifier.*--model run:"):
        hs.load(runs["simcse"].out_dir)


def test_the_cli_pretrains_and_says_how_to_use_the_run(bert, texts, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli-run"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "pretrain", texts, "--method", "simcse", "--model", f"hf:{bert}",
                                   "--out", out, "--epochs", "1", "--train-batch", "8", "--device", "cpu", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["backbone"] == f"run:{out.resolve()}"
    code, _, stderr = run_cli(monkeypatch, capsys, "pretrain", texts, "--method", "simcse", "--out", tmp_path / "x",
                              "--temperature", "0.1")
    assert code == 2 and "--temperature does not apply to the simcse method" in stderr
