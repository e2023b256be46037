"""Fit time with an empty feature cache against a second identical fit reading the cache.

Transfer('efficientnet_lite0').fit(train) on a stratified flowers5 subset, twice, with the same
fresh cache folder. Each timing holds everything the user waits for: building the backbone,
hashing the files, reading or computing features, fitting the head. Goal: first/second >= 10.
"""

from __future__ import annotations

import tempfile
import time

import torch

import headstart as hs
from _common import PhaseClock, emit, machine, parser, quiet

GOAL = 10.0


def timed_fit(train: hs.LabelledData, cache: str) -> dict:
    clock = PhaseClock()
    estimator = hs.Transfer("efficientnet_lite0", cache_dir=cache, progress=clock).fit(train)
    total = time.perf_counter() - clock.start
    return {"seconds": total, "features_seconds": clock.features_done(),
            "head_seconds": total - clock.features_done(), "head": estimator.head_.state_dict()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800, help="size of the stratified flowers5 subset (default 800)")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    flowers = hs.ImageFolder(args.data / "flowers5")
    train = flowers.split(test=args.images / len(flowers), seed=0)[1]  # the held-out part: a stratified sample

    with tempfile.TemporaryDirectory() as cache:
        cold = timed_fit(train, cache)
        warm = timed_fit(train, cache)
    same_head = all(torch.equal(cold["head"][k], warm["head"][k]) for k in cold["head"])
    ratio = cold["seconds"] / warm["seconds"]
    fits = {"first (empty cache)": cold, "second (warm cache)": warm}
    rows = [(name, f"{f['seconds']:.2f}", f"{f['features_seconds']:.2f}", f"{f['head_seconds']:.2f}")
            for name, f in fits.items()]
    timings = {name.split()[0]: {k: v for k, v in f.items() if k != "head"} for name, f in fits.items()}
    result = {"benchmark": "cache_speedup", "machine": machine(args.threads), "images": len(train), **timings,
              "identical_heads": same_head, "ratio": ratio, "goal": GOAL, "passes": ratio >= GOAL}
    emit(args.json, result, f"Transfer('efficientnet_lite0').fit on {len(train)} flowers5 images, same cache folder twice",
         ("fit", "total s", "backbone+features s", "head s"), rows,
         [f"first/second: {ratio:.2f} (goal >= {GOAL:g}: {'pass' if ratio >= GOAL else 'FAIL'}); "
          f"identical heads: {'yes' if same_head else 'NO'}"])


if __name__ == "__main__":
    main()
