"""Throughput of an exported bundle in ONNX Runtime (float and int8) against torch eager, and how
often the int8 model's top class agrees with the float model's on a real test split.

Goals: ONNX float / torch >= 1.5, int8 / torch >= 2, int8 top-1 agreement >= 0.99. The int8 model leaves
more of its leading layers in float until half the test split shows an agreement of 0.99 (its lower
bound at one standard error, as export judges the samples it checks); the other half's agreement
shows how far that choice carries.
Images: efficientnet_lite0 linear probe (fit on --train-per-class images of flowers5's train part, or all),
exported with `headstart export` machinery; agreement on flowers5's whole test split (stratified
80/20, seed 0). Text: minilm linear probe on sentiment/amazon.txt (80/20, seed 0), agreement on its
test split. Both calibrate on 64 training samples (images: int8 ranges; texts: the inputs' smoothing).
Throughput: in-memory inputs of one batch (32 images at 224 px, already prepared; 32 test sentences,
tokenized, padded to the longest), torch eager with channels_last as the contract
says and torch.inference_mode, ONNX Runtime on the CPU provider, the same number of threads on every
side (--threads; ONNX Runtime sessions opened as the runtime opens them), best of --repeats timed
runs after a warm-up.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import emit, machine, parser, quiet

import headstart as hs
from headstart.export import export_bundle
from headstart.export.quantize import agreement, float_predictions, quantize_int8
from headstart.export.samples import Samples
from headstart.runtime import OUTPUT_NAME, Bundle, open_session

GOALS = {"float_speedup": 1.5, "int8_speedup": 2.0, "agreement": 0.99}


def best_seconds(call, repeats: int) -> float:
    call()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def torch_call(model: hs.Transfer, feeds: dict):
    """torch eager on the same batch: the image tensor in channels_last, or the tokenizer's tensors."""
    net = model.net_.eval()
    if model.contract_.modality == "image":
        memory = torch.channels_last if model.contract_.channels_last else torch.contiguous_format
        net = net.to(memory_format=memory)
        inputs = torch.from_numpy(next(iter(feeds.values()))).contiguous(memory_format=memory)
    else:
        inputs = {name: torch.from_numpy(value) for name, value in feeds.items()}

    def call():
        with torch.inference_mode():
            torch.softmax(net(inputs), dim=1).numpy()
    return call


def measure(model: hs.Transfer, run: Path, test: Samples, calibration: list, args, work: Path) -> dict:
    """Export the run, quantize it, time torch / float / int8 on one batch, and measure agreement."""
    started = time.perf_counter()
    exported = export_bundle(run, work / "bundle", samples=32)
    bundle = Bundle.load(exported.out_dir, threads=args.threads)
    int8_path = work / "model.int8.onnx"
    # As export does, more leading layers stay in float until the samples show the goal; the tries are
    # judged on half the test split (even positions) and the other half, which chose nothing, reports too.
    choosing, checking = (Samples(test.items[i::2], test.labels[i::2], test.origin) for i in (0, 1))
    expected = float_predictions(bundle, choosing)
    quantized = quantize_int8(bundle, exported.out_dir / "model.onnx", int8_path, calibration,
                              measure=lambda path: agreement(bundle, path, choosing, expected),
                              min_agreement=GOALS["agreement"])
    export_s = time.perf_counter() - started
    feeds = next(bundle.batches(test.items[:args.batch], args.batch))
    float_session, int8_session = (open_session(path, args.threads) for path in (exported.out_dir / "model.onnx", int8_path))
    seconds = {"torch": best_seconds(torch_call(model, feeds), args.repeats),
               "onnx_float": best_seconds(lambda: float_session.run([OUTPUT_NAME], feeds), args.repeats),
               "onnx_int8": best_seconds(lambda: int8_session.run([OUTPUT_NAME], feeds), args.repeats)}
    agreed = agreement(bundle, int8_path, test)
    return {"per_s": {side: args.batch / s for side, s in seconds.items()}, "method": quantized.method,
            "float_layers": quantized.float_layers, "layers": quantized.layers, "tried": quantized.tried,
            "agreement_unchosen_half": round(agreement(bundle, int8_path, checking).agreement, 4),
            "parity_max_abs": exported.parity["max_abs_diff"], "export_and_quantize_s": round(export_s, 1),
            "float_speedup": seconds["torch"] / seconds["onnx_float"], "int8_speedup": seconds["torch"] / seconds["onnx_int8"],
            **agreed.to_dict()}


def save_run(model: hs.Transfer, test: hs.LabelledData, source: Path, folder: Path) -> Path:
    """The fitted model as a run whose predictions.json lists the test split (torch predicts only
    the samples parity checks, so the bench never runs torch over the whole split)."""
    rows = [{"location": location, "true": test.classes[y], **({"text": item} if test.modality == "text" else {})}
            for location, item, y in zip(test.locations, test.items, test.y)]
    return model.save(folder / "run", metrics={"data": {"source": str(source)}}, extra={"predictions": rows})


def images(args, work: Path) -> dict:
    flowers = hs.ImageFolder(args.data / "flowers5")
    train, test = flowers.split(test=0.2, seed=0)
    if args.train_per_class:
        rng = np.random.default_rng(0)
        picked = np.concatenate([rng.choice(np.flatnonzero(train.y == c), args.train_per_class, replace=False)
                                 for c in range(len(train.classes))])
        train = train.subset(np.sort(picked))
    model = hs.Transfer("efficientnet_lite0", cache_dir=work / "cache", num_workers=0).fit(train)
    run = save_run(model, test, args.data / "flowers5", work)
    calibration = sorted(np.random.default_rng(1).choice(train.items, 64, replace=False).tolist())
    samples = Samples(test.items, [test.classes[y] for y in test.y], "flowers5 test split")
    return {"model": "efficientnet_lite0", "unit": "images/s", "test_samples": len(test),
            **measure(model, run, samples, calibration, args, work)}


def texts(args, work: Path) -> dict:
    reviews = hs.TextTable(args.data / "sentiment" / "amazon.txt")
    train, test = reviews.split(test=0.2, seed=0)
    model = hs.Transfer("minilm", cache_dir=work / "cache").fit(train)
    run = save_run(model, test, args.data / "sentiment" / "amazon.txt", work)
    calibration = sorted(np.random.default_rng(1).choice(train.items, 64, replace=False).tolist())
    samples = Samples(test.items, [test.classes[y] for y in test.y], "amazon test split")
    return {"model": "minilm", "unit": "sentences/s", "test_samples": len(test),
            **measure(model, run, samples, calibration, args, work)}


def row(result: dict) -> tuple:
    per_s = result["per_s"]
    return (result["model"], result["unit"], per_s["torch"], per_s["onnx_float"], per_s["onnx_int8"],
            result["float_speedup"], result["int8_speedup"], result["top1_agreement"], result["float_accuracy"],
            result["int8_accuracy"], result["test_samples"], f"{result['float_layers']} of {result['layers']}",
            result["agreement_unchosen_half"])


def verdicts(result: dict) -> str:
    checks = [f"{name} {result[name]:.3f} (goal >= {goal}: {'pass' if result[name] >= goal else 'FAIL'})"
              for name, goal in (("float_speedup", GOALS["float_speedup"]), ("int8_speedup", GOALS["int8_speedup"]),
                                 ("top1_agreement", GOALS["agreement"]))]
    return f"{result['model']}: " + "; ".join(checks) + f"; int8 recipe: {result['method']}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="batch of every side (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side; the fastest counts (default 3)")
    p.add_argument("--train-per-class", type=int, default=60,
                   help="flowers5 images per class the probe fits on; 0: the whole training split")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as work:
        results = [images(args, Path(work) / "images"), texts(args, Path(work) / "texts")]
    result = {"benchmark": "onnx_throughput", "machine": machine(args.threads), "batch_size": args.batch,
              "goals": GOALS, "results": results, "seconds": round(time.perf_counter() - started, 1)}
    emit(args.json, result, f"ONNX Runtime vs torch eager, batch {args.batch}, {args.threads} threads, best of "
                            f"{args.repeats}", ("model", "unit", "torch", "onnx float", "onnx int8", "float/torch",
                                                 "int8/torch", "int8 agreement", "float acc", "int8 acc", "test n",
                                                 "float layers", "agreement, unchosen half"),
         [row(r) for r in results], [verdicts(r) for r in results] + [f"total {result['seconds']} s"])


if __name__ == "__main__":
    main()
