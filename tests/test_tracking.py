"""Experiment tracking: parameters, per-epoch metrics and artifacts reach MLflow and TensorBoard."""

import sys

import pytest

from headstart.errors import ConfigError
from headstart.tracking import flatten, open_tracker

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights
from test_cli import run_cli


@pytest.fixture
def finetune_args(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=6, size=24)
    return [folder, "--model", f"timm:{TINY_TIMM}", "--weights", tiny_timm_weights(tmp_path), "--strategy", "finetune",
            "--epochs", 2, "--workers", 0, "--out", tmp_path / "run", "--json"]


def test_fit_logs_params_epochs_and_the_run_to_mlflow(finetune_args, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    store = tmp_path / "mlruns"
    code, _, err = run_cli(monkeypatch, capsys, "fit", *finetune_args, "--track", "mlflow", "--track-uri", store)
    assert code == 0, err
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("headstart").experiment_id])[0]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "finetune" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_f1")] == [1, 2]
    assert "test.accuracy" in run.data.metrics
    assert {"report.html", "metrics.json", "model.safetensors"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_fit_writes_tensorboard_event_files(finetune_args, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = run_cli(monkeypatch, capsys, "fit", *finetune_args, "--track", "tensorboard",
                           "--track-uri", tmp_path / "tb")
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "tb" / "run")).Reload()
    assert [e.step for e in events.Scalars("val_f1")] == [1, 2]
    assert "test.f1" in events.Tags()["scalars"]
    assert "parameters/text_summary" in events.Tags()["tensors"]


def test_a_missing_tracker_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError, match=r"needs the mlflow package, which is not installed: `pip install mlflow-skinny`"):
        open_tracker("mlflow", "run")
    with pytest.raises(ConfigError, match="must be one of mlflow, tensorboard. Got 'wandb'"):
        open_tracker("wandb", "run")


def test_nested_parameters_are_flattened():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
