"""Linear-probe accuracy and cold-cache fit time: EfficientNet-Lite on flowers5, MiniLM on amazon.txt.

Stratified 80/20 split, seed 0; each model fits with a fresh, empty feature cache.
Goal: test accuracy >= 0.80 on both.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import headstart as hs
from _common import PhaseClock, emit, machine, parser, quiet

GOAL = 0.80


def probe(task: str, model: str, source: Path) -> dict[str, Any]:
    data = hs.ImageFolder(source) if source.is_dir() else hs.TextTable(source)
    train, test = data.split(test=0.2, seed=0)
    with tempfile.TemporaryDirectory() as cache:
        clock = PhaseClock()
        estimator = hs.Transfer(model, cache_dir=cache, progress=clock).fit(train)
        fitted, features_s = time.perf_counter(), clock.features_done()  # before evaluate reports too
        metrics = estimator.evaluate(test)
        evaluated = time.perf_counter()
    return {"task": task, "model": model, "train": len(train), "test": len(test),
            "fit_seconds": fitted - clock.start, "features_seconds": features_s,
            "head_seconds": fitted - clock.start - features_s, "evaluate_seconds": evaluated - fitted,
            "accuracy": metrics["accuracy"], "macro_f1": metrics["f1"], "goal_accuracy": GOAL,
            "ratio_to_goal": metrics["accuracy"] / GOAL, "passes": metrics["accuracy"] >= GOAL,
            "selected": estimator.fit_info_.get("selected")}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet_lite0",
                   help="comma-separated image backbones for flowers5 (e.g. efficientnet_lite0,efficientnet_lite1)")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    runs = [("flowers5", name.strip(), args.data / "flowers5") for name in args.models.split(",") if name.strip()]
    runs.append(("amazon", "minilm", args.data / "sentiment" / "amazon.txt"))
    results = [probe(task, model, source) for task, model, source in runs]
    rows = [(r["task"], r["model"], f"{r['train']}/{r['test']}", f"{r['fit_seconds']:.1f}",
             f"{r['features_seconds']:.1f}", f"{r['head_seconds']:.1f}",
             f"{r['evaluate_seconds']:.1f}", f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}",
             f">= {GOAL}", f"{r['ratio_to_goal']:.3f}", "yes" if r["passes"] else "NO") for r in results]
    emit(args.json, {"benchmark": "linear_probe", "machine": machine(args.threads), "results": results},
         "Linear probe, stratified 80/20 split (seed 0), cold feature cache",
         ("task", "model", "train/test", "fit s", "of which features s", "head s", "eval s", "accuracy", "macro F1", "goal", "acc/goal", "pass"),
         rows)


if __name__ == "__main__":
    main()
