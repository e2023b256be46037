"""Cold start: seconds from a fresh Python process to its first prediction, with the torch-free
runtime on an exported bundle against ``hs.load(run).predict`` on the run it came from; and the
command line's own start: ``headstart --help``, ``headstart models``, ``headstart fit --help``.

Both sides predict the same image in a new interpreter (``python -c``), alternated for --rounds
rounds; the fastest of each counts. The run is a linear probe of efficientnet_lite0 on a small
flowers5 slice, fitted and exported once before timing.

The command line is timed first (``--cli``: only it): each command in a new ``python -m headstart``
(COLUMNS=80, output discarded), fastest of --rounds, and the import time of ``--help`` from
``python -X importtime`` (the sum of its top-level imports), with the heavy libraries it loaded.
``--src OLD/src`` times another tree beside this one, alternated, e.g. the commit before a change:
``git archive d69c2ba | tar -x -C /tmp/before``, then ``--src /tmp/before/src``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import headstart as hs
from headstart.export import export_bundle
from headstart.workflows import fit_run
from _common import emit, machine, parser, quiet

RUNTIME = "from headstart.runtime import Bundle; print(Bundle.load({bundle!r}).predict([{image!r}]))"
FULL = "import headstart as hs; print(hs.load({run!r}, device='cpu').predict(hs.ImageFiles([{image!r}])))"
CLI_COMMANDS = ("--help", "models", "fit --help")
HEAVY = ("torch", "timm", "transformers", "sklearn", "numpy")
SRC = Path(__file__).resolve().parents[1] / "src"


def _slice(data_dir: Path, root: Path, per_class: int) -> Path:
    """A slice of flowers5: copies of the first images of each class (links leading out of a data
    folder are not followed)."""
    flowers = hs.ImageFolder(data_dir / "flowers5")
    for name in flowers.classes:
        (root / name).mkdir(parents=True)
        paths = [p for p, label in zip(flowers.items, flowers.labels) if label == name][:per_class]
        for path in paths:
            shutil.copy(path, root / name / Path(path).name)
    return root


def _seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def _headstart(src: Path, args: list[str], *python_options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "80"}
    return subprocess.run([sys.executable, *python_options, "-m", "headstart", *args], env=env, check=True,
                          capture_output=True, text=True)


def _import_time(src: Path) -> tuple[float, list[str]]:
    """Seconds of imports of ``headstart --help`` (top-level entries of -X importtime) and the heavy
    libraries among them."""
    report = _headstart(src, ["--help"], "-X", "importtime").stderr
    entries = re.findall(r"^import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", report, flags=re.MULTILINE)
    total = sum(int(cumulative) for cumulative, indent, _ in entries if len(indent) == 1)
    loaded = {name for _, _, name in entries}
    return total / 1e6, [name for name in HEAVY if name in loaded]


def cli_start(trees: dict[str, Path], rounds: int) -> dict:
    """Wall seconds of each CLI command per tree (fastest and median of ``rounds``) and import times."""
    seconds = {tree: {command: [] for command in CLI_COMMANDS} for tree in trees}
    imports = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree, src in trees.items():
            for command in CLI_COMMANDS:
                start = time.perf_counter()
                _headstart(src, command.split())
                seconds[tree][command].append(time.perf_counter() - start)
            imports[tree].append(_import_time(src))
    return {"seconds": seconds, "import_seconds": {tree: min(t for t, _ in runs) for tree, runs in imports.items()},
            "heavy_imports": {tree: runs[0][1] for tree, runs in imports.items()}}


def _cli_rows(result: dict) -> list[tuple]:
    rows = []
    for tree, commands in result["seconds"].items():
        rows += [(f"{tree}: headstart {command}", f"{min(values):.2f}", f"{np.median(values):.2f}")
                 for command, values in commands.items()]
        heavy = ", ".join(result["heavy_imports"][tree]) or "none of " + "/".join(HEAVY)
        rows.append((f"{tree}: imports of --help ({heavy})", f"{result['import_seconds'][tree]:.2f}", ""))
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds of both sides (default 3)")
    p.add_argument("--per-class", type=int, default=20, help="flowers5 images per class for the run (default 20)")
    p.add_argument("--cli", action="store_true", help="time the command line's start only")
    p.add_argument("--src", type=Path, help="the src folder of another headstart tree to time the CLI of, beside this one")
    args = p.parse_args()
    trees = {"this tree": SRC, **({f"{args.src}": args.src.resolve()} if args.src else {})}
    cli = cli_start(trees, args.rounds)
    if args.cli:
        emit(args.json, {"benchmark": "cold_start", "machine": machine(args.threads), "cli": cli},
             f"Command-line start (COLUMNS=80), fastest and median of {args.rounds}", ("command", "best s", "median s"),
             _cli_rows(cli))
        return
    quiet()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folder = _slice(args.data, root / "flowers", args.per_class)
        fit_run(folder, root / "run", model="efficientnet_lite0", workers=0, cache_dir=root / "cache")
        export_bundle(root / "run", root / "bundle")
        image = str(next(folder.rglob("*.jpg")))
        codes = {"runtime (bundle, no torch)": RUNTIME.format(bundle=str(root / "bundle"), image=image),
                 "hs.load(run).predict": FULL.format(run=str(root / "run"), image=image)}
        times = {name: [] for name in codes}
        for _ in range(args.rounds):
            for name, code in codes.items():
                times[name].append(_seconds(code))
    best = {name: min(values) for name, values in times.items()}
    runtime, full = best["runtime (bundle, no torch)"], best["hs.load(run).predict"]
    rows = [(name, f"{best[name]:.2f}", f"{np.median(times[name]):.2f}") for name in times]
    emit(args.json, {"benchmark": "cold_start", "machine": machine(args.threads), "seconds": times,
                     "best": best, "ratio": full / runtime, "cli": cli},
         f"Cold start to the first prediction, efficientnet_lite0 linear probe, fastest of {args.rounds}; the CLI's "
         "start (COLUMNS=80)", ("side", "best s", "median s"), rows + _cli_rows(cli),
         [f"hs.load(run).predict / runtime: {full / runtime:.1f}x"])


if __name__ == "__main__":
    main()
