"""`--tta` (issue 18): test accuracy with and without test-time augmentation (each image and its mirror
image, probabilities averaged), side by side on the same fitted model, and what it costs in prediction time.

flowers5 slices (`--per-class` training images per class for each of `--slices`, `--test-per-class`
held-out test images, both drawn with the seed), efficientnet_lite0 `linear-probe` and `finetune`
(`--epochs`), for each of `--seeds`. One fit per row; its test split is predicted without, then with
TTA, with the feature cache off so both sides embed every image (the time ratio is the compute's; with
a warm cache a linear probe predicts from cached features either way).

    .venv/bin/python bench/tta.py --data ../shared/data [--slices 20,100] [--seeds 0,1,2] [--epochs 3]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch
from _common import class_slices, emit, machine, parser, quiet

import headstart as hs


def _scored(model: hs.Transfer, test, tta: bool) -> tuple[float, float]:
    """Test accuracy and prediction seconds, with or without TTA (no feature cache)."""
    model.set_params(tta=tta, use_cache=False)
    started = time.perf_counter()
    probabilities = model.predict_proba(test)
    return float((probabilities.argmax(1) == test.y).mean()), time.perf_counter() - started


def _row(data, strategy: str, per_class: int, seed: int, a, cache: str) -> dict:
    train, test = class_slices(data, per_class, a.test_per_class, seed)
    config = {"epochs": a.epochs} if strategy == "finetune" else None
    model = hs.Transfer("efficientnet_lite0", strategy, config=config, seed=seed, cache_dir=cache,
                        device="cpu").fit(train)
    (plain, plain_s), (tta, tta_s) = _scored(model, test, False), _scored(model, test, True)
    row = {"per_class": per_class, "strategy": strategy, "seed": seed, "test_images": len(test),
           "accuracy": plain, "accuracy_tta": tta, "predict_seconds": plain_s, "predict_seconds_tta": tta_s}
    print(row, file=sys.stderr, flush=True)
    return row


def _means(rows: list[dict]) -> list[list]:
    table = []
    for per_class, strategy in dict.fromkeys((r["per_class"], r["strategy"]) for r in rows):
        group = [r for r in rows if (r["per_class"], r["strategy"]) == (per_class, strategy)]
        mean = lambda key: statistics.mean(r[key] for r in group)  # noqa: E731
        spread = [r["accuracy_tta"] - r["accuracy"] for r in group]
        table.append([f"{per_class}/class {strategy} (mean of {len(group)})", mean("accuracy"), mean("accuracy_tta"),
                      mean("accuracy_tta") - mean("accuracy"), f"{min(spread):+.3f}..{max(spread):+.3f}",
                      mean("predict_seconds_tta") / mean("predict_seconds")])
    return table


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--slices", default="20,100", help="training images per class, comma-separated")
    p.add_argument("--test-per-class", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default="linear-probe,finetune")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    quiet()
    torch.set_num_threads(a.threads)
    data = hs.ImageFolder(a.data / "flowers5")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for per_class in map(int, a.slices.split(",")):
            for strategy in a.strategies.split(","):
                rows += [_row(data, strategy, per_class, seed, a, cache) for seed in map(int, a.seeds.split(","))]
    result = {"machine": machine(a.threads), "epochs": a.epochs, "rows": rows}
    table = [[f"{r['per_class']}/class {r['strategy']} seed {r['seed']}", r["accuracy"], r["accuracy_tta"],
              r["accuracy_tta"] - r["accuracy"], "", r["predict_seconds_tta"] / r["predict_seconds"]] for r in rows]
    emit(a.json, result, f"--tta on flowers5 slices ({a.test_per_class} test images per class), efficientnet_lite0, "
         f"finetune {a.epochs} epochs", ["fit", "accuracy", "with --tta", "gain", "gain range", "predict time ratio"],
         table + _means(rows))


if __name__ == "__main__":
    main()
