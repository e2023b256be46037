"""Hyperparameter search: the space, pruning, reproducing the best trial, shared studies, k-fold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import headstart as hs
from headstart.data import stratified_kfold
from headstart.errors import ConfigError, DataError
from headstart.tuning import TuneSettings, cross_validate, read_space, search_space, tune

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights
from test_cli import run_cli


def test_default_space_follows_each_strategy_config():
    finetune, _ = search_space("finetune")
    assert set(finetune) == {"lr", "weight_decay", "unfreeze", "layer_decay", "dropout", "label_smoothing", "epochs"}
    probe, _ = search_space("linear-probe")
    assert set(probe) == {"C"}
    mlp, fixed = search_space("linear-probe", {"head": "mlp"})
    assert set(mlp) == {"dropout"} and fixed == {"head": "mlp"}
    scratch, _ = search_space("scratch")
    assert "unfreeze" not in scratch and "lr" in scratch


def test_a_default_range_is_searched_for_any_strategy_whose_config_has_the_field():
    space, _ = search_space("lora")
    assert {"lora_rank", "lr", "epochs"} <= set(space) and space["lora_rank"].choices == (4, 8, 16, 32)
    assert "unfreeze" not in space  # lora's config has no such field


def test_space_file_narrows_pins_drops_and_extends(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1e-4, high: 1.0e-3}\nepochs: 2\ndropout: null\nunfreeze: {choices: [all]}\n"
                    "head_lr_scale: {type: float, low: 1, high: 20, log: true}\n")
    space, fixed = search_space("finetune", read_space(path))
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (1e-4, 1e-3, True)  # "1e-4" is a YAML string
    assert fixed == {"epochs": 2} and "epochs" not in space and "dropout" not in space
    assert space["unfreeze"].choices == ("all",) and space["head_lr_scale"].log


def test_space_naming_no_option_of_the_strategy_is_an_error():
    with pytest.raises(ConfigError, match="names 'lr_decay', which is not an option of the finetune strategy. "
                                          "Did you mean 'layer_decay'"):
        search_space("finetune", {"lr_decay": {"low": 0.5, "high": 1}})
    with pytest.raises(ConfigError, match="'high' of search parameter 'lr' must be a number"):
        search_space("finetune", {"lr": {"high": "fast"}})


def test_kfold_parts_are_stratified_disjoint_and_cover_everything():
    y = np.repeat([0, 1, 2], [30, 15, 9])
    folds = stratified_kfold(y, 3, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(y)))  # disjoint and complete
    for train, part in folds:
        assert not set(train) & set(part) and len(train) + len(part) == len(y)
        assert np.bincount(y[part]).tolist() == [10, 5, 3]  # each class's share in every fold
    assert [h.tolist() for _, h in stratified_kfold(y, 3, seed=0)] == [h.tolist() for _, h in folds]


def test_kfold_refuses_a_class_smaller_than_k():
    with pytest.raises(DataError, match="class 'rare' has 2 samples in the training split: too few for 3-fold"):
        stratified_kfold(np.array([0] * 9 + [1] * 2), 3, 0, class_names=["common", "rare"])
    with pytest.raises(ConfigError, match="must be an int >= 2"):
        stratified_kfold(np.array([0, 1] * 5), 1, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return colour_folder(root / "imgs", per_class=8, size=24), tiny_timm_weights(root)


def test_cross_validate_reports_each_fold_and_mean_and_std(tiny, tmp_path):
    folder, weights = tiny
    data = hs.ImageFolder(folder)
    result = cross_validate(hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, num_workers=0, cache_dir=tmp_path),
                            data, k=3, seed=0)
    assert [row["fold"] for row in result["folds"]] == [1, 2, 3]
    assert sum(row["samples"] for row in result["folds"]) == len(data)
    f1 = [row["f1"] for row in result["folds"]]
    assert result["mean"]["f1"] == pytest.approx(np.mean(f1)) and result["std"]["f1"] == pytest.approx(np.std(f1, ddof=1))


def test_linear_probe_search_tries_C_on_cached_features(tiny, tmp_path):
    folder, weights = tiny
    train, _ = hs.ImageFolder(folder).split(test=0.25, seed=0)
    result = tune(train, "linear-probe", model=f"timm:{TINY_TIMM}", settings=TuneSettings(trials=4, cv=2),
                  transfer_options=dict(weights=weights, num_workers=0, cache_dir=tmp_path))
    assert [t["state"] for t in result.trials] == ["COMPLETE"] * 4
    assert result.best_config.C == result.study.best_trial.params["C"]
    assert all(len(t["intermediate"]) == 2 for t in result.trials)  # one report per fold


def test_tune_prunes_and_its_config_reproduces_the_best_score_when_refit(tiny, tmp_path, monkeypatch, capsys):
    folder, weights = tiny
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-6, high: 0.05}\nepochs: 2\n")
    code, out, err = run_cli(monkeypatch, capsys, "tune", folder, "--model", f"timm:{TINY_TIMM}", "--weights", weights,
                             "--trials", 5, "--pruner-startup", 1, "--space", space, "--workers", 0,
                             "--out", tmp_path / "search", "--json")
    assert code == 0, err
    summary = json.loads((tmp_path / "search" / "tuning.json").read_text())
    states = [t["state"] for t in summary["trials"]]
    assert len(states) == 5 and states.count("PRUNED") >= 1, states
    assert json.loads(out)["best"]["trial"] == summary["best"]["trial"]
    assert (tmp_path / "search" / "study.db").is_file() and (tmp_path / "search" / "report.html").is_file()
    best = summary["best"]
    best_trial = summary["trials"][best["trial"]]
    config = yaml.safe_load((tmp_path / "search" / "config.yaml").read_text())
    assert config["strategy"] == "finetune" and config["strategy_config"]["lr"] == best_trial["params"]["lr"]

    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--config", tmp_path / "search" / "config.yaml",
                           "--workers", 0, "--out", tmp_path / "again", "--json")
    assert code == 0, err
    history = json.loads((tmp_path / "again" / "history.json").read_text())
    again = max(history, key=lambda row: row["val_f1"])
    assert again["val_f1"] == pytest.approx(best["value"], abs=1e-9)
    assert again["val_loss"] == pytest.approx(best_trial_val_loss(tmp_path / "search", best["trial"]), rel=1e-5)


def best_trial_val_loss(folder: Path, number: int) -> float:
    import optuna

    study = optuna.load_study(study_name="headstart", storage=f"sqlite:///{folder / 'study.db'}")
    return study.trials[number].user_attrs["best_val_loss"]


def test_two_processes_on_one_sqlite_study_never_run_a_trial_twice(tiny, tmp_path):
    folder, weights = tiny
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(hs.__file__).parents[1]), "HEADSTART_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-c", "from headstart.cli import main; main()", "tune", str(folder), "--model",
               f"timm:{TINY_TIMM}", "--weights", str(weights), "--strategy", "linear-probe", "--trials", "30",
               "--storage", storage, "--study", "shared", "--workers", "0", "--json"]
    workers = [subprocess.Popen([*command, "--out", str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    import optuna

    trials = optuna.load_study(study_name="shared", storage=storage).trials
    finished = [t for t in trials if t.state.is_finished()]
    assert 30 <= len(finished) <= 31  # the count is shared: the last trials may overlap by one
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    owners = {t.user_attrs["worker"] for t in trials}
    assert len(owners) == 2, "both processes ran trials of the one study"
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)


def test_fit_config_file_errors_are_one_clear_line(tmp_path, monkeypatch, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=3)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"strategy": "finetune", "strategy_config": {"epochs": 2}, "seed": 3}))
    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--config", config, "--strategy", "linear-probe",
                           "--out", tmp_path / "r")
    assert code == 2 and "`--strategy linear-probe` contradicts" in " ".join(err.split())
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--config", tmp_path / "list.yaml", "--out", tmp_path / "r")
    assert code == 2 and "must hold a mapping" in " ".join(err.split())
