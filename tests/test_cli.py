import json
import shutil
import re
import subprocess
import sys
import time
from dataclasses import MISSING, fields

import pytest
import yaml

from headstart import cli
from headstart.adaptation import adaptation_names, get_adaptation
from headstart.strategies import get_strategy, strategy_names

from helpers import TINY_TIMM, colour_folder, run_cli, tiny_timm_weights


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
    assert sorted(p.name for p in run.iterdir()) == [".headstart-run", "config.yaml", "contract.json", "labels.json", "manifest.json",
                                                     "metrics.json", "model.safetensors", "predictions.json",
                                                     "report.html", "trained_on.json"]


def test_evaluate_and_predict_a_saved_run(fitted_run, monkeypatch, capsys):
    run, folder, _ = fitted_run
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run, folder, "--json", "--device", "cpu")
    assert code == 0 and json.loads(out)["accuracy"] >= 0.8
    code, out, _ = run_cli(monkeypatch, capsys, "predict", run, folder / "red", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 10
    assert sum(row["label"] == "red" for row in rows) >= 8
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", run, folder)
    assert code == 0 and "confusion matrix" in out and "accuracy" in out
    # the folder holds the run's own training samples: said, and --exclude-train scores the rest (its test split)
    assert "24 of the 30 samples" in " ".join(err.split()) and "--exclude-train" in err
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", run, folder, "--exclude-train", "--json")
    assert code == 0 and json.loads(out)["samples"] == 6 and "left out: 6 scored" in " ".join(err.split())
    # new images of one class are scored too (fitting needs two classes, scoring does not)
    shutil.copytree(folder / "red", run.parent / "reds" / "red")
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", run, run.parent / "reds", "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["samples"] == 10 and scored["per_class"]["red"]["support"] == 10 and scored["accuracy"] >= 0.8
    code, _, err = run_cli(monkeypatch, capsys, "fit", run.parent / "reds", "--out", run.parent / "r1")
    assert code == 2 and "needs at least 2 classes" in " ".join(err.split())


def test_a_table_of_image_paths_fits_and_is_evaluated_and_predicted_as_images(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=10)
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(folder.glob("*/*.png"))]
    (tmp_path / "images.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    code, out, err = run_cli(monkeypatch, capsys, "fit", tmp_path / "images.csv", "--model",  # read as images:
                             f"timm:{TINY_TIMM}", "--weights", tiny_timm_weights(tmp_path), "--out", tmp_path / "run",
                             "--workers", "0", "--json")  # an image column and no text column
    assert code == 0, err
    assert json.loads(out)["accuracy"] >= 0.8 and json.loads(out)["samples"] == 6  # 30 images, 20 % to test
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", tmp_path / "run", tmp_path / "images.csv", "--json",
                             "--exclude-train")  # an image run reads a table as image paths without being told
    assert code == 0 and json.loads(out)["samples"] == 6, err
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "run", tmp_path / "images.csv", "--json")
    predictions = json.loads(out)
    assert code == 0 and len(predictions) == 30 and predictions[0]["input"].endswith(".png"), err
    code, _, err = run_cli(monkeypatch, capsys, "fit", tmp_path / "images.csv", "--modality", "audio",
                           "--out", tmp_path / "other")
    assert code != 0 and "modality" in err


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


def test_rank_json_lists_candidates_best_first(tmp_path, monkeypatch, capsys):
    from helpers import review_table, tiny_bert_folder

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    table = review_table(tmp_path / "reviews.csv")
    folder = tiny_bert_folder(tmp_path / "bert")
    code, out, err = run_cli(monkeypatch, capsys, "rank", table, "--models", f"hf:{folder}", "--layers", "--json")
    rows = json.loads(out)
    assert code == 0, err
    assert set(rows[0]) == {"model", "layer", "logme", "leep", "nce", "hscore", "knn_accuracy", "seconds", "samples"}
    assert [r["logme"] for r in rows] == sorted((r["logme"] for r in rows), reverse=True)
    assert {r["layer"] for r in rows} == {"layer0", "layer1", "final"}


def test_finetune_options_do_not_apply_to_the_linear_probe(tmp_path, monkeypatch, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=3)
    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--epochs", "3", "--out", tmp_path / "r")
    assert code == 2 and "--epochs does not apply to the linear-probe strategy" in " ".join(err.split())


def test_an_interrupted_finetune_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from headstart.training import Callback, loop

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=8, size=32)
    weights = tiny_timm_weights(tmp_path)
    original_fit = loop.Trainer.fit

    def interrupted_fit(self, train, val):
        class Stop(Callback):
            def on_epoch_end(self, trainer, epoch, row):
                if epoch == 1:
                    raise KeyboardInterrupt
        self.callbacks.append(Stop())
        return original_fit(self, train, val)

    monkeypatch.setattr(loop.Trainer, "fit", interrupted_fit)
    args = ["fit", folder, "--model", f"timm:{TINY_TIMM}", "--weights", weights, "--strategy", "finetune",
            "--epochs", "2", "--workers", "0", "--out", tmp_path / "run", "--json"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 130 and "interrupted" in err, (code, err)
    assert f"continue with `headstart fit --resume {tmp_path / 'run'}`" in " ".join(err.split())  # names the run
    assert not (tmp_path / "run").exists()
    assert (tmp_path / ".run.unfinished" / "checkpoint.pt").is_file()
    monkeypatch.setattr(loop.Trainer, "fit", original_fit)
    code, out, err = run_cli(monkeypatch, capsys, "fit", "--resume", tmp_path / "run", "--json")
    assert code == 0, err
    history = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + epoch 1 (from before the interruption) + epoch 2
    assert not (tmp_path / ".run.unfinished").exists()


def test_progress_written_to_a_log_file_gives_one_line_per_epoch(tmp_path, monkeypatch, capsys):
    """stderr is no terminal here (as under nohup or a batch job): a live display would stay empty."""
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=8, size=32)
    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--model", f"timm:{TINY_TIMM}", "--weights",
                           tiny_timm_weights(tmp_path), "--strategy", "finetune", "--epochs", "2", "--workers", "0",
                           "--out", tmp_path / "run")
    assert code == 0, err
    epoch_lines = [line for line in err.splitlines() if line.startswith("finetune epoch ")]  # names the strategy
    assert [line.split(":")[0] for line in epoch_lines if "val acc" in line] == ["finetune epoch 1/2",
                                                                                 "finetune epoch 2/2"]
    assert any(line.startswith("finetune epoch 1/2: ") and line.endswith(" s") for line in epoch_lines)  # timed
    assert any(line.startswith(f"timm:{TINY_TIMM} predicting") for line in err.splitlines())  # names the model


def test_a_long_stage_without_a_terminal_prints_a_line_at_each_interval(capsys):
    """Written to a log file, a long stage is never silent for more than the interval."""
    from headstart.cli.output import _log_lines

    progress = _log_lines(interval=0.05)
    for done in range(1, 6):
        time.sleep(0.03)
        progress("minilm train features", done, 5)
    lines = capsys.readouterr().err.splitlines()
    running = [line for line in lines if "left" in line]
    assert running and all(line.startswith("minilm train features: ") and "/s, about " in line for line in running)
    assert lines[-1].startswith("minilm train features: 5/5 in ")


def test_a_terminated_finetune_exits_like_an_interrupt_and_keeps_its_checkpoint(tmp_path):
    """SIGTERM (kill, a scheduler's stop) must leave a resumable run, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = colour_folder(tmp_path / "imgs", per_class=8, size=32)
    weights = tiny_timm_weights(tmp_path)
    checkpoint = tmp_path / ".run.unfinished" / "checkpoint.pt"
    command = [sys.executable, "-c", "from headstart.cli import main; main()", "fit", str(folder), "--model",
               f"timm:{TINY_TIMM}", "--weights", str(weights), "--strategy", "finetune", "--epochs", "500",
               "--patience", "0", "--workers", "0", "--out", str(tmp_path / "run"), "--json"]
    env = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err, (process.returncode, err)
    assert checkpoint.is_file() and not (tmp_path / "run").exists()


# -- options generated from the configs ------------------------------------------------------------
def help_lines(monkeypatch, *command) -> list[str]:
    """``headstart COMMAND --help`` rendered one option per line, box drawing and runs of blanks removed."""
    import typer.rich_utils
    from typer.testing import CliRunner

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 4000)
    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return [" ".join(line.strip("│ ").split()) for line in result.output.splitlines()]


def flag_of(spec) -> str:
    name = spec.metadata.get("flag") or spec.name.replace("_", "-")
    return "--" + name.split("/")[0].strip().lstrip("-")


def default_of(spec):
    return spec.default if spec.default is not MISSING else spec.default_factory()


def shown(value, line: str) -> str:
    """How --help should show a dataclass default: a bool as the flag that gives it (like typer)."""
    if isinstance(value, bool):
        primary, secondary = line.split()[:2]
        return (primary if value else secondary).lstrip("-")
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def defaults_by_owner(line: str) -> dict[str, str] | str:
    """``[default: 5]`` -> "5"; ``[default: 0.0003 (finetune, lp-ft); 0.003 (lora)]`` -> per owner."""
    text = re.search(r"\[default: (.*)\]$", line).group(1)
    if "; " not in text:
        return text
    owners = {}
    for part in text.split("; "):
        value, names = re.fullmatch(r"(.*) \(([^()]+)\)", part).groups()
        owners.update({name: value for name in names.split(", ")})
    return owners


@pytest.mark.parametrize("command", ["fit", "tune"])
def test_every_strategy_option_is_a_flag_with_its_help_and_each_strategys_default(monkeypatch, command):
    lines = help_lines(monkeypatch, command)
    checked = 0
    for strategy in strategy_names():
        for spec in fields(get_strategy(strategy).config_class):
            flag = flag_of(spec)
            line = next((line for line in lines if line.split(" ", 1)[0] == flag), None)
            assert line is not None, f"{strategy}'s option {spec.name} has no flag {flag} on {command}"
            assert " ".join(spec.metadata["help"].split()) in line, (spec.name, line)
            if "[default:" not in line:  # left out, None does what the help says ("default by architecture")
                assert default_of(spec) is None and "default" in spec.metadata["help"], (strategy, spec.name, line)
                checked += 1
                continue
            defaults = defaults_by_owner(line)
            value = defaults if isinstance(defaults, str) else defaults.get(strategy)
            assert value == shown(default_of(spec), line), (strategy, spec.name, line)
            checked += 1
    assert checked > 40


def test_a_default_that_differs_between_strategies_is_shown_for_each(monkeypatch):
    line = next(line for line in help_lines(monkeypatch, "fit") if line.startswith("--lr "))
    assert line.endswith("[default: 0.0003 (finetune, lp-ft, scratch); 0.003 (lora); 0.001 (bitfit)]")


def test_adapt_and_compare_have_the_options_of_what_they_train(monkeypatch):
    adapt = [line.split(" ", 1)[0] for line in help_lines(monkeypatch, "adapt")]
    for method in adaptation_names():
        cls = get_adaptation(method)
        for spec in [*fields(cls.config_class), *fields(get_strategy(cls.strategies[0]).config_class)]:
            assert flag_of(spec) in adapt, (method, spec.name)
    compare = [line.split(" ", 1)[0] for line in help_lines(monkeypatch, "compare")]
    assert all(flag_of(spec) in compare for spec in fields(get_strategy("finetune").config_class))


@pytest.mark.parametrize("strategy, args, flag", [
    ("linear-probe", ["--lr", "0.1"], "--lr"),
    ("linear-probe", ["--no-train-bn"], "--no-train-bn"),
    ("finetune", ["--head", "mlp"], "--head"),
    ("finetune", ["--C", "2"], "--C"),
    ("lora", ["--bitfit-norms"], "--bitfit-norms"),
    ("bitfit", ["--lora-rank", "4", "--unfreeze", "2"], "--unfreeze, --lora-rank"),
    ("scratch", ["--train-batch", "8", "--lora-targets", "query"], "--lora-targets"),
])
def test_an_option_of_another_strategy_is_an_error_naming_the_flag(tmp_path, monkeypatch, capsys, strategy, args, flag):
    code, _, err = run_cli(monkeypatch, capsys, "fit", tmp_path / "data", "--strategy", strategy, *args,
                           "--out", tmp_path / "r")
    verb = "do" if "," in flag else "does"
    assert code == 2 and f"{flag} {verb} not apply to the {strategy} strategy" in " ".join(err.split()), err
    assert "Traceback" not in err


def test_tune_pins_given_options_and_rejects_those_of_other_strategies(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "tune", tmp_path / "data", "--strategy", "linear-probe",
                           "--epochs", 2, "--out", tmp_path / "search")
    assert code == 2 and "--epochs does not apply to the linear-probe strategy" in " ".join(err.split())


def test_generated_options_reach_the_strategy_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    code, _, err = run_cli(monkeypatch, capsys, "fit", folder, "--model", f"timm:{TINY_TIMM}", "--weights",
                           tiny_timm_weights(tmp_path), "--C", "0.5", "--class-weight", "balanced", "--workers", "0",
                           "--out", tmp_path / "run", "--json")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["strategy_config"]
    assert (saved["C"], saved["class_weight"], saved["head"]) == (0.5, "balanced", "linear")


def test_python_dash_m_headstart_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "headstart", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fit" in result.stdout and "export-merged" in result.stdout


@pytest.mark.parametrize("args", [("audit", ""), ("fit", "", "--out", "run"), ("predict", "run", "great", "")])
def test_an_empty_argument_is_refused_before_anything_reads_the_current_folder(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)  # Path("") is "." : this folder would be read (or written) as the data
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "is empty ('')" in err and f"after `{args[args.index('') - 1]}`" in err
    assert list(tmp_path.iterdir()) == []


def test_a_text_run_predicts_sentences_given_as_arguments_or_on_standard_input(tmp_path, monkeypatch, capsys):
    import io

    from helpers import review_table, tiny_bert_folder

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    table = review_table(tmp_path / "reviews.csv", per_class=20)
    code, _, err = run_cli(monkeypatch, capsys, "fit", table, "--model", f"hf:{tiny_bert_folder(tmp_path / 'bert')}",
                           "--out", tmp_path / "run")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "run", "great phone", "it broke", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [row["input"] for row in rows] == ["great phone", "it broke"]
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-5 for row in rows)
    monkeypatch.setattr(sys, "stdin", io.StringIO("great phone\n\nit broke\n"))
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "run", "-", "--json")
    assert code == 0, err
    assert json.loads(out) == rows
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "run", tmp_path / "missing.csv")
    assert code == 2 and "does not exist" in " ".join(err.split())


def test_tables_at_80_columns_keep_every_name_and_figure_whole():
    """A pipe, a log file or a narrow window: cells wrap, nothing is cut with an ellipsis."""
    import io

    from rich.console import Console

    from headstart.cli.output import backbones_table, comparison_table, ranking_table
    from headstart.backbones import list_backbones

    models = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "timm:test_efficientnet"]
    ranking = [{"model": m, "layer": "final", "logme": 0.51234, "leep": -1.2, "nce": -0.9, "hscore": 2.5,
                "knn_accuracy": 0.875, "feature_dim": 1280, "seconds": 0.12} for m in models]
    comparison = [{"strategy": s, "accuracy": 0.5034, "f1": 0.4987, "precision": 0.5, "recall": 0.5,
                   "trainable_params": 3_374_851, "trainable_fraction": 0.0012, "checkpoint_bytes": 13_500_000,
                   "peak_memory_bytes": 900_000_000, "train_seconds": 61.2}
                  for s in ("scratch", "linear-probe", "finetune", "lp-ft")]
    for table, whole in ((ranking_table(ranking, "rank"), [*models, "0.512"]),
                         (comparison_table(comparison, "compare"), ["linear-probe", "finetune", "0.5034", "61.2"]),
                         (backbones_table(list_backbones()), ["efficientnet_lite0", "minilm"])):
        console = Console(width=80, file=io.StringIO(), color_system=None)
        console.print(table)
        text = console.file.getvalue()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
        cells = [cell.strip() for line in text.splitlines() for cell in line.split("│")]
        for word in whole:
            assert word in cells or word in text, word


# -- the first ten minutes: a fast start and readable help ---------------------------------------
HEAVY = ("torch", "timm", "transformers", "sklearn")


def test_the_command_line_and_its_help_and_models_import_no_torch():
    """Building the app, `--help`, `models` and `fit --help` load none of the heavy libraries (a fast start:
    bench/cold_start.py --cli times it)."""
    code = ("import sys\nfrom headstart.cli import main\n"
            "for args in (['--help'], ['models'], ['models', '--json'], ['fit', '--help'], ['adapt', '--help']):\n"
            "    sys.argv = ['headstart', *args]\n"
            "    try:\n        main()\n    except SystemExit as exit:\n        assert not exit.code, (args, exit.code)\n"
            f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: []", result.stdout[-500:]
    assert "efficientnet_lite0" in result.stdout and "Reading tables and images" in result.stdout


def test_the_configs_the_cli_reads_without_torch_are_the_registered_ones():
    from headstart.adaptation.configs import ADAPTATION_CONFIGS, DEFAULT_STRATEGIES
    from headstart.strategies.configs import STRATEGY_CONFIGS

    assert list(STRATEGY_CONFIGS.items()) == [(name, get_strategy(name).config_class) for name in strategy_names()]
    assert list(ADAPTATION_CONFIGS.items()) == [(m, get_adaptation(m).config_class) for m in adaptation_names()]
    assert DEFAULT_STRATEGIES == {m: get_adaptation(m).strategies[0] for m in adaptation_names()}


def _commands():
    import typer

    group = typer.main.get_command(cli.app)
    return group, group.commands


def test_every_option_and_argument_of_every_command_says_what_it_does():
    _, commands = _commands()
    missing = [f"{name} {param.name}" for name, command in commands.items() for param in command.params
               if not (getattr(param, "help", None) or "").strip()]
    assert not missing


def test_help_shows_no_value_type_for_a_flag(monkeypatch):
    _, commands = _commands()
    for command in [[], *([name] for name in commands)]:
        lines = help_lines(monkeypatch, *command)
        assert not [line for line in lines if "<bool>" in line], command
        assert any(line.startswith("--help Show this message") for line in lines), command


def test_options_are_grouped_in_one_order_in_every_command():
    from headstart.cli.app import _panel_rank

    _, commands = _commands()
    for name, command in commands.items():
        options = [p for p in command.params if p.param_type_name == "option"]
        ranks = [_panel_rank(p) for p in options]
        assert ranks == sorted(ranks), (name, [p.rich_help_panel for p in options])
        assert all(p.rich_help_panel for p in options), (name, [p.name for p in options if not p.rich_help_panel])


def test_help_lists_the_groups_data_model_strategy_output_in_that_order(monkeypatch):
    lines = help_lines(monkeypatch, "fit")
    titles = [line.strip("╭─╮ ") for line in lines if line.startswith("╭")]
    order = ["Data", "Reading tables and images", "Model", "Strategy", "Options of every strategy", "Output", "Compute"]
    assert [t for t in titles if t in order] == order, titles
    commands = [line.strip("╭─╮ ") for line in help_lines(monkeypatch) if line.startswith("╭")]
    assert commands[1:5] == ["Start here", "Train", "Inspect", "Deploy"], commands


def test_val_help_shows_the_share_a_fit_really_holds_out():
    import inspect

    from headstart.cli.fit import TRAIN_VAL_SHARE
    from headstart.transfer import Transfer

    assert TRAIN_VAL_SHARE == inspect.signature(Transfer).parameters["val_fraction"].default


def test_val_help_names_its_default_once(monkeypatch):
    from headstart.cli.fit import TRAIN_VAL_SHARE

    line = next(line for line in help_lines(monkeypatch, "fit") if line.startswith("--val "))
    assert line.endswith(f"[default: {TRAIN_VAL_SHARE} of the training split]") and line.count("default") == 1, line


def test_a_none_default_the_help_explains_is_not_shown_as_none(monkeypatch):
    lines = help_lines(monkeypatch, "fit")
    for flag in ("--sep", "--encoding", "--lora-targets", "--skip-bad-rows"):
        line = next(line for line in lines if line.startswith(flag + " "))
        assert "[default:" not in line, line
    assert next(line for line in lines if line.startswith("--C ")).endswith("[default: None]")


def test_the_cross_validation_summary_names_every_metric_in_an_80_column_window():
    from rich.console import Console

    from headstart.cli.output import cv_table

    cv = {"k": 3, "mean": {"accuracy": 0.6997, "balanced_accuracy": 0.6864, "precision": 0.7795, "recall": 0.6864,
                           "f1": 0.6582},
          "std": {"accuracy": 0.0834, "balanced_accuracy": 0.0923, "precision": 0.0136, "recall": 0.0923, "f1": 0.1357}}
    console = Console(width=80, record=True, force_terminal=False)
    console.print(cv_table(cv))
    text = console.export_text()
    for line in ("accuracy", "balanced accuracy", "precision", "recall", "f1"):
        assert any(row.split("│")[1:2] and row.split("│")[1].strip() == line for row in text.splitlines()), text
    assert "0.6997 ± 0.0834" in text and "0.6582 ± 0.1357" in text


def test_a_small_confusion_matrix_keeps_its_title_on_one_line():
    from rich.console import Console

    from headstart.cli.output import confusion_table

    console = Console(width=80, record=True, force_terminal=False)
    console.print(confusion_table({"classes": ["0", "1"], "confusion_matrix": [[19, 0], [2, 19]]}))
    assert console.export_text().splitlines()[0].strip() == "confusion matrix (rows: true, columns: predicted)"


def test_audit_locations_are_cut_at_the_data_folder_only_at_a_path_s_start(tmp_path, monkeypatch):
    from headstart.cli.output import _short

    (tmp_path / "split" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    inside = f"{tmp_path}/split/train/a.jpg"
    assert _short(inside, "split") == "train/a.jpg"  # was /tmp/.../train/a.jpg: "split/" cut from the middle
    assert _short(f"copy of {inside}", "split") == "copy of train/a.jpg"
    assert _short("/elsewhere/split/b.jpg", "split") == "/elsewhere/split/b.jpg"
    assert _short(inside, str(tmp_path / "split")) == "train/a.jpg"
