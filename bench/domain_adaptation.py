"""Domain adaptation: source-only against coral, adabn, dann and mmd on two domain pairs (issue 6).

- text: sentiment/amazon.txt (labelled source) -> sentiment/yelp.txt (target; its labels are used
  only to measure), minilm. adabn does not apply (no BatchNorm): its row gives the error.
- images: flowers5 split 50/50 (stratified, seed 0); the second half becomes the target after a
  shift this script makes (grayscale, Gaussian blur, warm colour cast); efficientnet_lite0.
  `--images N` per domain for every method; dann and mmd fine-tune on a `--finetune-images`
  slice of each domain for `--epochs` (224 px on a shared 2-core CPU is slow); every model is
  measured on the same N labelled target images (the transductive setting: the unlabelled
  target data is the data to be labelled).

Also the shift score (proxy A-distance, MMD) of each pair, and of two halves of the source.

    .venv/bin/python bench/domain_adaptation.py --data ../shared/data [--pair text|images|both]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import headstart as hs
from headstart.adaptation import measure_shift
from headstart.comparison import compare_adaptation
from headstart.errors import HeadstartError

from _common import emit, machine, parser, quiet


def shifted_copy(data: hs.LabelledData, folder: Path) -> hs.LabelledData:
    """Grayscale + blur + colour cast of every image, written as class folders."""
    from PIL import Image, ImageFilter

    for path, label in zip(data.items, data.labels):
        gray = Image.open(path).convert("L").filter(ImageFilter.GaussianBlur(2))
        g = np.asarray(gray, dtype=np.float32)
        rgb = np.stack([np.clip(g * 0.9 + 40, 0, 255), g * 0.8 + 10, g * 0.55], axis=-1).astype(np.uint8)
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / label / (Path(path).stem + ".png"))
    return hs.ImageFolder(folder)


def stratified(data: hs.LabelledData, n: int, seed: int = 0) -> hs.LabelledData:
    if n >= len(data):
        return data
    part, _ = data.split(test=1 - n / len(data), seed=seed)
    return part


def run_pair(name, source, target_labelled, model, cache, args) -> tuple[list[dict], dict]:
    target = hs.LabelledData(target_labelled.modality, target_labelled.items, None, source=target_labelled.source)
    options = dict(model=model, cache_dir=cache, seed=0)
    rows = []
    probe_methods = [m for m in args.methods.split(",") if m in ("coral", "adabn")]
    net_methods = [m for m in args.methods.split(",") if m in ("dann", "mmd")]
    for method in list(probe_methods):
        if method == "adabn" and source.modality == "text":
            try:
                hs.Transfer(model, adapt="adabn", cache_dir=cache).fit(source, target=target)
            except HeadstartError as exc:
                rows.append({"pair": name, "method": "adabn", "strategy": "—", "train": len(source), "accuracy": None,
                             "f1": None, "train_seconds": None, "note": str(exc).split(";")[0]})
            probe_methods.remove(method)
    if probe_methods:
        for row in compare_adaptation(source, target, probe_methods, evaluate_on=target_labelled, **options):
            rows.append({"pair": name, "train": len(source), **row})
    if net_methods:
        ft_source = stratified(source, args.finetune_images)
        ft_target = target.subset(np.random.default_rng(0).permutation(len(target))[:args.finetune_images])
        config = hs.FinetuneConfig(epochs=args.epochs, batch_size=32, patience=0)
        for row in compare_adaptation(ft_source, ft_target, net_methods, evaluate_on=target_labelled,
                                      finetune=config, **options):
            rows.append({"pair": name, "train": len(ft_source), **row})
    # the ceiling: a linear probe trained on labelled target data (half of it), measured on the other half
    target_train, target_test = target_labelled.split(test=0.5, seed=0)
    ceiling = hs.Transfer(model, cache_dir=cache).fit(target_train).evaluate(target_test)
    rows.append({"pair": name, "method": "target-trained", "strategy": "linear-probe", "train": len(target_train),
                 "accuracy": ceiling["accuracy"], "f1": ceiling["f1"], "train_seconds": None,
                 "note": "ceiling: labelled target data, measured on its other half"})
    halves = source.split(test=0.5, seed=1)
    shift = {"source_vs_target": measure_shift(model, source, target, cache_dir=cache).to_dict(),
             "source_half_vs_half": measure_shift(model, *halves, cache_dir=cache).to_dict()}
    return rows, shift


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pair", choices=["text", "images", "both"], default="both")
    p.add_argument("--methods", default="coral,adabn,dann,mmd", help="comma-separated; '' for shift and ceiling only")
    p.add_argument("--images", type=int, default=1000, help="images per domain (source labelled, target unlabelled)")
    p.add_argument("--finetune-images", type=int, default=300, help="source and target images dann/mmd train on")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of dann, mmd and their source-only")
    p.add_argument("--text-epochs", type=int, default=3)
    args = p.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    rows, shifts = [], {}
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"
        if args.pair in ("text", "both"):
            amazon = hs.TextTable(args.data / "sentiment" / "amazon.txt")
            yelp = hs.TextTable(args.data / "sentiment" / "yelp.txt")
            epochs = args.epochs
            args.epochs, args.finetune_images = args.text_epochs, len(amazon)
            pair_rows, shifts["amazon->yelp"] = run_pair("amazon->yelp", amazon, yelp, "minilm", cache, args)
            args.epochs = epochs
            rows += pair_rows
        if args.pair in ("images", "both"):
            finetune_images = args.finetune_images
            args.finetune_images = finetune_images if args.pair == "images" else p.get_default("finetune_images")
            flowers = hs.ImageFolder(args.data / "flowers5")
            source_half, target_half = flowers.split(test=0.5, seed=0)
            source, target_half = stratified(source_half, args.images), stratified(target_half, args.images)
            target = shifted_copy(target_half, Path(work) / "flowers5-shifted")
            pair_rows, shifts["flowers5->shifted"] = run_pair("flowers5->shifted", source, target, "efficientnet_lite0",
                                                               cache, args)
            rows += pair_rows
    keys = ("pair", "method", "strategy", "train", "accuracy", "f1", "train_seconds")
    table_rows, baseline, notes = [], {}, []
    for row in rows:
        if row["method"] == "source-only":
            baseline[(row["pair"], row["strategy"])] = row["accuracy"]
        base = baseline.get((row["pair"], row["strategy"]))
        gain = "—" if row["accuracy"] is None or base is None else f"{100 * (row['accuracy'] - base):+.1f}"
        table_rows.append([*("—" if row[k] is None else row[k] for k in keys), gain])
        if row.get("note"):
            notes.append(f"{row['pair']} {row['method']}: {row['note']}")
    for pair, shift in shifts.items():
        adapted = [r for r in rows if r["pair"] == pair and r["accuracy"] is not None
                   and r["method"] not in ("source-only", "target-trained") and (pair, r["strategy"]) in baseline]
        best = max(adapted, key=lambda r: r["accuracy"] - baseline[(pair, r["strategy"])], default=None)
        if best:
            notes.append(f"{pair}: best {best['method']} {100 * (best['accuracy'] - baseline[(pair, best['strategy'])]):+.1f} "
                         f"points over its source-only (goal >= +3)")
        for what, s in shift.items():
            notes.append(f"{pair} shift, {what}: proxy A-distance {s['proxy_a_distance']:.3f}, domain classifier "
                         f"accuracy {s['domain_accuracy']:.3f}, MMD² {s['mmd']:.4f} ({s['source_samples']} vs "
                         f"{s['target_samples']})")
    result = {"machine": machine(args.threads), "args": {k: str(v) for k, v in vars(args).items()}, "shift": shifts,
              "rows": [{k: r.get(k) for k in (*keys, "note")} for r in rows]}
    emit(args.json, result, "domain adaptation: target accuracy of source-only and adapted models",
         [*keys, "gain pts"], table_rows, notes)


if __name__ == "__main__":
    main()
