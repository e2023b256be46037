"""Pre-training (issue 17): what continuing a backbone's pre-training on the target domain buys a linear probe,
against the off-the-shelf backbone, in one run.

- text: minilm continued on yelp.txt's sentences without their labels (`tsdae`, `simcse`); two probes on
  each backbone: trained on amazon (all of it), measured on yelp; trained on `--shots` yelp sentences per
  class, measured on the other yelp sentences (mean of `--draws` draws).
- images: efficientnet_lite0 continued with `simclr` on the grayscale/blurred/tinted copy of a flowers5
  slice that bench/domain_adaptation.py makes (`--images` per domain, its labels unused); probe on
  `--image-shots` shifted images per class, measured on the other shifted images (mean of `--draws` draws).
- transfer chain: `supervised` pre-training (fine-tuning) of minilm on amazon, then the yelp probes.
- cost: pre-training seconds per 1,000 samples seen, on this machine (`--device`).

    .venv/bin/python bench/pretrain.py --data ../shared/data [--parts text,chain,images] [--text-epochs 1]
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import headstart as hs
from headstart.backbones import build_backbone
from headstart.data import few_shot_indices
from headstart.pretraining import pretrain, probe_scores

from _common import emit, machine, parser, quiet
from domain_adaptation import shifted_copy, stratified


def few_shot_probe(backbone, data, shots: int, draws: int, cache: Path) -> float:
    """Mean accuracy of a probe trained on ``shots`` samples per class of ``data``, measured on the rest."""
    scores = []
    for seed in range(draws):
        train_idx = few_shot_indices(data.y, shots, seed)
        rest = sorted(set(range(len(data))) - set(train_idx))
        scores.append(probe_scores(backbone, data.subset(train_idx), data.subset(rest), seed=seed, cache_dir=cache)
                      ["accuracy"])
    return statistics.mean(scores)


def text_part(args, work: Path, cache: Path, methods: list[str]) -> list[dict]:
    amazon = hs.TextTable(args.data / "sentiment" / "amazon.txt")
    yelp = hs.TextTable(args.data / "sentiment" / "yelp.txt")
    rows = []
    backbones = {"minilm (off the shelf)": ("minilm", None)}
    for method in methods:
        if method == "supervised":  # the transfer chain: a labelled source of one's own first
            config = {"epochs": args.chain_epochs, "batch_size": 32, "patience": 0}
            run = pretrain(args.data / "sentiment" / "amazon.txt", work / method, method=method, model="minilm",
                           config=config, device=args.device, cache_dir=cache)
            backbones["minilm -> supervised on amazon"] = (run.backbone_name, run.document["cost"])
        else:
            config = {"epochs": args.text_epochs, "batch_size": 32, "lr": args.text_lr}
            run = pretrain(args.data / "sentiment" / "yelp.txt", work / method, method=method, model="minilm",
                           config=config, device=args.device, cache_dir=cache)
            backbones[f"minilm + {method} on yelp texts"] = (run.backbone_name, run.document["cost"])
    for label, (name, cost) in backbones.items():
        backbone = build_backbone(name)
        cross = probe_scores(backbone, amazon, yelp, cache_dir=cache)["accuracy"]
        few = few_shot_probe(backbone, yelp, args.shots, args.draws, cache)
        rows.append({"domain": "text", "backbone": label, "probe_a": cross, "probe_b": few, "cost": cost})
    return rows


def image_part(args, work: Path, cache: Path) -> list[dict]:
    flowers = hs.ImageFolder(args.data / "flowers5")
    _, target_half = flowers.split(test=0.5, seed=0)
    target = shifted_copy(stratified(target_half, args.images), work / "flowers5-shifted")
    config = {"batch_size": args.image_batch, "lr": args.image_lr, "val_fraction": 0.1}
    config.update({"steps": args.image_steps} if args.image_steps else {"epochs": args.image_epochs})
    run = pretrain(work / "flowers5-shifted", work / "simclr", method="simclr", model="efficientnet_lite0", config=config,
                   device=args.device, cache_dir=cache, workers=args.workers)
    rows = []
    for label, name, cost in (("efficientnet_lite0 (off the shelf)", "efficientnet_lite0", None),
                              ("efficientnet_lite0 + simclr on shifted images", run.backbone_name, run.document["cost"])):
        few = few_shot_probe(build_backbone(name), target, args.image_shots, args.draws, cache)
        rows.append({"domain": "images", "backbone": label, "probe_a": None, "probe_b": few, "cost": cost,
                     "curve": run.document["curve"] if cost else None})
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--parts", default="text,chain,images", help="comma-separated: text, chain, images")
    p.add_argument("--text-methods", default="tsdae,simcse")
    p.add_argument("--text-epochs", type=int, default=1)
    p.add_argument("--text-lr", type=float, default=3e-5)
    p.add_argument("--chain-epochs", type=int, default=2)
    p.add_argument("--shots", type=int, default=50, help="labelled yelp sentences per class of the few-shot probe")
    p.add_argument("--draws", type=int, default=5, help="few-shot draws averaged")
    p.add_argument("--images", type=int, default=600, help="flowers5 images of the shifted domain")
    p.add_argument("--image-shots", type=int, default=20)
    p.add_argument("--image-epochs", type=int, default=1)
    p.add_argument("--image-steps", type=int, default=0, help="simclr optimizer steps (0: --image-epochs)")
    p.add_argument("--image-batch", type=int, default=32)
    p.add_argument("--image-lr", type=float, default=1e-4)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work, cache = Path(folder), Path(folder) / "cache"
        methods = [m for m in args.text_methods.split(",") if m and "text" in parts]
        methods += ["supervised"] if "chain" in parts else []
        if methods:
            rows += text_part(args, work, cache, methods)
        if "images" in parts:
            rows += image_part(args, work, cache)
    table, notes = [], []
    base = {}
    for row in rows:
        if row["cost"] is None:
            base[row["domain"]] = row
        ref = base.get(row["domain"])
        gains = [("—" if row[k] is None or ref is None else f"{100 * (row[k] - ref[k]):+.1f}") for k in ("probe_a", "probe_b")]
        cost = row["cost"] or {}
        table.append([row["domain"], row["backbone"], "—" if row["probe_a"] is None else row["probe_a"], gains[0],
                      row["probe_b"], gains[1], cost.get("seconds_per_1000_samples", "—"), cost.get("seconds", "—")])
        if row.get("curve"):
            notes.append(f"{row['backbone']}: loss per epoch " + ", ".join(
                f"{r['train_loss']:.3f}/{r.get('val_loss', float('nan')):.3f}" for r in row["curve"]) + " (train/val)")
    notes.append(f"text probe A: trained on amazon (932), measured on yelp (954); probe B: {args.shots} yelp sentences "
                 f"per class, measured on the other yelp sentences, mean of {args.draws} draws. images probe B: "
                 f"{args.image_shots} shifted images per class, measured on the rest of the {args.images}, mean of "
                 f"{args.draws} draws. Goal: >= +2 points on one probe.")
    result = {"machine": machine(args.threads), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    emit(args.json, result, "pre-training: linear-probe accuracy before and after continuing pre-training",
         ["domain", "backbone", "probe A", "gain", "probe B", "gain", "s / 1000 samples", "pretrain s"], table, notes)


if __name__ == "__main__":
    main()
