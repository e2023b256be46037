"""Cold start: seconds from a fresh Python process to its first prediction, with the torch-free
runtime on an exported bundle against ``hs.load(run).predict`` on the run it came from.

Both sides predict the same image in a new interpreter (``python -c``), alternated for --rounds
rounds; the fastest of each counts. The run is a linear probe of efficientnet_lite0 on a small
flowers5 slice, fitted and exported once before timing.
"""

from __future__ import annotations

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


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds of both sides (default 3)")
    p.add_argument("--per-class", type=int, default=20, help="flowers5 images per class for the run (default 20)")
    args = p.parse_args()
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
                     "best": best, "ratio": full / runtime},
         f"Cold start to the first prediction, efficientnet_lite0 linear probe, fastest of {args.rounds}",
         ("side", "best s", "median s"), rows,
         [f"hs.load(run).predict / runtime: {full / runtime:.1f}x"])


if __name__ == "__main__":
    main()
