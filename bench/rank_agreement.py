"""Do transferability scores agree with the accuracy a candidate actually reaches?

For each data set, every available backbone and its layer candidates are scored on the
training split (features cached), and each candidate's linear probe is trained on the same
split and tested on held-out data. Kendall's tau between each score and that accuracy says
how far the ranking can be trusted. Also measures the cost of ranking every candidate
(features cached) against fine-tuning the best one.

    .venv/bin/python bench/rank_agreement.py --data ../shared/data [--images 1500] [--json]
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from scipy.stats import kendalltau

import headstart as hs
from headstart.backbones import build_backbone
from headstart.backbones.layers import layer_candidates, tap_layers
from headstart.features import extract_features
from headstart.heads import fit_linear_probe
from headstart.ranking import rank

from _common import emit, machine, parser, quiet

SCORES = ("logme", "leep", "nce", "hscore", "knn_accuracy")


def probe_accuracy(x_train, y_train, x_test, y_test, n_classes, seed=0) -> float:
    """Linear-probe test accuracy, with C chosen on a stratified validation share of train."""
    from headstart.data import stratified_split

    fit_idx, val_idx = stratified_split(y_train, [0.15], seed)
    head = fit_linear_probe(x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx], n_classes).head
    with torch.inference_mode():
        return float((head(torch.as_tensor(x_test)).argmax(1).numpy() == y_test).mean())


def candidates_accuracy(models, train, test, cache) -> dict[tuple[str, str], float]:
    """Linear-probe accuracy of every (model, layer) candidate."""
    accuracy = {}
    for name in models:
        backbone = build_backbone(name)
        tapped, columns = tap_layers(backbone, layer_candidates(backbone))
        x_train = extract_features(tapped, train, cache_dir=cache)
        x_test = extract_features(tapped, test, cache_dir=cache)
        for layer, cols in columns:
            accuracy[(name, layer)] = probe_accuracy(x_train[:, cols], train.y, x_test[:, cols], test.y, len(train.classes))
    return accuracy


def agreement(rows, accuracy) -> dict[str, float | None]:
    taus = {}
    for score in SCORES:
        pairs = [(getattr(r, score), accuracy[(r.model, r.layer)]) for r in rows if getattr(r, score) is not None]
        taus[score] = float(kendalltau(*zip(*pairs)).statistic) if len(pairs) >= 3 else None
    return taus


def subset(data, per_class_total: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(data.y == c))[:per_class_total] for c in range(len(data.classes))]
    return data.subset(np.sort(np.concatenate(keep)))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1500, help="flowers5 images used (stratified subset)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="epochs of the fine-tuning cost reference")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    flowers = hs.ImageFolder(args.data / "flowers5")
    sets = {
        "flowers5": (subset(flowers, args.images // len(flowers.classes)),
                     ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]),
        "amazon": (hs.TextTable(args.data / "sentiment" / "amazon.txt"), ["minilm"]),
        "sms_spam": (hs.TextTable(args.data / "sms_spam" / "SMSSpamCollection.tsv"), ["minilm"]),
    }
    result, table_rows, notes = {"machine": machine(args.threads), "datasets": {}}, [], []
    with tempfile.TemporaryDirectory() as cache:
        for name, (data, models) in sets.items():
            train, test = data.split(test=0.2, seed=0)
            accuracy = candidates_accuracy(models, train, test, cache)  # also fills the feature cache
            started = time.perf_counter()
            rows = rank(models, train, layers=True, cache_dir=cache)
            rank_seconds = time.perf_counter() - started
            taus = agreement(rows, accuracy)
            best = max(taus, key=lambda k: -2 if taus[k] is None else taus[k])
            result["datasets"][name] = {
                "candidates": [{**r.to_dict(), "probe_accuracy": accuracy[(r.model, r.layer)]} for r in rows],
                "kendall_tau": taus, "best_score": best, "rank_seconds_cached": rank_seconds}
            table_rows.append([name, len(rows), *[taus[s] if taus[s] is not None else "-" for s in SCORES],
                               best, rank_seconds])
            if name == "flowers5":
                best_model = rows[0].model
                started = time.perf_counter()
                hs.Transfer(best_model, "finetune", cache_dir=cache,
                            config=hs.FinetuneConfig(epochs=args.finetune_epochs, patience=0)).fit(train)
                finetune_seconds = time.perf_counter() - started
                result["cost"] = {"rank_seconds_cached": rank_seconds, "finetune_seconds": finetune_seconds,
                                  "finetune_model": best_model, "finetune_epochs": args.finetune_epochs,
                                  "ratio": rank_seconds / finetune_seconds}
    cost = result["cost"]
    notes.append(f"cost on flowers5 ({args.images} images): ranking {len(result['datasets']['flowers5']['candidates'])} "
                 f"candidates with cached features {cost['rank_seconds_cached']:.2f}s vs fine-tuning {cost['finetune_model']} "
                 f"for {cost['finetune_epochs']} epochs {cost['finetune_seconds']:.1f}s: ratio {cost['ratio']:.4f} (goal <= 0.05)")
    notes.append("tau is against linear-probe test accuracy (goal: LogME tau >= 0.6 on flowers5)")
    emit(args.json, result, "Kendall tau between each score and linear-probe accuracy",
         ["data set", "candidates", *SCORES, "best", "rank s"], table_rows, notes)


if __name__ == "__main__":
    main()
