import json
import sys

import pytest

from headstart import cli

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights


def run_cli(monkeypatch, capsys, *args):
    """Run `headstart ARGS...` in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["headstart", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def fitted_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=10)
    weights = tiny_timm_weights(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "fit", folder, "--model", f"timm:{TINY_TIMM}", "--weights",
                             weights, "--out", tmp_path / "run", "--workers", "0", "--json")
    assert code == 0, err
    return tmp_path / "run", folder, json.loads(out)


def test_fit_json_prints_the_metrics_and_writes_a_complete_run(fitted_run):
    run, _, metrics = fitted_run
    assert {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(metrics)
    assert metrics["accuracy"] >= 0.8
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "contract.json", "labels.json",
                                                     "metrics.json", "model.safetensors"]


def test_evaluate_and_predict_a_saved_run(fitted_run, monkeypatch, capsys):
    run, folder, _ = fitted_run
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run, folder, "--json", "--device", "cpu")
    assert code == 0 and json.loads(out)["accuracy"] >= 0.8
    code, out, _ = run_cli(monkeypatch, capsys, "predict", run, folder / "red", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 10
    assert sum(row["label"] == "red" for row in rows) >= 8
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run, folder)
    assert code == 0 and "confusion matrix" in out and "accuracy" in out


def test_models_lists_the_packaged_backbones(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--json")
    names = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and names["efficientnet_lite0"]["available"] and names["minilm"]["modality"] == "text"


@pytest.mark.parametrize("args, message", [
    (["fit", "no/such/folder", "--out", "x"], "does not exist"),
    (["fit", "{folder}", "--model", "efficientnet_lte0", "--out", "{tmp}/r"], "Did you mean 'efficientnet_lite0'"),
    (["fit", "{folder}", "--strategy", "magic", "--out", "{tmp}/r"], "Unknown strategy 'magic'"),
    (["evaluate", "{tmp}/missing-run", "{folder}"], "is not a run directory"),
])
def test_bad_input_gives_one_clear_line_and_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    folder = colour_folder(tmp_path / "imgs", per_class=3)
    args = [a.format(folder=folder, tmp=tmp_path) for a in args]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err
