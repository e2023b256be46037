"""Fit time with an empty feature cache against a second identical fit reading the cache.

Transfer('efficientnet_lite0').fit(train) on a stratified flowers5 subset, twice, with the same
fresh cache folder. Each timing holds everything the user waits for: building the backbone,
hashing the files, reading or computing features, fitting the head. Goal: first/second >= 10.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

import headstart as hs
from _common import emit, machine, parser, quiet

GOAL = 10.0


def timed_fit(train: hs.LabelledData, cache: str) -> tuple[float, hs.Transfer]:
    start = time.perf_counter()
    estimator = hs.Transfer("efficientnet_lite0", cache_dir=cache).fit(train)
    return time.perf_counter() - start, estimator


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800, help="size of the stratified flowers5 subset (default 800)")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    flowers = hs.ImageFolder(args.data / "flowers5")
    train = flowers.split(test=args.images / len(flowers), seed=0)[1]  # the held-out part: a stratified sample

    with tempfile.TemporaryDirectory() as cache:
        cold_s, cold = timed_fit(train, cache)
        warm_s, warm = timed_fit(train, cache)
    same_head = all(torch.equal(a, b) for a, b in zip(cold.head_.state_dict().values(), warm.head_.state_dict().values()))
    ratio = cold_s / warm_s
    fits = {"first (empty cache)": (cold_s, cold), "second (warm cache)": (warm_s, warm)}
    rows = [(name, f"{s:.2f}", f"{e.fit_info_['feature_seconds']:.2f}", f"{e.fit_info_['head_seconds']:.2f}")
            for name, (s, e) in fits.items()]
    result = {"benchmark": "cache_speedup", "machine": machine(args.threads), "images": len(train),
              "first_seconds": cold_s, "second_seconds": warm_s,
              "first_fit_info": {k: v for k, v in cold.fit_info_.items() if k != "search"},
              "second_fit_info": {k: v for k, v in warm.fit_info_.items() if k != "search"},
              "identical_heads": same_head, "ratio": ratio, "goal": GOAL, "passes": ratio >= GOAL}
    emit(args.json, result, f"Transfer('efficientnet_lite0').fit on {len(train)} flowers5 images, same cache folder twice",
         ("fit", "total s", "backbone+features s", "head s"), rows,
         [f"first/second: {ratio:.2f} (goal >= {GOAL:g}: {'pass' if ratio >= GOAL else 'FAIL'}); "
          f"identical heads: {'yes' if same_head else 'NO'}"])


if __name__ == "__main__":
    main()
