"""A run, a checkpoint and the files around them: damage is found and named (exit 2, one line),
a fault while writing leaves nothing half-written, and nothing a user had is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import headstart as hs
from headstart import runs
from headstart.errors import ConfigError, DataError, OutputError
from headstart.integrity import MANIFEST
from headstart.workflows import FitRun, RunArgs, fit_run, resume_run, work_dir

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights
from test_cli import run_cli


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A linear-probe run of a tiny model on colours, written once and copied per test."""
    root = tmp_path_factory.mktemp("good")
    folder = colour_folder(root / "imgs", per_class=8, size=24)
    fit_run(folder, root / "run", model=f"timm:{TINY_TIMM}", weights=tiny_timm_weights(root), workers=0,
            cache_dir=root / "cache")
    return root / "run"


@pytest.fixture
def run(good_run, tmp_path):
    shutil.copytree(good_run, tmp_path / "run")
    return tmp_path / "run"


def _flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_run_records_the_digest_of_each_file_and_loads_when_untouched(run):
    manifest = json.loads((run / MANIFEST).read_text())
    assert {"config.yaml", "labels.json", "model.safetensors", "metrics.json"} <= set(manifest["sha256"])
    assert hs.load(run).classes_ == ["blue", "green", "red"]


@pytest.mark.parametrize("change", ["weights", "labels", "config"])
def test_a_file_changed_after_the_run_was_written_is_named(run, change):
    if change == "weights":
        _flip_byte(run / "model.safetensors")  # a weight's bytes, the header intact
    elif change == "labels":
        (run / "labels.json").write_text(json.dumps(["red", "green", "blue"]))
    else:
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["backbone"].update(name="efficientnet_lite0", weights_digest="579344248a93e230")
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    name = {"weights": "model.safetensors", "labels": "labels.json", "config": "config.yaml"}[change]
    with pytest.raises(DataError, match=f"{name} changed after the run was written"):
        hs.load(run)


def test_nan_weights_are_refused_even_in_a_run_without_a_manifest(run):
    (run / MANIFEST).unlink()
    tensors = load_file(run / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, run / "model.safetensors")
    with pytest.raises(DataError, match="NaN or infinite weights"):
        hs.load(run)


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "header"])
def test_a_damaged_weights_file_is_a_clear_error(run, damage):
    (run / MANIFEST).unlink()
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(4096),
                         "header": data[:8] + b"{garbage" + data[16:]}[damage])
    with pytest.raises(DataError, match="model.safetensors is damaged"):
        hs.load(run)


@pytest.mark.parametrize("content", ["{{not: yaml", "", "- a\n- b\n", "strategy: linear-probe\n"])
def test_a_damaged_config_is_a_clear_error(run, content):
    (run / MANIFEST).unlink()
    (run / "config.yaml").write_text(content)
    with pytest.raises(DataError, match="config.yaml is damaged"):
        hs.load(run)


@pytest.mark.parametrize("content", ["[\"red\", ", "{}", "[\"a\", \"a\", \"b\"]", "[\"a\", \"b\"]"])
def test_damaged_or_wrong_length_labels_are_a_clear_error(run, content):
    (run / MANIFEST).unlink()
    (run / "labels.json").write_text(content)
    with pytest.raises(DataError, match="labels.json"):
        hs.load(run)


def test_a_head_of_the_wrong_shape_is_a_clear_error(run):
    (run / MANIFEST).unlink()
    tensors = load_file(run / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, run / "model.safetensors")
    with pytest.raises(DataError, match="does not fit the model"):
        hs.load(run)


def test_a_damaged_manifest_is_a_clear_error(run):
    (run / MANIFEST).write_text("{")
    with pytest.raises(DataError, match="manifest.json is damaged"):
        hs.load(run)


@pytest.mark.parametrize("name", ["metrics.json", "predictions.json"])
def test_damaged_optional_files_never_block_prediction_or_the_report(run, name, tmp_path, monkeypatch, capsys):
    (run / name).write_text("{broken")
    model = hs.load(run)
    assert model.classes_ == ["blue", "green", "red"]
    image = next((run.parent / "imgs").rglob("*.png")) if (run.parent / "imgs").is_dir() else None
    folder = colour_folder(tmp_path / "more", per_class=2, size=24)
    code, out, err = run_cli(monkeypatch, capsys, "predict", str(run), str(folder), "--json")
    assert code == 0 and "Traceback" not in err, err
    assert image is None or image.is_file()
    code, _, err = run_cli(monkeypatch, capsys, "report", str(run))
    assert "Traceback" not in err and code in (0, 2)


def test_weights_named_in_a_config_that_are_no_weights_file_are_a_clear_error(run, tmp_path):
    (run / MANIFEST).unlink()
    config = yaml.safe_load((run / "config.yaml").read_text())
    passwd = tmp_path / "passwd.safetensors"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for weights in ("/etc/passwd", str(passwd)):
        config["backbone"]["weights"] = weights
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(ConfigError, match="Cannot read weights"):
            hs.load(run)


def test_runs_follow_the_umask(good_run, tmp_path):
    old = os.umask(0o022)
    try:
        model = hs.load(good_run)
        model.save(tmp_path / "shared", metrics={})
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "shared").iterdir()} == {0o644}


def test_a_disk_full_while_writing_a_run_keeps_the_old_run_and_leaves_no_temp_files(run, monkeypatch):
    before = (run / "model.safetensors").read_bytes()
    model = hs.load(run)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "save_file", full)
    with pytest.raises(OutputError, match="No space left on device. The previous run there is kept"):
        model.save(run, metrics={})
    assert (run / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


def test_a_read_only_output_is_one_line_with_exit_2(good_run, tmp_path, monkeypatch, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=6, size=24)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(runs.tempfile, "mkdtemp", read_only)
    code, _, err = run_cli(monkeypatch, capsys, "fit", str(folder), "--model", f"timm:{TINY_TIMM}", "--weights",
                           str(tiny_timm_weights(tmp_path)), "--out", str(tmp_path / "out"), "--workers", "0")
    assert code == 2 and "Read-only file system" in " ".join(err.split()) and "Traceback" not in err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1
    assert not work_dir(tmp_path / "out").exists()  # a failed linear probe leaves nothing to resume


def _finetune_args(tmp_path, folder, epochs=2):
    return RunArgs.create(folder, tmp_path / "run", model=f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path),
                          strategy="finetune", options={"epochs": epochs}, workers=0)


def _interrupt_after_first_epoch(monkeypatch):
    from headstart.training import Callback, loop

    original = loop.Trainer.fit

    def interrupted(self, train, val):
        class Stop(Callback):
            def on_epoch_end(self, trainer, epoch, row):
                raise KeyboardInterrupt
        self.callbacks.append(Stop())
        return original(self, train, val)

    monkeypatch.setattr(loop.Trainer, "fit", interrupted)
    return original


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A finetune interrupted after its first epoch: (data folder, its work folder)."""
    folder = colour_folder(tmp_path / "imgs", per_class=6, size=24)
    original = _interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        FitRun(_finetune_args(tmp_path, folder)).run()
    from headstart.training import loop

    monkeypatch.setattr(loop.Trainer, "fit", original)
    assert (work_dir(tmp_path / "run") / "checkpoint.pt").is_file()
    return folder, work_dir(tmp_path / "run")


def test_a_truncated_checkpoint_is_a_clear_error_on_resume(interrupted, tmp_path):
    checkpoint = interrupted[1] / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(DataError, match="checkpoint .* is damaged"):
        resume_run(tmp_path / "run")


def test_damaged_arguments_are_a_clear_error_on_resume(interrupted, tmp_path):
    (interrupted[1] / "args.json").write_text("{\"data\": ")
    with pytest.raises(DataError, match="args.json is damaged"):
        resume_run(tmp_path / "run")


def test_resuming_after_the_data_changed_is_refused(interrupted, tmp_path):
    folder = interrupted[0]
    next(folder.rglob("*.png")).unlink()
    with pytest.raises(DataError, match="changed since the interrupted fit"):
        resume_run(tmp_path / "run")
    assert (interrupted[1] / "checkpoint.pt").is_file()  # nothing lost: restore the data and resume


def test_a_new_fit_never_overwrites_an_interrupted_ones_checkpoint(interrupted, tmp_path):
    with pytest.raises(ConfigError, match="--resume"):
        FitRun(_finetune_args(tmp_path, interrupted[0])).run()
    assert (interrupted[1] / "checkpoint.pt").is_file()


def test_a_disk_full_at_the_checkpoint_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from headstart.training import callbacks

    folder = colour_folder(tmp_path / "imgs", per_class=6, size=24)

    def full(state, path):
        open(path, "wb").write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 244")

    monkeypatch.setattr(callbacks.torch, "save", full)
    with pytest.raises(OutputError, match="Cannot write the checkpoint .*is the disk full"):
        FitRun(_finetune_args(tmp_path, folder)).run()
    assert not list(tmp_path.rglob("*.tmp"))
