import pytest
import torch

from headstart import runs
from headstart.errors import DataError
from headstart.runs import RunFiles, read_run, write_run


def _run(value=1.0):
    return RunFiles({"strategy": "linear-probe"}, ["a", "b"], {"modality": "image"}, {"accuracy": 0.5},
                    {"head.weight": torch.full((2, 3), value)})


def test_a_run_reads_back_what_was_written(tmp_path):
    write_run(tmp_path / "run", _run())
    back = read_run(tmp_path / "run")
    assert back.labels == ["a", "b"] and back.config["strategy"] == "linear-probe"
    assert torch.equal(back.tensors["head.weight"], torch.ones(2, 3))


def test_an_interrupted_write_leaves_nothing_that_looks_like_a_run(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_run(tmp_path / "run", _run())
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_overwrite_keeps_the_old_run(tmp_path, monkeypatch):
    write_run(tmp_path / "run", _run(1.0))
    monkeypatch.setattr(runs, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_run(tmp_path / "run", _run(2.0))
    assert torch.equal(read_run(tmp_path / "run").tensors["head.weight"], torch.ones(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_overwrite_replaces_the_old_run(tmp_path):
    write_run(tmp_path / "run", _run(1.0))
    write_run(tmp_path / "run", _run(2.0))
    assert float(read_run(tmp_path / "run").tensors["head.weight"][0, 0]) == 2.0


def test_reading_an_incomplete_run_names_the_missing_files(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    with pytest.raises(DataError, match="missing labels.json"):
        read_run(tmp_path / "run")
    with pytest.raises(DataError, match="does not exist"):
        read_run(tmp_path / "nothing")


def test_a_history_whose_epochs_have_different_columns_is_written_whole(tmp_path):
    """A run resumed from an older checkpoint mixes epochs without and with newer columns."""
    history = [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.7, "train_f1": 0.8}]
    run = _run()
    run.extra["history"] = history
    write_run(tmp_path / "run", run)
    assert (tmp_path / "run" / "history.csv").read_text().splitlines() == [
        "epoch,train_loss,train_f1", "1,0.9,", "2,0.7,0.8"]
