"""An output path is checked before any work: only a previous run is ever replaced, and two
writers of one run are refused (nothing the user had is lost)."""

from __future__ import annotations

import fcntl
import os

import pytest

import headstart as hs
from headstart.runs import RUN_MARKER, check_output_dir, is_run
from headstart.workflows import work_dir

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights
from test_cli import run_cli


@pytest.fixture
def folder(tmp_path):
    return colour_folder(tmp_path / "imgs", per_class=6, size=24)


def _fit(folder, out, tmp_path, monkeypatch, capsys):
    weights = tiny_timm_weights(tmp_path)
    return run_cli(monkeypatch, capsys, "fit", str(folder), "--model", f"timm:{TINY_TIMM}", "--weights", str(weights), "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "--workers", "0")


def test_a_folder_that_is_no_run_is_refused_and_left_as_it_was(folder, tmp_path, monkeypatch, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("x")
    code, _, err = _fit(folder, precious, tmp_path, monkeypatch, capsys)
    assert code == 2 and "replaces only a previous run" in err and "Traceback" not in err
    assert (precious / "thesis.txt").read_text() == "x"
    assert not work_dir(precious).exists()  # refused before any work


@pytest.mark.parametrize("where", ["data", "inside-data", "file", "cwd"])
def test_outputs_that_would_destroy_the_data_a_file_or_the_current_folder_are_refused(where, folder, tmp_path,
                                                                                        monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    target = {"data": folder, "inside-data": folder / "red" / "run", "file": tmp_path / "notes.txt",
              "cwd": tmp_path}[where]
    if where == "file":
        target.write_text("keep me")
    before = sorted(p.name for p in folder.rglob("*"))
    code, _, err = _fit(folder, target, tmp_path, monkeypatch, capsys)
    assert code == 2 and "--out" in err and "Traceback" not in err
    assert sorted(p.name for p in folder.rglob("*")) == before
    if where == "file":
        assert target.read_text() == "keep me"


def test_a_previous_run_is_replaced_and_carries_the_marker(folder, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert _fit(folder, run, tmp_path, monkeypatch, capsys)[0] == 0
    assert (run / RUN_MARKER).is_file() and is_run(run)
    assert _fit(folder, run, tmp_path, monkeypatch, capsys)[0] == 0  # replaced: a previous run
    hs.load(run, device="cpu")


def test_a_run_written_before_the_marker_is_still_recognised(folder, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert _fit(folder, run, tmp_path, monkeypatch, capsys)[0] == 0
    (run / RUN_MARKER).unlink()
    assert is_run(run)
    check_output_dir(run)  # replaceable


def test_a_second_writer_of_one_run_is_refused_while_the_first_holds_it(folder, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    workspace = work_dir(run)
    workspace.mkdir(parents=True)
    with open(workspace / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = _fit(folder, run, tmp_path, monkeypatch, capsys)
    assert code == 2 and "Another headstart process is writing" in err
    assert not run.exists()


def test_saving_over_a_folder_that_is_no_run_raises_and_keeps_it(tmp_path, folder):
    data = hs.ImageFolder(folder)
    model = hs.Transfer(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path), num_workers=0, device="cpu",
                        cache_dir=tmp_path / "cache").fit(data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(hs.ConfigError, match="replaces only a previous run"):
        model.save(other)
    assert os.listdir(other) == ["keep.txt"]
