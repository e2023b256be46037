"""Optuna search (20 trials, per-epoch median pruning) against the default configuration (issue 7).

efficientnet_lite0 fine-tuned on a documented flowers5 slice, so the whole run fits in about
30 minutes on 2 CPU cores at 224 px: per class, --train-per-class images to fit, --val-per-class
to score trials, --test-per-class held out (seed 0, disjoint). Trials search the default space
with epochs in [2, --max-epochs]; the default configuration is FinetuneConfig() with
epochs = --max-epochs (the same budget). Both final models train on the same fit/val split
and are scored on the held-out test slice. Epochs saved = 1 - epochs run / epochs the same
trials would have run unpruned (their configured epochs: early stopping with patience 3
cannot stop a run of <= 4 epochs).

    .venv/bin/python bench/tune_search.py --data ../shared/data [--trials 20] [--max-epochs 4] [--json]
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

import headstart as hs
from headstart.tuning import TuneSettings, tune

from _common import emit, machine, parser, quiet


def slice_per_class(data, counts: tuple[int, ...], seed: int = 0):
    """Disjoint stratified parts with counts[i] samples of every class in part i."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in counts]
    for c in range(len(data.classes)):
        members, start = rng.permutation(np.flatnonzero(data.y == c)), 0
        for part, count in zip(parts, counts):
            part.append(members[start:start + count])
            start += count
    return [data.subset(np.sort(np.concatenate(p))) for p in parts]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=24)
    p.add_argument("--val-per-class", type=int, default=16)
    p.add_argument("--test-per-class", type=int, default=40)
    p.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    p.add_argument("--storage", default=None, help="Optuna storage URL, to watch the trials from another shell")
    args = p.parse_args()
    quiet()
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    torch.set_num_threads(args.threads)
    data = hs.ImageFolder(args.data / "flowers5")
    pool, test = slice_per_class(data, (args.train_per_class + args.val_per_class, args.test_per_class))
    val_fraction = args.val_per_class / (args.train_per_class + args.val_per_class)
    common = dict(num_workers=0, seed=0, val_fraction=val_fraction)
    settings = TuneSettings(trials=args.trials, pruner=args.pruner, seed=0, val_fraction=val_fraction,
                            storage=args.storage, study=f"bench-{time.time():.0f}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        result = tune(pool, "finetune", model="efficientnet_lite0", settings=settings,
                      space={"epochs": {"low": 2, "high": args.max_epochs}, "batch_size": 16},
                      transfer_options=dict(num_workers=0, cache_dir=cache))
        search_seconds = time.perf_counter() - started
        rows = []
        for name, config in (("default", hs.FinetuneConfig(epochs=args.max_epochs, batch_size=16)),
                             ("tuned", result.best_config)):
            begun = time.perf_counter()
            model = hs.Transfer("efficientnet_lite0", "finetune", config=config, cache_dir=cache, **common).fit(pool)
            metrics = model.evaluate(test)
            best_val = max(row["val_f1"] for row in model.history_)
            rows.append([name, metrics["accuracy"], metrics["f1"], best_val, len(model.history_),
                         round(time.perf_counter() - begun, 1)])
    summary = result.summary()
    epochs = summary["epochs"]
    states = [t["state"] for t in result.trials]
    result_json = {
        "machine": machine(args.threads), "train": len(pool) - args.val_per_class * len(data.classes),
        "val": args.val_per_class * len(data.classes), "test": len(test), "trials": len(result.trials),
        "pruned": states.count("PRUNED"), "complete": states.count("COMPLETE"), "epochs": epochs,
        "search_seconds": round(search_seconds, 1), "best_trial": result.best_trial,
        "best_params": result.study.best_trial.params, "importances": result.importances,
        "rows": [dict(zip(("config", "test_accuracy", "test_f1", "val_f1", "epochs_run", "seconds"), r)) for r in rows],
    }
    gain = rows[1][1] - rows[0][1]
    notes = [
        f"trials: {len(result.trials)} ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned), "
        f"search {search_seconds / 60:.1f} min",
        f"epochs run {epochs['run']} of {epochs['unpruned']} unpruned: pruning saved {100 * epochs['saved_fraction']:.1f}% "
        "(goal >= 30%)",
        f"tuned - default test accuracy: {100 * gain:+.1f} points (goal: not worse)",
        f"best trial #{result.best_trial}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in result.study.best_trial.params.items()),
        "importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()),
    ]
    emit(args.json, result_json, f"tune finetune efficientnet_lite0 on flowers5 slice: {result_json['train']} fit / "
         f"{result_json['val']} val / {len(test)} test, epochs 2..{args.max_epochs}",
         ["config", "test acc", "test F1", "val F1", "epochs", "train s"], rows, notes)


if __name__ == "__main__":
    main()
