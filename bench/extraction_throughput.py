"""Images/s of headstart's extract_features (jpg files on disk) against the fastest honest plain use
of the same library: timm's own tf_efficientnet_lite0 (the same weights, no classifier) in
channels_last, eval, torch.inference_mode, over batches already decoded, transformed and converted to
channels_last in memory. Goal: headstart/plain >= 0.9.

Both sides: batch size 64 (--batch), the same torch threads. headstart also runs with num_workers 0,
1 and 2 to find the best default; it decodes and resizes the files on the same cores.
"""

from __future__ import annotations

import time

import numpy as np
import timm
import torch

import headstart as hs
from headstart.data import image_transform, load_image
from headstart.features import extract_features
from _common import emit, machine, parser, quiet

GOAL = 0.9


def default_workers() -> int:
    """What Transfer picks when num_workers is None."""
    from headstart.devices import default_workers as chosen

    return chosen(None)


def plain_loop(module: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            module(batch).numpy()
    return time.perf_counter() - start


def plain_timm_model(backbone: hs.backbones.Backbone, memory_format: torch.memory_format) -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 without classifier, holding the backbone's own weights."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    weights = {k.split(".", 1)[1] if k.startswith("model.") else k: v for k, v in backbone.module.state_dict().items()}
    model.load_state_dict({k: v for k, v in weights.items() if k in model.state_dict()}, strict=True)
    return model.eval().to(memory_format=memory_format)


def headstart_run(backbone: hs.backbones.Backbone, data: hs.LabelledData, workers: int, batch: int) -> float:
    start = time.perf_counter()
    extract_features(backbone, data, use_cache=False, batch_size=batch, num_workers=workers)
    return time.perf_counter() - start


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=640, help="how many flowers5 images (default 640)")
    p.add_argument("--batch", type=int, default=64, help="batch size of both sides (default 64, headstart's)")
    p.add_argument("--workers", default="0,1,2", help="num_workers settings to sweep (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds of every side; the fastest round of each counts (default 2)")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)

    flowers = hs.ImageFolder(args.data / "flowers5")
    picked = np.random.default_rng(0).permutation(len(flowers))[:args.images]
    data = flowers.subset(np.sort(picked))
    backbone = hs.build_backbone("efficientnet_lite0")
    channels_last = backbone.contract.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = plain_timm_model(backbone, memory_format)

    transform = image_transform(backbone.contract, train=False)
    tensors = [transform(load_image(path)) for path in data.items]
    batches = [torch.stack(tensors[i:i + args.batch]).contiguous(memory_format=memory_format)
               for i in range(0, len(tensors), args.batch)]
    del tensors
    with torch.inference_mode():  # the same numbers as headstart's features: the same network
        assert torch.allclose(module(batches[0][:2]), backbone.module.eval()(batches[0][:2]), atol=1e-4)

    default = default_workers()
    plain_loop(module, batches[:1])  # warm-up: first calls allocate and pick kernels
    headstart_run(backbone, data.subset(range(args.batch)), default, args.batch)
    settings = sorted({default, *(int(w) for w in args.workers.split(","))})
    plain_s, seconds = float("inf"), {w: float("inf") for w in settings}
    for _ in range(args.rounds):  # interleaved, so other load on the machine hits every side alike
        plain_s = min(plain_s, plain_loop(module, batches))
        for w in settings:
            seconds[w] = min(seconds[w], headstart_run(backbone, data, w, args.batch))

    n, plain_rate = len(data), len(data) / plain_s
    rows = [("plain timm, channels_last, in-memory", "-", f"{plain_s:.1f}", f"{plain_rate:.1f}", "1.000", "")]
    for workers, s in seconds.items():
        mark = f"default, goal >= {GOAL}" if workers == default else ""
        rows.append(("headstart extract_features", workers, f"{s:.1f}", f"{n / s:.1f}", f"{plain_s / s:.3f}", mark))
    ratio = plain_s / seconds[default]
    best = min(seconds, key=seconds.get)
    result = {"benchmark": "extraction_throughput", "machine": machine(args.threads), "images": n,
              "batch_size": args.batch, "channels_last": channels_last, "rounds": args.rounds, "plain_images_per_s": plain_rate,
              "headstart_images_per_s": {w: n / s for w, s in seconds.items()}, "default_workers": default,
              "ratio": ratio, "goal": GOAL, "passes": ratio >= GOAL, "best_workers": best}
    emit(args.json, result,
         f"Feature extraction, efficientnet_lite0, {n} flowers5 images, batch {args.batch}, "
         f"channels_last {channels_last}, fastest of {args.rounds} interleaved rounds",
         ("side", "workers", "seconds", "images/s", "ratio to plain", ""), rows,
         [f"headstart/plain with the default {default} worker(s): {ratio:.3f} (goal >= {GOAL}: "
          f"{'pass' if ratio >= GOAL else 'FAIL'}); fastest setting here: num_workers={best}"])


if __name__ == "__main__":
    main()
