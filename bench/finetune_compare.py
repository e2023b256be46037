"""Before vs after transfer: every strategy on one split and budget (issue: fine-tuning engine).

Regimes: few-shot flowers5 (N training images per class, the rest for test), full flowers5
(stratified 80/20, seed 0), and sentiment/amazon.txt with minilm (80/20).

    .venv/bin/python bench/finetune_compare.py --regime few-shot [--per-class 20] [--epochs 5] [--json]
    .venv/bin/python bench/finetune_compare.py --regime full --epochs 3
    .venv/bin/python bench/finetune_compare.py --regime text --epochs 4
"""

from __future__ import annotations

import tempfile

import numpy as np

import headstart as hs
from headstart.comparison import compare_strategies

from _common import emit, machine, parser, quiet


def few_shot(data, per_class: int, seed: int = 0, test_limit: int | None = None):
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(len(data.classes)):
        members = rng.permutation(np.flatnonzero(data.y == c))
        train.append(members[:per_class])
        test.append(members[per_class:] if test_limit is None else members[per_class:per_class + test_limit])
    return data.subset(np.sort(np.concatenate(train))), data.subset(np.sort(np.concatenate(test)))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--regime", choices=["few-shot", "full", "text"], default="few-shot")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--test-per-class", type=int, default=None, help="cap test images per class (few-shot)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--strategies", default="scratch,linear-probe,finetune,lp-ft")
    args = p.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    if args.regime == "text":
        data, model = hs.TextTable(args.data / "sentiment" / "amazon.txt"), "minilm"
        train, test = data.split(test=0.2, seed=0)
    else:
        data, model = hs.ImageFolder(args.data / "flowers5"), "efficientnet_lite0"
        train, test = (few_shot(data, args.per_class, test_limit=args.test_per_class) if args.regime == "few-shot"
                       else data.split(test=0.2, seed=0))
    config = hs.FinetuneConfig(epochs=args.epochs, batch_size=16 if args.regime == "few-shot" else 32)
    with tempfile.TemporaryDirectory() as cache:
        rows = compare_strategies(train, test, args.strategies.split(","), model=model, finetune=config, cache_dir=cache)
    keys = ("strategy", "accuracy", "f1", "precision", "recall", "trainable_params", "train_seconds")
    result = {"machine": machine(args.threads), "regime": args.regime, "model": model, "train": len(train),
              "test": len(test), "epochs": args.epochs, "rows": [{k: r[k] for k in keys} for r in rows]}
    best = max(rows, key=lambda r: r["accuracy"])
    scratch = next((r for r in rows if r["strategy"] == "scratch"), None)
    notes = [f"best: {best['strategy']} {best['accuracy']:.4f}"]
    if scratch:
        notes.append(f"transfer gain over scratch: {100 * (best['accuracy'] - scratch['accuracy']):.1f} points")
    emit(args.json, result, f"{args.regime}: {model}, {len(train)} train / {len(test)} test, {args.epochs} epochs",
         list(keys), [[r[k] for k in keys] for r in rows], notes)


if __name__ == "__main__":
    main()
