"""Your runs as backbones (`run:PATH`): a fitted run's backbone, with its base's contract and a
digest of its own, for fit, rank, load and `headstart models --runs`; on tiny models (seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import headstart as hs
from headstart.backbones import build_backbone
from headstart.errors import ConfigError, DataError

from helpers import TINY_TIMM, colour_folder, review_table, run_cli, tiny_bert_folder, tiny_timm_weights

pytestmark = pytest.mark.timeout(120)
FAST = {"epochs": 1, "batch_size": 8, "patience": 0}
BASE = f"timm:{TINY_TIMM}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("imgs"), per_class=8, size=32)


@pytest.fixture(scope="module")
def data(folder):
    return hs.ImageFolder(folder)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_timm_weights(tmp_path_factory.mktemp("weights"))


def _fit(data, model, strategy, out, weights=None, **options):
    config = {**FAST, **options} if strategy != "linear-probe" else options
    fitted = hs.Transfer(model, strategy, weights=weights, num_workers=0, device="cpu", cache_dir=out.parent / "cache",
                         config=config).fit(data)
    fitted.save(out)
    return fitted


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data, weights):
    """A folder with a finetune run, a lora run (an adapter) and a linear-probe run, on one base."""
    root = tmp_path_factory.mktemp("runs")
    _fit(data, BASE, "finetune", root / "ft", weights)
    _fit(data, BASE, "lora", root / "lora", weights, lr=1e-2)
    _fit(data, BASE, "linear-probe", root / "lp", weights)
    return root


def _features(backbone, data, cache=None):
    return hs.extract_features(backbone, data, cache_dir=cache, use_cache=cache is not None, num_workers=0)


def test_a_finetuned_run_is_a_backbone_with_the_base_contract_its_own_digest_and_features(runs, data, weights):
    base = build_backbone(BASE, weights=weights)
    backbone = build_backbone(f"run:{runs / 'ft'}")
    assert backbone.name == f"run:{(runs / 'ft').resolve()}"
    assert backbone.contract == base.contract and backbone.contract.layer_groups == base.contract.layer_groups
    assert backbone.weights_digest != base.weights_digest and backbone.cache_key != base.cache_key
    assert backbone.source_head.out_features == 3  # the run's head, kept aside (LEEP), not in the module
    assert not np.allclose(_features(backbone, data), _features(base, data), atol=1e-4)


def test_digests_key_the_feature_cache_apart(runs, data, weights, tmp_path):
    base = build_backbone(BASE, weights=weights)
    from_base = _features(base, data, tmp_path / "cache")
    from_run = _features(build_backbone(f"run:{runs / 'ft'}"), data, tmp_path / "cache")
    assert not np.allclose(from_run, from_base, atol=1e-4)
    assert np.array_equal(_features(build_backbone(f"run:{runs / 'ft'}"), data, tmp_path / "cache"), from_run)


def test_a_linear_probe_on_a_run_learns_records_the_absolute_path_and_reloads(runs, data, tmp_path, monkeypatch):
    monkeypatch.chdir(runs)  # a relative path, recorded absolute
    probe = _fit(data, "run:ft", "linear-probe", tmp_path / "probe")
    assert probe.evaluate(data)["accuracy"] > 0.6  # chance is 1/3
    recorded = yaml.safe_load((tmp_path / "probe" / "config.yaml").read_text())["backbone"]
    assert recorded["name"] == f"run:{(runs / 'ft').resolve()}" and recorded["weights"] is None
    monkeypatch.chdir(tmp_path)
    loaded = hs.load(tmp_path / "probe", device="cpu", cache_dir=tmp_path / "cache")
    assert loaded.predict(data) == probe.predict(data)
    np.testing.assert_allclose(loaded.predict_proba(data), probe.predict_proba(data), atol=1e-5)


def test_finetuning_a_finetuned_run_again_chains_and_reloads(runs, data, tmp_path):
    chained = _fit(data, f"run:{runs / 'ft'}", "finetune", tmp_path / "chain", epochs=1)
    loaded = hs.load(tmp_path / "chain", device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(data), chained.predict_proba(data), atol=1e-5)


def test_a_lora_run_is_merged_into_plain_weights_that_predict_as_the_run(runs, data):
    backbone = build_backbone(f"run:{runs / 'lora'}")
    assert not any("lora_" in name for name in backbone.module.state_dict())
    with torch.inference_mode():
        probabilities = torch.softmax(backbone.source_head(torch.as_tensor(_features(backbone, data))), 1).numpy()
    expected = hs.load(runs / "lora", device="cpu").predict_proba(data)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_scratch_on_a_run_is_its_base_architecture_with_random_weights(runs, weights):
    backbone = build_backbone(f"run:{runs / 'ft'}", pretrained=False)
    assert backbone.weights_digest == "random" and backbone.name.startswith("run:")
    assert backbone.contract == build_backbone(BASE, weights=weights).contract


def test_rank_ranks_runs_against_a_base_backbone(runs, data, weights, folder, monkeypatch, capsys):
    rows = hs.rank([f"run:{runs / 'ft'}", build_backbone(BASE, weights=weights)], data, num_workers=0)
    assert {row.model for row in rows} == {f"run:{(runs / 'ft').resolve()}", BASE}
    code, out, err = run_cli(monkeypatch, capsys, "rank", folder, "--models", f"run:{runs / 'ft'},run:{runs / 'lora'}",
                             "--workers", "0", "--json")
    assert code == 0, err
    assert {row["model"] for row in json.loads(out)} == {f"run:{(runs / n).resolve()}" for n in ("ft", "lora")}


def test_models_lists_the_runs_under_a_folder_and_which_can_serve(runs, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "models", "--runs", runs, "--json")
    assert code == 0, err
    listed = {Path(row["name"].removeprefix("run:")).name: row for row in json.loads(out)["runs"]}
    assert set(listed) == {"ft", "lora", "lp"}
    assert listed["ft"]["base"] == BASE and listed["ft"]["strategy"] == "finetune"
    assert listed["ft"]["modality"] == "image" and listed["ft"]["feature_dim"] > 0
    assert listed["ft"]["usable"] and listed["lora"]["usable"] and not listed["lp"]["usable"]
    code, _, err = run_cli(monkeypatch, capsys, "models", "--runs", runs / "missing")
    assert code == 2 and "is not a folder" in " ".join(err.split())  # the console wraps at its width


def test_a_missing_run_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=r"names no run: .*nowhere does not exist") as raised:
        build_backbone(f"run:{tmp_path / 'nowhere'}")
    assert "\n" not in str(raised.value)


def test_a_damaged_run_is_an_error_naming_the_file(runs, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in (runs / "ft").iterdir():
        (damaged / file.name).write_bytes(file.read_bytes())
    with open(damaged / "model.safetensors", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(DataError, match=r"damaged: model.safetensors changed after the run was written"):
        build_backbone(f"run:{damaged}")


def test_weights_with_a_run_and_a_head_only_run_are_config_errors(runs, weights):
    with pytest.raises(ConfigError, match=r"`--weights .*` does not apply to the backbone `run:"):
        build_backbone(f"run:{runs / 'ft'}", weights=weights)
    with pytest.raises(ConfigError, match=rf"linear-probe run: it stores only a head .* Give `--model {BASE}`"):
        build_backbone(f"run:{runs / 'lp'}")


def test_a_run_fitted_on_a_moved_run_says_so_on_loading(runs, data, tmp_path):
    source = tmp_path / "source"
    _fit(data, BASE, "bitfit", source, tiny_timm_weights(tmp_path), epochs=1)
    _fit(data, f"run:{source}", "linear-probe", tmp_path / "probe")
    source.rename(tmp_path / "moved")
    with pytest.raises(DataError, match=r"names no run: .*source does not exist \(moved or deleted\?"):
        hs.load(tmp_path / "probe", device="cpu")


def test_a_run_fitted_on_itself_is_refused_on_loading(runs, data, tmp_path):
    (tmp_path / "self").mkdir()
    for file in (runs / "ft").iterdir():
        (tmp_path / "self" / file.name).write_bytes(file.read_bytes())
    _fit(data, f"run:{tmp_path / 'self'}", "finetune", tmp_path / "self", epochs=1)
    with pytest.raises(DataError, match="was fitted on itself"):
        hs.load(tmp_path / "self", device="cpu")


def test_a_text_run_keeps_its_tokenizer(tmp_path):
    reviews = hs.TextTable(review_table(tmp_path / "reviews.csv", per_class=8))
    bert = f"hf:{tiny_bert_folder(tmp_path / 'bert', dropout=0.0)}"
    _fit(reviews, bert, "bitfit", tmp_path / "run", epochs=1)
    backbone, base = build_backbone(f"run:{tmp_path / 'run'}"), build_backbone(bert)
    assert backbone.tokenizer is not None and backbone.contract == base.contract
    assert not np.allclose(_features(backbone, reviews), _features(base, reviews), atol=1e-5)


def test_the_backbone_registry_alone_builds_run_backbones(runs):
    """`run:` is registered from the transfer layer; the registry imports it on first use."""
    code = ("import sys; from headstart.backbones import build_backbone; assert 'headstart.transfer' not in sys.modules; "
            f"print(build_backbone({str('run:' + str(runs / 'ft'))!r}).name)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=100)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"run:{(runs / 'ft').resolve()}"


def test_a_changed_source_run_fails_the_digest_check_of_runs_fitted_on_it(runs, data, tmp_path):
    source = tmp_path / "source"
    _fit(data, BASE, "finetune", source, tiny_timm_weights(tmp_path), epochs=1)
    _fit(data, f"run:{source}", "linear-probe", tmp_path / "probe")
    _fit(data, BASE, "finetune", source, tiny_timm_weights(tmp_path, seed=1), epochs=1)  # fitted again: other weights
    with pytest.raises(ConfigError, match=r"are not the ones .*probe was trained with"):
        hs.load(tmp_path / "probe", device="cpu")
