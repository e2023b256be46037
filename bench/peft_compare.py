"""Parameter-efficient vs full fine-tuning: lora and bitfit against finetune (issue 5).

amazon: sentiment/amazon.txt with minilm, stratified 80/20 (seed 0). flowers5: efficientnet_lite0
on a documented slice (fine-tuning at 224 px on 2 shared CPU cores costs minutes per epoch on
the full set): --per-class training images per class and a fixed --test-per-class test subset
per class, drawn with seed 0. Every strategy gets the same epochs and batch size; lora and
bitfit keep their own default learning rate unless --peft-lr is given. Peak memory is the
RSS growth of this process during each fit (see headstart/peak_memory.py).

    .venv/bin/python bench/peft_compare.py --data ../shared/data [--datasets amazon,flowers5] [--epochs 3]
"""

from __future__ import annotations

import tempfile

import headstart as hs
from headstart.comparison import compare_strategies

from _common import emit, machine, parser, quiet
from finetune_compare import few_shot

KEYS = ("strategy", "accuracy", "f1", "trainable_params", "trainable_fraction", "checkpoint_bytes",
        "peak_memory_bytes", "train_seconds")


def run_dataset(name: str, args) -> dict:
    if name == "amazon":
        data, model = hs.TextTable(args.data / "sentiment" / "amazon.txt"), "minilm"
        train, test = data.split(test=0.2, seed=0)
    else:
        data, model = hs.ImageFolder(args.data / "flowers5"), "efficientnet_lite0"
        train, test = few_shot(data, args.per_class, test_limit=args.test_per_class)
    budget = {"epochs": args.epochs, "batch_size": args.batch_size}
    own = {"lr": args.peft_lr} if args.peft_lr else {}
    with tempfile.TemporaryDirectory() as cache:
        rows = compare_strategies(train, test, args.strategies.split(","), model=model,
                                  finetune=hs.FinetuneConfig(**budget),
                                  configs={"lora": hs.LoraConfig(**budget, **own), "bitfit": hs.BitFitConfig(**budget, **own)},
                                  cache_dir=cache, device="cpu")
    full = next((r for r in rows if r["strategy"] == "finetune"), None)
    for row in rows:
        row["checkpoint_vs_full"] = row["checkpoint_bytes"] / full["checkpoint_bytes"] if full else None
        row["memory_vs_full"] = row["peak_memory_bytes"] / full["peak_memory_bytes"] if full else None
    return {"dataset": name, "model": model, "train": len(train), "test": len(test),
            "memory_method": rows[0]["memory_method"],
            "rows": [{k: r[k] for k in (*KEYS, "checkpoint_vs_full", "memory_vs_full")} for r in rows]}


def notes(result: dict) -> list[str]:
    rows = {r["strategy"]: r for r in result["rows"]}
    if "finetune" not in rows or "lora" not in rows:
        return []
    lora, full = rows["lora"], rows["finetune"]
    gap = 100 * (lora["accuracy"] - full["accuracy"])
    return [f"{result['dataset']}: lora - finetune = {gap:+.1f} accuracy points (goal >= -1.5), trains "
            f"{100 * lora['trainable_fraction']:.2f}% of the parameters (goal <= 5%), checkpoint "
            f"{100 * lora['checkpoint_vs_full']:.1f}% of the full model's (goal <= 10%)"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", default="amazon,flowers5")
    p.add_argument("--strategies", default="finetune,lora,bitfit")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--per-class", type=int, default=60, help="flowers5: training images per class")
    p.add_argument("--test-per-class", type=int, default=40, help="flowers5: test images per class")
    p.add_argument("--peft-lr", type=float, default=None, help="lr of lora and bitfit (default: their own)")
    args = p.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    results = [run_dataset(name, args) for name in args.datasets.split(",")]
    for i, result in enumerate(results):
        headers = [*KEYS, "checkpoint_vs_full", "memory_vs_full"]
        title = (f"{result['dataset']}: {result['model']}, {result['train']} train / {result['test']} test, "
                 f"{args.epochs} epochs, batch {args.batch_size}; peak memory = {result['memory_method']}")
        emit(args.json, {"machine": machine(args.threads), **result}, title, headers,
             [[r[k] for k in headers] for r in result["rows"]], notes(result))
        if i + 1 < len(results) and not args.json:
            print()


if __name__ == "__main__":
    main()
