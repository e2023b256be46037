"""Peak memory of feature extraction (use_cache=False) on 1,000 versus 4,000 flowers5 images.

Each size runs in a fresh subprocess. A thread samples the resident memory of that process
and its DataLoader workers together (psutil when installed, else /proc) every 20 ms; the
kernel's ru_maxrss of the process and of its largest child is reported too.
Goal: peak(4000) / peak(1000) <= 1.2. The returned N x 1280 float32 array grows legitimately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

GOAL = 1.2
MIB = 1 << 20

try:
    import psutil
except ImportError:
    psutil = None


def tree_rss(pid: int) -> int:
    """Resident bytes of a process plus all its descendants."""
    if psutil is not None:
        root = psutil.Process(pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (OSError, StopIteration):  # the process ended meanwhile
            pass
    return total


class PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss(os.getpid()))
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def child(data_dir: Path, n: int, threads: int) -> None:
    """One measurement: set up, then extract features of n images while sampling."""
    import numpy as np
    import torch

    import headstart as hs
    from headstart.features import extract_features

    torch.set_num_threads(threads)
    flowers = hs.ImageFolder(data_dir / "flowers5")
    data = flowers.subset(np.sort(np.random.default_rng(0).permutation(len(flowers))[:n]))
    backbone = hs.build_backbone("efficientnet_lite0")
    workers = min(4, max(1, (os.cpu_count() or 2) // 2))  # Transfer's default
    before = tree_rss(os.getpid())
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    features = extract_features(backbone, data, use_cache=False, num_workers=workers)
    seconds = time.perf_counter() - start
    peak = max(sampler.stop(), tree_rss(os.getpid()))
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({"images": len(data), "workers": workers, "seconds": seconds, "rss_before": before,
                      "peak_tree_rss": peak, "features_bytes": features.nbytes,
                      "maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
                      "maxrss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
                      "sampler": "psutil" if psutil else "/proc"}))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import emit, machine, parser

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,4000", help="image counts to compare, small then large")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: one measurement
    args = p.parse_args()
    if args.child:
        child(args.data, args.child, args.threads)
        return
    runs = []
    for n in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--data", str(args.data), "--threads", str(args.threads), "--child", str(n)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"measurement of {n} images failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    small, large = runs[0], runs[-1]
    peak_ratio = large["peak_tree_rss"] / small["peak_tree_rss"]
    kernel_ratio = ((large["maxrss_self"] + large["maxrss_children"])
                    / (small["maxrss_self"] + small["maxrss_children"]))
    minus_array = ((large["peak_tree_rss"] - large["features_bytes"])
                   / (small["peak_tree_rss"] - small["features_bytes"]))
    rows = [(r["images"], r["workers"], f"{r['seconds']:.1f}", f"{r['rss_before'] / MIB:.0f}",
             f"{r['peak_tree_rss'] / MIB:.0f}", f"{(r['peak_tree_rss'] - r['rss_before']) / MIB:.0f}",
             f"{r['maxrss_self'] / MIB:.0f}", f"{r['maxrss_children'] / MIB:.0f}", f"{r['features_bytes'] / MIB:.1f}")
            for r in runs]
    result = {"benchmark": "extraction_memory", "machine": machine(args.threads), "runs": runs,
              "ratio": peak_ratio, "ratio_ru_maxrss": kernel_ratio, "ratio_without_features_array": minus_array,
              "goal": GOAL, "passes": peak_ratio <= GOAL}
    emit(args.json, result, "Peak memory of extract_features (use_cache=False), one fresh process per size",
         ("images", "workers", "seconds", "RSS before MiB", "peak tree RSS MiB", "growth MiB",
          "ru_maxrss self MiB", "ru_maxrss children MiB", "features MiB"), rows,
         [f"peak ratio {large['images']}/{small['images']}: {peak_ratio:.3f} (goal <= {GOAL}: "
          f"{'pass' if peak_ratio <= GOAL else 'FAIL'}); from ru_maxrss self+children: {kernel_ratio:.3f}; "
          f"without the returned features array: {minus_array:.3f}",
          f"tree RSS sums process and workers (shared pages counted in each); sampled with {runs[0]['sampler']}"])


if __name__ == "__main__":
    main()
