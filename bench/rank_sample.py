"""How large a stratified sample does ranking need before its answer stops changing?

`rank` embeds every sample with every candidate, and that embedding is nearly all of its cost
(a cold `rank flowers5`: 836 s). LogME is an average evidence per sample, so it should settle
long before thousands of samples. For each data set this scores every candidate (each
backbone's final features and, with their layer candidates, earlier layers) on stratified
samples of the training split of several sizes and seeds, and compares each sample's LogME
ranking with
  - the linear-probe test accuracy of each candidate, trained on the whole training split
    (Kendall tau, as bench/rank_agreement.py; the number `rank` is trusted for),
  - the LogME ranking on the whole training split (tau, and whether the winner is the same),
  - the accuracy given away by fitting the sample's winner instead of the best candidate (regret),
with the time of each: scoring measured, embedding cold estimated from each backbone's measured
per-sample cost (embedding the samples is what a cold `rank` spends its time on).

Features come from the feature cache (the default HEADSTART cache unless --cache-dir): the
first run embeds every data set once with every candidate; later runs take minutes.

    .venv/bin/python bench/rank_sample.py [--sizes 100,250,500,1000,2000] [--seeds 20] [--json]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import kendalltau

import headstart as hs
from headstart.backbones import build_backbone
from headstart.backbones.layers import FINAL, layer_candidates, tap_layers
from headstart.data import stratified_sample
from headstart.features import extract_features
from headstart.transferability import score_features

from _common import emit, machine, parser, quiet
from rank_agreement import probe_accuracy

IMAGE_MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
TIMED_SAMPLES = 64  # embedded without the cache per backbone: the cold per-sample cost


def data_sets(root) -> dict:
    return {"flowers5": (hs.ImageFolder(root / "flowers5"), IMAGE_MODELS),
            "amazon": (hs.TextTable(root / "sentiment" / "amazon.txt"), ["minilm"]),
            "sms_spam": (hs.TextTable(root / "sms_spam" / "SMSSpamCollection.tsv"), ["minilm"])}


def candidate_features(models, train, test, cache) -> tuple[dict, dict, dict]:
    """Per (model, layer): training features, probe test accuracy; per model: cold seconds per sample."""
    features, accuracy, per_sample = {}, {}, {}
    for name in models:
        backbone = build_backbone(name)
        tapped, columns = tap_layers(backbone, layer_candidates(backbone))
        x_train = extract_features(tapped, train, cache_dir=cache)
        x_test = extract_features(tapped, test, cache_dir=cache)
        for layer, cols in columns:
            features[(name, layer)] = x_train[:, cols]
            accuracy[(name, layer)] = probe_accuracy(x_train[:, cols], train.y, x_test[:, cols], test.y,
                                                     len(train.classes))
        timed = train.subset(stratified_sample(train.y, TIMED_SAMPLES, seed=99))
        extract_features(backbone, timed.subset(range(4)), use_cache=False)  # warm-up: first-batch costs
        started = time.perf_counter()
        extract_features(backbone, timed, use_cache=False)  # what `rank` does on a cold cache
        per_sample[name] = (time.perf_counter() - started) / len(timed)
    return features, accuracy, per_sample


def tau(a, b) -> float:
    value = kendalltau(a, b).statistic
    return float(value) if np.isfinite(value) else 0.0


def score_sample(features, accuracy, idx, y, full_logme=None) -> dict:
    """LogME of every candidate on the samples ``idx``, and how its ranking compares."""
    started = time.perf_counter()
    logme = {key: score_features(x[idx], y[idx]).logme for key, x in features.items()}  # every score, as rank does
    seconds = time.perf_counter() - started
    keys = list(features)
    finals = [k for k in keys if k[1] == FINAL]
    result = {"score_seconds": seconds, "logme": {f"{m}/{layer}": v for (m, layer), v in logme.items()}}
    for group, chosen in (("final", finals), ("layers", keys)):
        if len(chosen) < 2:
            continue
        winner = max(chosen, key=logme.get)
        result[group] = {
            "tau_probe": tau([logme[k] for k in chosen], [accuracy[k] for k in chosen]),
            "winner": f"{winner[0]}/{winner[1]}",
            "regret": max(accuracy[k] for k in chosen) - accuracy[winner]}
        if full_logme is not None:
            result[group]["tau_full"] = tau([logme[k] for k in chosen], [full_logme[k] for k in chosen])
            result[group]["same_winner"] = winner == max(chosen, key=full_logme.get)
    return result


def measure(name, data, models, sizes, seeds, cache) -> dict:
    train, test = data.split(test=0.2, seed=0)
    features, accuracy, per_sample = candidate_features(models, train, test, cache)
    y = train.y
    every = np.arange(len(train))
    full = score_sample(features, accuracy, every, y)
    full_logme = {k: full["logme"][f"{k[0]}/{k[1]}"] for k in features}
    rows = {"all": [full | {"samples": len(train)}]}
    for size in sizes:
        if size >= len(train):
            continue
        rows[size] = []
        for seed in range(seeds):
            idx = stratified_sample(y, size, seed)
            rows[size].append(score_sample(features, accuracy, idx, y, full_logme) | {"samples": len(idx), "seed": seed})
    return {"train": len(train), "test": len(test), "classes": len(train.classes), "models": models,
            "probe_accuracy": {f"{m}/{layer}": v for (m, layer), v in accuracy.items()},
            "cold_seconds_per_sample": per_sample, "sizes": {str(k): v for k, v in rows.items()}}


def summary_rows(name: str, result: dict) -> list[list]:
    rows = []
    embed = sum(result["cold_seconds_per_sample"].values())  # every backbone embeds each sample once
    for size, runs in result["sizes"].items():
        n = runs[0]["samples"]
        row = [name, f"{n}" + (" (all)" if size == "all" else ""), len(runs)]
        for group in ("final", "layers"):
            if group not in runs[0]:
                row += ["-", "-", "-", "-"]
                continue
            taus = [r[group]["tau_probe"] for r in runs]
            row += [f"{np.mean(taus):.2f} ({min(taus):.2f})",
                    "-" if size == "all" else f"{np.mean([r[group]['tau_full'] for r in runs]):.2f}",
                    "-" if size == "all" else f"{sum(r[group]['same_winner'] for r in runs)}/{len(runs)}",
                    f"{np.mean([r[group]['regret'] for r in runs]):.3f} / {max(r[group]['regret'] for r in runs):.3f}"]
        row += [f"{np.mean([r['score_seconds'] for r in runs]):.2f}", f"{n * embed:.0f}"]
        rows.append(row)
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,250,500,1000,2000", help="sample sizes (the whole split is always scored)")
    p.add_argument("--seeds", type=int, default=20, help="stratified samples drawn per size")
    p.add_argument("--sets", default="flowers5,amazon,sms_spam", help="data sets measured")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: the HEADSTART cache)")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    sets = data_sets(args.data)
    result, table_rows = {"machine": machine(args.threads), "datasets": {}}, []
    for name in args.sets.split(","):
        data, models = sets[name]
        result["datasets"][name] = measure(name, data, models, sizes, args.seeds, args.cache_dir)
        table_rows += summary_rows(name, result["datasets"][name])
    result["machine"] = machine(args.threads)
    notes = ["final: each backbone's final features (what `rank` scores); layers: with earlier layer candidates "
             "(`rank --layers`); text has one backbone, so only layers",
             "tau probe: Kendall tau of LogME against linear-probe test accuracy (mean over seeds, min in brackets); "
             "tau all: against LogME on the whole training split; winner: seeds whose winner is the whole split's; "
             "regret: probe test accuracy lost by fitting the sample's winner instead of the best candidate "
             "(mean / worst over seeds)",
             "score s: scoring every candidate (measured); embed s: cold embedding of the sample by every backbone, "
             "from each backbone's measured cost per sample: " + "; ".join(
                 f"{n}: " + ", ".join(f"{m} {1000 * s:.0f} ms" for m, s in r["cold_seconds_per_sample"].items())
                 for n, r in result["datasets"].items())]
    headers = ["data set", "samples", "seeds", "final tau probe", "tau all", "winner", "regret",
               "layers tau probe", "tau all", "winner", "regret", "score s", "embed s"]
    emit(args.json, result, "LogME ranking on stratified samples of the training split", headers, table_rows, notes)


if __name__ == "__main__":
    main()
