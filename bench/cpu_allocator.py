"""Fine-tuning (or feature extraction) on the CPU with glibc's allocator keeping freed memory
(``headstart.allocator``) against glibc's defaults, side by side.

Each round runs the same job twice, each in a fresh process (the allocator's settings hold for a
whole process): efficientnet_lite0 fine-tuned for --epochs on --per-class flowers5 images per class
(224 px, batch 32, nothing cached: every step runs the network), or with --task extract its frozen
features of those images, once as headstart runs it and once with ``keep_freed_memory`` replaced by
a no-op. Reported per side: the median fit time
over --rounds alternating rounds, the process's CPU time in the kernel, and its peak resident memory.

    .venv/bin/python bench/cpu_allocator.py [--rounds 3] [--per-class 32] [--epochs 1] [--json]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from _common import emit, machine, parser

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import headstart as hs
import headstart.features, headstart.inference, headstart.training.loop
torch.set_num_threads({threads})
if not {kept}:
    for module in (headstart.features, headstart.inference, headstart.training.loop):
        module.keep_freed_memory = lambda: False
flowers = hs.ImageFolder({data!r})
rng = np.random.default_rng(0)
picked = np.concatenate([rng.choice(np.flatnonzero(flowers.y == c), {per_class}, replace=False)
                         for c in range(len(flowers.classes))])
data = flowers.subset(np.sort(picked))
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
if {task!r} == "finetune":
    hs.Transfer("efficientnet_lite0", "finetune", config={{"epochs": {epochs}, "patience": 0}},
                num_workers=0, use_cache=False, val_fraction=0.125).fit(data)
else:
    hs.extract_features(hs.build_backbone("efficientnet_lite0"), data, use_cache=False, batch_size=32, num_workers=0)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": time.perf_counter() - started, "system_seconds": after.ru_stime - before.ru_stime,
                  "peak_rss_gb": after.ru_maxrss / 1e6}}))
"""


def run(kept: bool, args) -> dict:
    code = CHILD.format(threads=args.threads, kept=kept, data=str(args.data / "flowers5"), per_class=args.per_class,
                        epochs=args.epochs, task=args.task)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides (default 3)")
    p.add_argument("--per-class", type=int, default=32, help="flowers5 images per class (default 32)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    p.add_argument("--task", choices=("finetune", "extract"), default="finetune",
                   help="fine-tune, or extract the frozen backbone's features (batch 32, no cache)")
    args = p.parse_args()
    sides = {"kept": [], "glibc defaults": []}
    for _ in range(args.rounds):
        sides["glibc defaults"].append(run(False, args))
        sides["kept"].append(run(True, args))
    rows, medians = [], {}
    for name, runs in sides.items():
        medians[name] = statistics.median(r["seconds"] for r in runs)
        rows.append((name, medians[name], statistics.median(r["system_seconds"] for r in runs),
                     max(r["peak_rss_gb"] for r in runs), ", ".join(f"{r['seconds']:.1f}" for r in runs)))
    ratio = medians["glibc defaults"] / medians["kept"]
    result = {"benchmark": "cpu_allocator", "machine": machine(args.threads), "task": args.task,
              "per_class": args.per_class, "epochs": args.epochs, "sides": sides, "speedup": ratio}
    what = (f"fine-tuning efficientnet_lite0 on {5 * args.per_class} flowers, {args.epochs} epoch(s)"
            if args.task == "finetune" else f"efficientnet_lite0 features of {5 * args.per_class} flowers")
    emit(args.json, result, f"{what}, median of {args.rounds} alternating rounds",
         ("allocator", "job s", "kernel s", "peak RSS GB", "rounds (s)"), rows,
         [f"time with glibc's defaults / with freed memory kept: {ratio:.2f}x"])


if __name__ == "__main__":
    main()
