"""What the commands do, as Python functions: runs on disk, config files, few-shot subsets."""

import json

import numpy as np
import pytest
import yaml

from headstart.data import few_shot_indices
from headstart.errors import ConfigError, DataError
from headstart.data.opening import open_data
from headstart.workflows import RunArgs, RunConfig, fit_run, read_run_config, resume_run, work_dir

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights


def test_few_shot_indices_keep_that_many_of_each_class_and_follow_the_seed():
    y = np.array([0] * 10 + [1] * 3 + [2] * 6)
    picked = few_shot_indices(y, 4, seed=1)
    assert picked == sorted(picked) and len(set(picked)) == len(picked)
    assert np.bincount(y[picked]).tolist() == [4, 3, 4]  # class 1 has only 3: all of them
    assert few_shot_indices(y, 4, seed=1) == picked and few_shot_indices(y, 4, seed=2) != picked
    with pytest.raises(ConfigError, match="int >= 1"):
        few_shot_indices(y, 0)


def test_a_config_file_fills_what_the_command_line_left_out(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"backbone": {"name": "minilm", "weights": "w.safetensors"}, "strategy": "finetune",
                                    "strategy_config": {"epochs": 2, "lr": 0.01}, "seed": 3}))
    config = read_run_config(path)
    assert (config.model, config.strategy, config.options, config.seed, str(config.weights)) == \
        ("minilm", "finetune", {"epochs": 2, "lr": 0.01}, 3, "w.safetensors")
    mine = config.overridden(model="efficientnet_lite0", strategy="finetune", options={"lr": 0.1, "patience": None},
                             seed=None)
    assert (mine.model, mine.options, mine.seed) == ("efficientnet_lite0", {"epochs": 2, "lr": 0.1}, 3)
    with pytest.raises(ConfigError, match="`--strategy lora` contradicts"):
        config.overridden(strategy="lora")
    assert RunConfig().overridden(strategy="lora").strategy == "lora"  # no file: nothing to contradict
    path.write_text("strategy: finetune\n")
    with pytest.raises(ConfigError, match="needs `strategy` and `strategy_config`"):
        read_run_config(path)


def test_run_args_read_old_args_files_and_reject_unknown_settings(tmp_path):
    old = RunArgs.from_dict({"data": "d", "out_dir": "o", "candidates": "a, b", "retired_key": 1})
    assert old.candidates == ["a", "b"]
    with pytest.raises(ConfigError, match="epochz is not a setting of a run"):
        RunArgs.create("d", "o", epochz=3)


def test_open_data_names_what_it_cannot_read(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_data(tmp_path / "missing")
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(DataError, match="neither a folder of class folders nor a table"):
        open_data(tmp_path / "notes.md")


def test_fit_run_writes_the_run_directory_the_cli_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    result = fit_run(folder, tmp_path / "run", model=f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path),
                     options={"C": 1.0}, workers=0, seed=1)
    assert result.metrics["accuracy"] >= 0.8 and result.transfer.config_.C == 1.0
    assert {"config.yaml", "metrics.json", "model.safetensors", "predictions.json", "report.html"} <= \
        {p.name for p in (tmp_path / "run").iterdir()}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] == result.metrics["accuracy"]
    assert not work_dir(tmp_path / "run").exists()  # finished: nothing left to resume
    with pytest.raises(DataError, match="no unfinished training to resume"):
        resume_run(tmp_path / "run")


def test_a_text_model_predicts_texts_given_directly_or_from_a_table(tmp_path):
    from headstart.data.opening import open_inputs

    texts = open_inputs(["great phone", "  awful battery "], "text")
    assert texts.items == ["great phone", "awful battery"] and texts.locations == texts.items
    table = tmp_path / "t.csv"
    table.write_text("text\nfine\nbad\n")
    assert open_inputs([table], "text").items == ["fine", "bad"]
    with pytest.raises(DataError, match="does not exist"):
        open_inputs([tmp_path / "typo.csv"], "text")
    with pytest.raises(DataError, match="is a file among texts"):
        open_inputs([table, "great phone"], "text")
    with pytest.raises(DataError, match="No text to predict"):
        open_inputs(["  "], "text")
    with pytest.raises(DataError, match="No text to predict"):
        open_inputs([""], "text")  # Path("") is the current folder, which exists: not a table
    assert open_inputs(["", "fine"], "text").items == ["fine"]
    with pytest.raises(DataError, match="An empty path was given"):
        open_inputs([str(tmp_path), ""], "image")  # not every image under the current folder
