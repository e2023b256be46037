"""lora (peft) and bitfit: what trains, what a run stores, reloading, merging, comparing."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

import headstart as hs
from headstart.backbones import build_backbone
from headstart.comparison import compare_strategies
from headstart.errors import ConfigError
from headstart.peak_memory import PeakMemory
from headstart.strategies import make_config
from headstart.strategies.peft_tuning import default_lora_targets

from helpers import TINY_TIMM, colour_folder, review_table, tiny_bert_folder, tiny_timm_weights
from test_cli import run_cli

pytestmark = pytest.mark.timeout(120)
FAST = {"epochs": 2, "batch_size": 8, "patience": 0}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return hs.ImageFolder(colour_folder(tmp_path_factory.mktemp("imgs"), per_class=8, size=32))


@pytest.fixture
def weights(tmp_path):  # per test: one test swaps the file for other weights
    return tiny_timm_weights(tmp_path)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def reviews(tmp_path):
    return hs.TextTable(review_table(tmp_path / "reviews.csv", per_class=12))


def _fit(model, strategy, data, weights=None, **options):
    return hs.Transfer(model, strategy, weights=weights, config={**FAST, **options}, num_workers=0,
                       device="cpu").fit(data)


def _gradient_names(module, inputs):
    module.zero_grad(set_to_none=True)
    out = module(**inputs) if isinstance(inputs, dict) else module(inputs)
    out.sum().backward()
    return {name for name, p in module.named_parameters() if p.grad is not None}


def test_lora_gives_gradients_only_to_the_adapters_of_the_default_targets(bert):
    backbone = build_backbone(f"hf:{bert}")
    module = hs.get_strategy("lora")(hs.LoraConfig()).prepare(backbone.module, "bert")
    inputs = dict(backbone.tokenizer(["a good product", "bad"], padding=True, return_tensors="pt"))
    names = _gradient_names(module, inputs)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert adapted == {"query", "value"}
    assert len(names) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)


def test_bitfit_gives_gradients_only_to_biases_and_optionally_norms(weights):
    image = torch.randn(2, 3, 32, 32)
    biases = _gradient_names(hs.get_strategy("bitfit")(hs.BitFitConfig()).prepare(
        build_backbone(f"timm:{TINY_TIMM}", weights=weights).module, "tiny"), image)
    assert biases and all(n.endswith(".bias") for n in biases)
    with_norms = _gradient_names(hs.get_strategy("bitfit")(hs.BitFitConfig(bitfit_norms=True)).prepare(
        build_backbone(f"timm:{TINY_TIMM}", weights=weights).module, "tiny"), image)
    assert biases < with_norms
    assert any(n.startswith("bn1.") and n.endswith(".weight") for n in with_norms)


@pytest.mark.parametrize("strategy", ["lora", "bitfit"])
def test_training_changes_only_the_trained_tensors_and_the_head(strategy, images, weights):
    before = build_backbone(f"timm:{TINY_TIMM}", weights=weights).module.state_dict()
    model = _fit(f"timm:{TINY_TIMM}", strategy, images, weights, lr=1e-2)
    trained = {k.removeprefix("backbone.") for k in model.checkpoint_tensors() if k.startswith("backbone.")}
    merged = model.merge().net_.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert changed  # training moved something
    if strategy == "bitfit":
        assert changed <= trained and all(k.endswith(".bias") for k in changed)
    else:  # merging folds the adapters into exactly the targeted layers' weights; BN statistics stay
        assert all(k.rsplit(".", 2)[-2] in ("conv_pw", "conv_pwl") and k.endswith(".weight") for k in changed)


def test_default_lora_targets_follow_the_architecture(bert):
    assert default_lora_targets(build_backbone(f"hf:{bert}").module) == ["query", "value"]
    assert default_lora_targets(timm.create_model("test_vit", pretrained=False)) == ["qkv"]
    assert default_lora_targets(timm.create_model(TINY_TIMM, pretrained=False)) == ["conv_pw", "conv_pwl"]


def test_lora_target_that_matches_nothing_is_an_error_listing_real_layers(bert, reviews):
    with pytest.raises(ConfigError, match=r"LoRA target 'attn' matches no .* include: .*query.*`--lora-targets`"):
        _fit(f"hf:{bert}", "lora", reviews, lora_targets="query,attn")


def test_options_that_choose_what_trains_are_rejected_for_lora_and_bitfit():
    with pytest.raises(ConfigError, match="unfreeze does not apply to the lora strategy"):
        make_config("lora", {"unfreeze": "2"})
    with pytest.raises(ConfigError, match="train_bn does not apply to the bitfit strategy"):
        make_config("bitfit", {"train_bn": True})
    with pytest.raises(ConfigError, match="'lora_rank' option of lora must be an int >= 1. Got 0"):
        hs.LoraConfig(lora_rank=0)
    with pytest.raises(ConfigError, match="must be a LoraConfig"):
        make_config("lora", hs.FinetuneConfig())


@pytest.mark.parametrize("strategy", ["lora", "bitfit"])
def test_saved_adapter_is_small_and_reloads_to_identical_predictions(strategy, tmp_path, images, weights):
    model = _fit(f"timm:{TINY_TIMM}", strategy, images, weights)
    model.save(tmp_path / "run")
    full = sum(p.numel() for p in model.net_.parameters())
    stored = (tmp_path / "run" / "model.safetensors").stat().st_size
    assert stored < 0.15 * 4 * full  # the tiny model's head is a large share; real backbones: see bench
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["checkpoint"] == "adapter" and config["backbone"]["weights_digest"]
    loaded = hs.load(tmp_path / "run", device="cpu")
    loaded.num_workers = 0
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    assert loaded.trainable_parameters() == model.trainable_parameters()


def test_lora_with_biases_trains_and_stores_them_and_reloads_identically(tmp_path, images, weights):
    model = _fit(f"timm:{TINY_TIMM}", "lora", images, weights, lora_bias="all")
    trained = {name for name, p in model.net_.backbone.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trained) and any(name.endswith(".bias") for name in trained)
    assert all("lora_" in name or name.endswith(".bias") for name in trained)
    stored = {name for name in model.checkpoint_tensors() if name.startswith("backbone.")}
    assert any(name.endswith(".bias") and "lora_" not in name for name in stored)
    model.save(tmp_path / "run")
    loaded = hs.load(tmp_path / "run", device="cpu")
    loaded.num_workers = 0
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))


def test_text_lora_reloads_to_identical_predictions(tmp_path, bert, reviews):
    model = _fit(f"hf:{bert}", "lora", reviews, lora_rank=2, lora_targets=["query", "key", "value"])
    model.save(tmp_path / "run")
    np.testing.assert_array_equal(hs.load(tmp_path / "run", device="cpu").predict_proba(reviews),
                                  model.predict_proba(reviews))


def test_adapter_on_another_base_fails_naming_both_digests(tmp_path, images, weights):
    model = _fit(f"timm:{TINY_TIMM}", "lora", images, weights)
    model.save(tmp_path / "run")
    trained_on = model.backbone_.weights_digest
    (tmp_path / "other").mkdir()
    tiny_timm_weights(tmp_path / "other", seed=1).replace(weights)  # same path, other weights
    with pytest.raises(ConfigError, match=rf"digest \w+\) are not the ones .* \(digest {trained_on}\)"):
        hs.load(tmp_path / "run", device="cpu")


def test_export_merged_predicts_as_the_adapter_and_stores_every_weight(tmp_path, monkeypatch, capsys, images, weights):
    model = _fit(f"timm:{TINY_TIMM}", "lora", images, weights, lr=1e-2)
    records = {"predictions": [{"location": "a.png", "true": "red", "predicted": "red", "confidence": 0.9}],
               "trained_on": {"sha256_prefix": ["00ff"]}}
    model.save(tmp_path / "run", extra=records)
    code, _, err = run_cli(monkeypatch, capsys, "export-merged", tmp_path / "run", tmp_path / "merged")
    assert code == 0, err
    for name, content in records.items():  # export checks parity on the predictions; evaluate warns of trained_on
        assert json.loads((tmp_path / "merged" / f"{name}.json").read_text()) == content
    assert (tmp_path / "merged" / "report.html").is_file()
    merged = hs.load(tmp_path / "merged", device="cpu")
    merged.num_workers = 0
    assert not any("lora" in k for k in merged.checkpoint_tensors())
    assert yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())["checkpoint"] == "merged"
    np.testing.assert_allclose(merged.predict_proba(images), model.predict_proba(images), atol=1e-5)
    with pytest.raises(ConfigError, match="merged already"):
        merged.merge()
    key = "backbone.blocks.1.0.conv_pwl.weight"  # the adapter trained: merging changed the base weight
    base = build_backbone(f"timm:{TINY_TIMM}", weights=weights).module.state_dict()
    assert not torch.allclose(merged.checkpoint_tensors()[key], base[key.removeprefix("backbone.")])


def test_cli_fit_maps_lora_flags_onto_the_config(tmp_path, monkeypatch, capsys, bert):
    table = review_table(tmp_path / "reviews.csv", per_class=12)
    code, _, err = run_cli(monkeypatch, capsys, "fit", table, "--model", f"hf:{bert}", "--strategy", "lora",
                           "--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", "query,key", "--epochs", "1",
                           "--out", tmp_path / "run", "--json")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["strategy_config"]
    assert (saved["lora_rank"], saved["lora_alpha"], saved["lora_targets"]) == (4, 8.0, ["query", "key"])
    code, _, err = run_cli(monkeypatch, capsys, "fit", table, "--model", f"hf:{bert}", "--strategy", "finetune",
                           "--lora-rank", "4", "--out", tmp_path / "run2")
    assert code == 2 and "--lora-rank does not apply to the finetune strategy" in err


def test_compare_reports_trainable_share_checkpoint_size_and_peak_memory(tmp_path, images, weights):
    rows = compare_strategies(images, images, ["finetune", "lora", "bitfit"], model=f"timm:{TINY_TIMM}",
                              finetune=hs.FinetuneConfig(**{**FAST, "epochs": 1}), weights=weights, num_workers=0, device="cpu")
    by = {row["strategy"]: row for row in rows}
    assert by["finetune"]["trainable_fraction"] == 1.0
    assert by["bitfit"]["trainable_params"] < by["lora"]["trainable_params"] < by["finetune"]["trainable_params"]
    assert by["lora"]["checkpoint_bytes"] < by["finetune"]["checkpoint_bytes"]
    assert all(row["peak_memory_bytes"] > 0 for row in rows)
    assert json.dumps([{k: v for k, v in row.items() if k != "history"} for row in rows])


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory("cpu") as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.05)  # held for 10 of the sampler's intervals: it samples, it does not hook allocations
        del block
    assert peak.bytes >= 48 * 2**20
    assert "RSS" in peak.method


@pytest.mark.integration
@pytest.mark.timeout(600)  # ~30 s on an idle 2-core machine; minutes when other jobs share it
@pytest.mark.skipif(not (SHARED / "sentiment").is_dir(), reason=f"real data sets not found at {SHARED}")
def test_minilm_lora_learns_amazon_reviews_and_stores_under_a_tenth_of_the_model(tmp_path):
    reviews = hs.TextTable(SHARED / "sentiment" / "amazon.txt")
    rest, test = reviews.split(test=0.2, seed=0)
    train, _ = rest.split(test=0.5, seed=0)  # ~370 reviews: keeps the test short
    model = hs.Transfer("minilm", "lora", config={"epochs": 2, "batch_size": 16}, device="cpu").fit(train)
    assert model.evaluate(test)["accuracy"] >= 0.8  # 2 balanced classes: chance is 0.5
    model.save(tmp_path / "run")
    full = 4 * sum(p.numel() for p in model.net_.parameters())
    assert (tmp_path / "run" / "model.safetensors").stat().st_size <= 0.1 * full
