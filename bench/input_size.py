"""An image backbone at its images' own size against its pre-training's: probe accuracy, feature and training speed.

flowers5's photos are 128 px; efficientnet_lite0 takes 224. Side by side in one run, for each size: a linear
probe on a cold feature cache (stratified 80/20 split, seed 0: test accuracy, feature seconds), and the
seconds a training step takes per image (augmented loading, forward and backward; the fastest of alternating
rounds, since other work on the machine only ever adds time). Ratios are the full size's time over the
smaller size's: what `NAME@PIXELS` saves, and what it costs a probe.
"""

from __future__ import annotations

import tempfile

import torch

import headstart as hs
from _common import PhaseClock, emit, machine, parser, quiet
from headstart.autopilot.scoring import train_step_seconds


def probe(model: str, train, test) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        clock = PhaseClock()
        estimator = hs.Transfer(model, cache_dir=cache, progress=clock).fit(train)
        features = clock.features_done()
        accuracy = estimator.evaluate(test)["accuracy"]
    return {"model": model, "accuracy": accuracy, "features_seconds": features}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=128, help="the smaller input size (default: flowers5's 128 px)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of training-step timing")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    data = hs.ImageFolder(args.data / "flowers5")
    train, test = data.split(test=0.2, seed=0)
    models = [args.model, f"{args.model}@{args.size}"]
    probes = [probe(m, train, test) for m in models]
    steps = {m: [] for m in models}
    for _ in range(args.rounds):
        for m in models:
            steps[m].append(train_step_seconds(m, train, device="cpu", batch_size=32, batches=3))
    step = {m: min(v) for m, v in steps.items()}
    full, small = probes
    ratios = {"features": full["features_seconds"] / small["features_seconds"],
              "training_step": step[models[0]] / step[models[1]]}
    rows = [(r["model"], f"{r['accuracy']:.4f}", f"{r['features_seconds']:.1f}", f"{1000 * step[r['model']]:.1f}")
            for r in probes]
    notes = [f"full size / smaller size: features {ratios['features']:.2f}x, "
             f"training step {ratios['training_step']:.2f}x; probe accuracy {full['accuracy']:.4f} against {small['accuracy']:.4f}",
             "training step rounds (ms per image): " + "; ".join(
                 f"{m} " + ", ".join(f"{1000 * s:.1f}" for s in v) for m, v in steps.items())]
    emit(args.json, {"benchmark": "input_size", "machine": machine(args.threads), "probes": probes,
                     "step_seconds_per_image": steps, "ratios": ratios},
         f"flowers5 ({len(train)} train / {len(test)} test), linear probe on a cold cache, and training steps",
         ("model", "probe accuracy", "features s", "train step ms/image"), rows, notes)


if __name__ == "__main__":
    main()
