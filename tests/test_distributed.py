"""Distributed training and extraction on this CPU: 2 processes over gloo, started by `--nproc`
(torch.distributed's elastic launcher, what torchrun runs), on tiny models and data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from safetensors.numpy import load_file

import headstart as hs
from headstart import distributed
from headstart.contract import InputContract
from headstart.data import labelled_loader, set_loader_epoch
from headstart.distributed import World
from headstart.errors import ConfigError

from helpers import TINY_TIMM, colour_folder, run_cli, tiny_bert_folder, tiny_timm_weights

pytestmark = pytest.mark.timeout(300)


def _headstart(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HEADSTART_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "headstart", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def _texts(path: Path, n: int = 48) -> Path:
    words = {"pos": ["great", "lovely", "superb", "fine"], "neg": ["awful", "broken", "poor", "bad"]}
    rows = ["text,label"]
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        rows.append(f"item {i} is {words[label][i % 4]} and {words[label][(i // 4) % 4]},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def text_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-text")
    return root, _texts(root / "texts.csv"), tiny_bert_folder(root / "bert", dropout=0.0)


@pytest.fixture(scope="module")
def one_process(text_job):
    """The 1-process fit, batch 8: the reference of both the 2-process and the accumulated fit."""
    return _fit_text_here(*text_job, "one")


def _fit_arguments(table: Path, bert: Path, out: Path | str) -> list[str]:
    return ["fit", str(table), "--model", f"hf:{bert}", "--strategy", "finetune", "--epochs", "2", "--train-batch",
            "8", "--dropout", "0", "--lr", "1e-3", "--device", "cpu", "--out", str(out)]


def _fit_text(root: Path, table: Path, bert: Path, out: str, *extra: str) -> dict:
    result = _headstart(*_fit_arguments(table, bert, out), *extra, cwd=root, cache=root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((root / out / "history.json").read_text())


def _fit_text_here(root: Path, table: Path, bert: Path, out: str, *extra: str) -> dict:
    """:func:`_fit_text` in this process: one process needs no launcher, nor a new interpreter."""
    from headstart import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_CACHE", str(root / "cache"))
        patch.setattr(sys, "argv", ["headstart", *_fit_arguments(table, bert, root / out), *extra])
        try:
            cli.main()
        except SystemExit as exc:
            assert not exc.code, f"the fit exited with {exc.code}"
    return json.loads((root / out / "history.json").read_text())


def _assert_same_curves(reference: list[dict], other: list[dict]) -> None:
    """The same epochs, with training and validation losses equal up to floating-point noise."""
    for a, b in zip(reference, other, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)


def test_two_processes_train_as_one_with_the_same_global_batch(text_job, one_process):
    root, table, bert = text_job
    one = one_process
    two = _fit_text(root, table, bert, "two", "--nproc", "2")
    _assert_same_curves(one, two)
    for a, b in zip(one, two, strict=True):
        assert b["val_f1"] == pytest.approx(a["val_f1"], abs=1e-6)
    weights_one = load_file(root / "one" / "model.safetensors")
    weights_two = load_file(root / "two" / "model.safetensors")
    assert max(float(np.abs(weights_one[k] - weights_two[k]).max()) for k in weights_one) < 1e-4
    # one run directory, written by rank 0 alone; no work folder left behind
    assert sorted(p.name for p in root.iterdir() if "two" in p.name) == ["two"]


def test_gradient_accumulation_gives_the_large_batch_result(text_job, one_process):
    root, table, bert = text_job
    whole = one_process
    accumulated = _fit_text_here(root, table, bert, "accumulated", "--accumulate", "4")
    _assert_same_curves(whole, accumulated)
    config = (root / "accumulated" / "config.yaml").read_text()
    assert "accumulate: 4" in config


@pytest.mark.parametrize("size", [1, 2, 3])
def test_each_rank_takes_its_share_of_one_permutation_and_every_sample_once(size, make_text_table):
    table = make_text_table("t.csv", "text,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(23)))
    data = hs.TextTable(table)
    contract = InputContract(modality="text", feature_dim=4)
    alone = labelled_loader(data, contract, train=True, batch_size=6, world=World(), seed=5)
    loaders = [labelled_loader(data, contract, train=True, batch_size=6 // size if size < 3 else 2,
                               world=World(rank, size), seed=5) for rank in range(size)]
    for epoch in (0, 1):
        for loader in [alone, *loaders]:
            set_loader_epoch(loader, epoch)
        order = list(alone.sampler)
        shares = [list(loader.sampler) for loader in loaders]
        seen = [i for share in shares for i in share]
        assert len(seen) == len(set(seen)) == 23 // size * size  # disjoint, none twice
        assert set(seen) == set(order[:len(seen)])
        if size < 3:  # with the same global batch, the batches are the same samples
            batch = 6 // size
            for step in range(len(seen) // 6):
                joint = {i for share in shares for i in share[step * batch:(step + 1) * batch]}
                assert joint == set(order[step * 6:(step + 1) * 6])
    set_loader_epoch(alone, 0)
    first = list(alone.sampler)
    set_loader_epoch(alone, 1)
    assert list(alone.sampler) != first  # reshuffled per epoch, from the seed


def test_a_batch_that_does_not_split_evenly_is_a_clear_error():
    assert distributed.micro_batch(32, 2, 4) == 4
    with pytest.raises(ConfigError, match=r"--train-batch 30 cannot be split evenly over 4 process\(es\) x "
                                          r"--accumulate 1: use a multiple of 4, such as 28 or 32"):
        distributed.micro_batch(30, 1, 4)


def test_evaluation_shards_cover_every_sample_once():
    for n, size in [(7, 2), (5, 3), (1, 2)]:
        positions = [distributed.shard_positions(n, World(rank, size)) for rank in range(size)]
        assert sorted(p for share in positions for p in share) == list(range(n))


@pytest.fixture(scope="module")
def image_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-images")
    return root, colour_folder(root / "imgs", per_class=12, size=32), tiny_timm_weights(root)


def _rank_process(launcher: subprocess.Popen, rank: str) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "headstart" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_a_killed_rank_ends_the_job_with_one_message_and_resume_continues(image_job):
    root, images, weights = image_job
    command = [sys.executable, "-m", "headstart", "fit", str(images), "--model", f"timm:{TINY_TIMM}", "--weights",
               str(weights), "--strategy", "finetune", "--epochs", "4", "--patience", "0", "--train-batch", "4",
               "--device", "cpu", "--out", "killed", "--nproc", "2"]
    env = {**os.environ, "HEADSTART_CACHE": str(root / "cache")}
    launcher = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = root / ".killed.unfinished" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    victim = _rank_process(launcher, "1")
    assert victim is not None and checkpoint.is_file()
    victim.kill()
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    message = " ".join(stderr.split())  # the console wraps lines at its width
    assert message.count("error:") == 1
    assert "rank 1" in message and "SIGKILL" in message and "--resume killed --nproc 2" in message
    assert "Traceback" not in stderr
    saved = torch.load(checkpoint, weights_only=True)  # intact, and written by a 2-process run
    assert saved["processes"] == 2 and 1 <= saved["epoch"] < 4
    resumed = _headstart("fit", "--resume", "killed", "--nproc", "2", cwd=root, cache=root / "cache")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((root / "killed" / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 5))


def _cached_rows(cache: Path) -> list[bytes]:
    return [bytes(row) for shard in sorted(cache.rglob("*.safetensors"))
            for row in load_file(shard)["digests"]]


def test_two_processes_fill_the_feature_cache_once_per_sample_and_a_second_run_reads_it(image_job, monkeypatch,
                                                                                        capsys):
    root, images, weights = image_job
    cache = root / "probe-cache"
    first = _headstart("fit", str(images), "--model", f"timm:{TINY_TIMM}", "--weights", str(weights),
                       "--device", "cpu", "--out", "probe", "--nproc", "2", cwd=root, cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _cached_rows(cache)
    assert len(rows) == len(set(rows)) == 36  # every sample embedded once, by one rank or the other
    assert len(list(cache.rglob("*.safetensors"))) == 2  # one shard per rank: the work was shared
    assert json.loads((root / "probe" / "metrics.json").read_text())["test"]["accuracy"] > 0.5
    monkeypatch.setenv("HEADSTART_CACHE", str(cache))  # a later run, in this process: the shards of both ranks serve it
    code, _, err = run_cli(monkeypatch, capsys, "fit", images, "--model", f"timm:{TINY_TIMM}", "--weights", weights,
                           "--device", "cpu", "--out", root / "probe-again", "--seed", "3")
    assert code == 0, err
    assert _cached_rows(cache) == rows  # read from the cache, nothing embedded again


def _failure(exitcode: int, message: str = "", timestamp: int = 0, pid: int = 7):
    from types import SimpleNamespace

    return SimpleNamespace(exitcode=exitcode, message=message, timestamp=timestamp, pid=pid)


@pytest.mark.parametrize(("failures", "code", "said"), [
    ({0: _failure(2, "bad data"), 1: _failure(2, "bad data")}, 2, None),  # rank 0 has printed it
    ({0: _failure(-15), 1: _failure(2, "no GPU of its own")}, 2, "rank 1: no GPU of its own"),
    ({0: _failure(3, timestamp=1), 1: _failure(-9, timestamp=2, pid=42)}, 1,
     "the process of rank 1 (pid 42) was killed by SIGKILL; the job stopped. kept"),
    ({0: _failure(130), 1: _failure(-15)}, 130, None),
    ({0: _failure(130, timestamp=2), 1: _failure(-9, timestamp=1, pid=42)}, 1,  # rank 0 computing took the SIGTERM
     "the process of rank 1 (pid 42) was killed by SIGKILL; the job stopped. kept"),
])
def test_the_launcher_says_once_why_the_job_stopped(failures, code, said, capsys):
    import typer

    from headstart.cli.launch import _report

    with pytest.raises(typer.Exit) as stopped:
        _report(failures, lambda: "kept")
    assert stopped.value.exit_code == code
    printed = " ".join(capsys.readouterr().err.split())
    assert (said in printed and printed.count("error:") == 1) if said else printed == ""


def _collectives(rank: int, port: int, results) -> None:
    """One rank of a 2-process gloo job exercising the building blocks the loop and extraction use."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    distributed.join(torch.device("cpu"))
    weight = torch.nn.Parameter(torch.zeros(3))
    weight.grad = torch.full((3,), float(rank + 1))  # 1 on rank 0, 2 on rank 1: the mean is 1.5
    distributed.average_gradients([weight])
    mine = np.array([[i, i * 10] for i in distributed.shard_positions(5)], dtype=np.float32)
    rows = distributed.gather_rows(mine, 5)
    results[rank] = (weight.grad.tolist(), rows.tolist(), distributed.broadcast(f"from {rank}"),
                     distributed.gather(rank), distributed.current())


def test_collectives_average_gather_and_broadcast_across_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_collectives, args=(port, results), nprocs=2, join=True)
    for rank in (0, 1):
        grad, rows, told, ranks, world = results[rank]
        assert grad == [1.5, 1.5, 1.5]
        assert rows == [[i, i * 10] for i in range(5)]  # every rank gets all rows back, in order
        assert told == "from 0" and ranks == [0, 1] and world == World(rank, 2, rank)


def test_pretraining_runs_as_two_processes_and_rank_0_alone_writes_the_backbone(text_job, monkeypatch, capsys):
    root, table, bert = text_job
    texts = root / "unlabelled.txt"
    texts.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in table.read_text().splitlines()[1:]))
    common = ("--method", "simcse", "--model", f"hf:{bert}", "--epochs", "2", "--train-batch", "8", "--device", "cpu")
    code, _, err = run_cli(monkeypatch, capsys, "pretrain", texts, *common, "--out", root / "simcse-one")  # in-process
    assert code == 0, err
    result = _headstart("pretrain", str(texts), *common, "--out", "simcse-two", "--nproc", "2", cwd=root,
                        cache=root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run saved to") == 1  # rank 0 alone prints
    documents = {out: json.loads((root / out / "pretraining.json").read_text()) for out in ("simcse-one", "simcse-two")}
    curve = documents["simcse-two"]["curve"]
    assert len(curve) == 2 and all(np.isfinite(row["train_loss"]) for row in curve)
    one, two = (documents[out]["cost"]["samples_seen"] for out in ("simcse-one", "simcse-two"))
    assert one / 2 < two <= one  # every rank's share counted (each rank drops its last partial batch)
    assert sorted(p.name for p in root.iterdir() if "simcse-two" in p.name) == ["simcse-two"]  # no work folder left
    base = hs.extract_features(hs.build_backbone(f"hf:{bert}"), hs.TextTable(table), use_cache=False, device="cpu")
    tuned = hs.extract_features(hs.build_backbone(f"run:{root / 'simcse-two'}"), hs.TextTable(table), use_cache=False,
                                device="cpu")
    assert not np.allclose(base, tuned)  # both processes' training reached the saved weights
