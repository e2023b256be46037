"""Distributed scaling (issue 14): the same job as 1 process and as N processes, side by side.

Every side runs the real command (`headstart fit` / `headstart rank`) with OMP_NUM_THREADS=1 and
`--workers 0`, so a process is one thread; N processes use `--nproc N` (torch.distributed's
elastic launcher, gloo on CPU). Reported:

- fine-tuning: mean epoch time (history.json's seconds: training + validation, epochs 2..E; the
  fastest of `--rounds` alternating rounds) of 1 process against N processes with the same global
  batch; the speed-up and its efficiency per process (speed-up / N). Goal on 2 processes: >= 1.7x.
- extraction: wall time of `rank` on a cold cache minus the same command on the warm cache
  (start-up and scoring cancel out), 1 process against N. Goal on 2 processes: >= 1.8x.
- overhead: 1 process under torchrun (`python -m torch.distributed.run --nproc-per-node 1`)
  against the plain command, epoch time and wall time. Goal <= 1.05x.
- with `--device cuda`, the same fine-tuning on one GPU (nccl needs a GPU per process, so one
  GPU runs one process) for the per-process throughput the README's large-run estimate uses.

    .venv/bin/python bench/distributed_scaling.py [--per-class 40] [--epochs 3] [--procs 2]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine, parser

EPOCHS_SKIPPED = 1  # the first epoch also pays for warm-up (allocator, first decodes)


def _slice(source: Path, per_class: int, into: Path) -> Path:
    """The first ``per_class`` images of each class, copied (a slice, the same every run)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (into / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_class]:
            shutil.copy(path, into / folder.name / path.name)
    return into


def _run(args: list[str], cwd: Path, cache: Path, launcher: list[str] | None = None) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADSTART_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    command = [*(launcher or [sys.executable]), "-m", "headstart", *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _epoch_seconds(run: Path) -> float:
    rows = json.loads((run / "history.json").read_text())
    return statistics.mean(row["seconds"] for row in rows[EPOCHS_SKIPPED:])


def finetune(data: Path, work: Path, epochs: int, procs: int, device: str, batch: int, workers: int,
             rounds: int) -> dict:
    common = ["fit", str(data), "--strategy", "finetune", "--epochs", str(epochs), "--patience", "0",
              "--train-batch", str(batch), "--workers", str(workers), "--device", device]
    cache = work / "cache-ft"
    times = {}
    sides = {"1 process": ([], None), f"{procs} processes": (["--nproc", str(procs)], None),
             "1 process under torchrun": ([], [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1"])}
    if device == "cuda":
        sides = {"1 process": ([], None)}
    for round_ in range(rounds):  # sides alternate; each keeps its fastest round (other load only slows)
        for name, (extra, launcher) in sides.items():
            out = work / f"run-{round_}-{len(times)}"
            wall = _run([*common, *extra, "--out", str(out)], work, cache, launcher)
            seen = {"epoch_seconds": _epoch_seconds(out), "wall_seconds": wall}
            times[name] = {k: min(v, times.get(name, seen)[k]) for k, v in seen.items()}
            shutil.rmtree(out)
    return times


def extraction(data: Path, work: Path, procs: int, device: str) -> dict:
    times = {}
    for name, extra in {"1 process": [], f"{procs} processes": ["--nproc", str(procs)]}.items():
        cache = work / f"cache-rank-{len(times)}"
        command = ["rank", str(data), "--models", "efficientnet_lite0", "--workers", "0", "--device", device, *extra]
        cold = _run(command, work, cache)
        warm = _run(command, work, cache)
        times[name] = {"cold_seconds": cold, "warm_seconds": warm, "extraction_seconds": cold - warm}
    return times


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=40, help="images per class of the flowers5 slice")
    p.add_argument("--extract-per-class", type=int, default=120, help="images per class for the extraction side")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the fine-tuning sides; fastest kept")
    p.add_argument("--batch", type=int, default=32, help="global training batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="image-decoding workers per process (0: one thread each)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hs-scaling-"))
    try:
        train_slice = _slice(a.data / "flowers5", a.per_class, work / "slice")
        extract_slice = _slice(a.data / "flowers5", a.extract_per_class, work / "extract-slice")
        ft = finetune(train_slice, work, a.epochs, a.procs, a.device, a.batch, a.workers, a.rounds)
        ex = extraction(extract_slice, work, a.procs, a.device) if a.device == "cpu" else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    many = f"{a.procs} processes"
    rows, result = [], {"machine": machine(1), "device": a.device, "finetune": ft, "extraction": ex,
                        "images": {"finetune": a.per_class * 5, "extraction": a.extract_per_class * 5}}
    one = ft["1 process"]["epoch_seconds"]
    rows.append(["finetune epoch, 1 process", one, "", ""])
    if many in ft:
        speedup = one / ft[many]["epoch_seconds"]
        rows.append([f"finetune epoch, {many}", ft[many]["epoch_seconds"], speedup, speedup / a.procs])
        under = ft["1 process under torchrun"]
        rows.append(["finetune epoch, 1 process under torchrun", under["epoch_seconds"],
                     under["epoch_seconds"] / one, ""])
        rows.append(["finetune wall, under torchrun / plain", under["wall_seconds"],
                     under["wall_seconds"] / ft["1 process"]["wall_seconds"], ""])
        result.update(finetune_speedup=speedup, overhead_epoch=under["epoch_seconds"] / one)
    if ex:
        speedup = ex["1 process"]["extraction_seconds"] / ex[many]["extraction_seconds"]
        rows.append(["extraction, 1 process", ex["1 process"]["extraction_seconds"], "", ""])
        rows.append([f"extraction, {many}", ex[many]["extraction_seconds"], speedup, speedup / a.procs])
        result["extraction_speedup"] = speedup
    emit(a.json, result, f"distributed scaling on {a.device}: flowers5 slices, OMP_NUM_THREADS=1 per process",
         ["side", "seconds", "ratio", "efficiency/process"], rows,
         [f"fine-tuning: efficientnet_lite0, {a.per_class * 5} images, global batch {a.batch}, {a.workers} decoding "
          f"workers per process, mean of epochs {EPOCHS_SKIPPED + 1}..{a.epochs}, fastest of {a.rounds} alternating rounds"
          + (f"; extraction: {a.extract_per_class * 5} images, cold minus warm cache" if ex else ""),
          f"images/s per process (fine-tuning, 1 process): {a.per_class * 5 * 0.85 * 0.8 / one:.1f} "
          "(train images of the split / epoch time, validation included)"])


if __name__ == "__main__":
    main()
