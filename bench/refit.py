"""`--refit` (issue 18): a fine-tuned model trained again on train + validation with the chosen
epoch count, against the same fit without refit, side by side on the same splits.

A flowers5 slice (`--per-class` training images per class, `--test-per-class` held-out test images)
where the 15 % validation share matters; efficientnet_lite0 `finetune`, the same config and seed on
both sides, for each of `--seeds`. Reports test accuracy of each side, their mean and the gain.

    .venv/bin/python bench/refit.py --data ../shared/data [--per-class 20] [--seeds 0,1,2]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

import headstart as hs
from _common import class_slices, emit, machine, parser


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--test-per-class", type=int, default=40)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = hs.ImageFolder(a.data / "flowers5")
    rows, result = [], {"machine": None, "seeds": {}}
    with tempfile.TemporaryDirectory() as cache:
        for seed in map(int, a.seeds.split(",")):
            train, test = class_slices(data, a.per_class, a.test_per_class, seed)
            scores = {}
            for refit in (False, True):
                started = time.perf_counter()
                model = hs.Transfer("efficientnet_lite0", "finetune", config={"epochs": a.epochs}, seed=seed,
                                    cache_dir=cache, device="cpu", refit=refit).fit(train)
                scores[refit] = {"accuracy": model.evaluate(test)["accuracy"],
                                 "seconds": time.perf_counter() - started,
                                 "epochs": model.fit_info_.get("refit", {}).get("epochs")}
            result["seeds"][seed] = scores
            rows.append([f"seed {seed}", scores[False]["accuracy"], scores[True]["accuracy"],
                         scores[True]["accuracy"] - scores[False]["accuracy"], scores[True]["epochs"]])
    means = [statistics.mean(r[i] for r in rows) for i in (1, 2)]
    rows.append(["mean", means[0], means[1], means[1] - means[0], ""])
    result.update(machine=machine(a.threads), mean_without=means[0], mean_with=means[1])
    emit(a.json, result, f"--refit on flowers5 slices: {a.per_class} train + {a.test_per_class} test images per "
         f"class, efficientnet_lite0 finetune, {a.epochs} epochs", ["split", "without", "with --refit", "gain",
                                                                    "refit epochs"], rows)


if __name__ == "__main__":
    main()
