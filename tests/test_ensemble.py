"""Ensembles: several fitted models of one backbone, averaged; saved as one run that load,
evaluate, predict, export and serve's bundle take."""

from __future__ import annotations

import json

import numpy as np
import pytest

import headstart as hs
from headstart.errors import ConfigError
from headstart.export import export_bundle
from headstart.report import write_report
from headstart.runtime import Bundle

from helpers import review_table, run_cli, tiny_bert_folder


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    data = hs.TextTable(review_table(root / "reviews.csv", per_class=20))
    train, test = data.split(test=0.25, seed=0)
    bert = f"hf:{tiny_bert_folder(root / 'bert', dropout=0.0)}"
    fits = [hs.Transfer(bert, "linear-probe", device="cpu", cache_dir=str(root / "cache")).fit(train),
            hs.Transfer(bert, "lora", config={"epochs": 2}, device="cpu", cache_dir=str(root / "cache")).fit(train)]
    return root, fits, test


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities(members):
    _, fits, test = members
    ensemble = hs.Ensemble(fits)
    expected = (fits[0].predict_proba(test) + fits[1].predict_proba(test)) / 2
    assert np.allclose(ensemble.predict_proba(test), expected)
    assert ensemble.predict(test) == [ensemble.classes_[i] for i in expected.argmax(1)]
    assert ensemble.evaluate(test)["samples"] == len(test)


def test_an_ensemble_saves_as_one_run_that_loads_and_predicts_the_same(members, tmp_path, monkeypatch, capsys):
    _, fits, test = members
    ensemble = hs.Ensemble(fits)
    ensemble.save(tmp_path / "run", metrics={"test": ensemble.evaluate(test)})
    loaded = hs.load(tmp_path / "run", device="cpu")
    assert isinstance(loaded, hs.Ensemble) and [m.strategy for m in loaded.members] == ["linear-probe", "lora"]
    assert np.allclose(loaded.predict_proba(test), ensemble.predict_proba(test), atol=1e-6)
    code, stdout, _ = run_cli(monkeypatch, capsys, "predict", str(tmp_path / "run"), "a great product", "--json")
    assert code == 0 and '"label"' in stdout
    code, stdout, stderr = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "run"), str(test.source), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["samples"] == 40  # the whole table: the run never saw it as a whole


def test_an_exported_ensemble_predicts_what_the_run_does(members, tmp_path):
    _, fits, test = members
    hs.Ensemble(fits).save(tmp_path / "run")
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", samples=8)
    assert result.parity["max_abs_diff"] <= 1e-4
    bundle = Bundle.load(tmp_path / "bundle")
    expected = hs.load(tmp_path / "run", device="cpu").predict_proba(test)
    assert np.allclose(bundle.predict_proba(test.items), expected, atol=1e-4)
    assert bundle.manifest["run"]["strategy"] == "ensemble"


def test_members_of_different_classes_or_backbones_are_refused(members, tmp_path):
    root, fits, test = members
    with pytest.raises(ConfigError, match="at least two"):
        hs.Ensemble(fits[:1])
    other = hs.TextTable(review_table(tmp_path / "other.csv", per_class=10))
    relabelled = hs.Transfer(fits[0].model_name_, "linear-probe", device="cpu").fit(
        hs.LabelledData("text", other.items, [f"c{y}" for y in other.y]))
    with pytest.raises(ConfigError, match="same classes"):
        hs.Ensemble([fits[0], relabelled])
    mirrored = hs.Transfer(fits[0].model_name_, "linear-probe", device="cpu")
    mirrored.__dict__.update(fits[0].__dict__, tta=True)  # text models refuse tta: only its flag matters here
    with pytest.raises(ConfigError, match="test-time augmentation"):
        hs.Ensemble([fits[0], mirrored])


def test_an_ensemble_run_is_no_backbone_for_run_models(members, tmp_path):
    _, fits, test = members
    hs.Ensemble(fits).save(tmp_path / "run")
    with pytest.raises(ConfigError, match="ensemble of several networks"):
        hs.Transfer(f"run:{tmp_path / 'run'}", device="cpu").fit(test)


def test_the_report_of_an_ensemble_run_lists_its_members(members, tmp_path):
    _, fits, test = members
    hs.Ensemble(fits).save(tmp_path / "run", metrics={"test": hs.Ensemble(fits).evaluate(test)})
    page = write_report(tmp_path / "run").read_text()
    assert 'id="ensemble"' in page and "lora" in page and "linear-probe" in page
