"""Load test of `headstart serve` on loopback: dynamic batching against none.

Model (--model): efficientnet_lite0 (default), a linear probe fit (`fit_run`) on the first
--train-per-class images per class of flowers5; or minilm, a linear probe on the first 200
sentences of sentiment/amazon.txt. Either is exported with `headstart export`'s machinery
(parity-checked). Request: one small JPEG (a 128 x 128 flowers5 photo as stored, one the probe
was not fit on) as a one-file multipart POST /predict; for minilm one yelp sentence as
{"texts": [...]}. The server runs as `headstart serve BUNDLE --port 0` subprocesses,
`--max-batch 32 --max-wait-ms 5` and `--max-batch 1` (no batching) in turn, for --rounds
alternating rounds (the machine's load drifts: a side's figures are its median round, the
ratio the median of the rounds' ratios). On each: --clients concurrent clients (keep-alive
connections of a bare asyncio client on uvloop in this process, sending the request's bytes as
httpx encoded them once), --warmup untimed requests, then --requests timed ones; throughput,
latency percentiles, errors (any non-200 or transport error) and the server's /stats (model
calls, mean batch). Also the model alone (ONNX Runtime, same threads, best of 3): ms per input
at batch 1 and at batch 32, the most batching could save.
Goal: batched / unbatched throughput >= 2 with 0 errors.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import uvloop
from _common import emit, machine, parser, quiet

from headstart.export import export_bundle
from headstart.runtime import Bundle
from headstart.serve.inputs import ImageDecoder
from headstart.workflows import fit_run

GOAL = 2.0
SIDES = {"batched": ["--max-batch", "32", "--max-wait-ms", "5"], "unbatched": ["--max-batch", "1"]}


def make_bundle(model: str, data: Path, per_class: int, work: Path) -> Path:
    """A linear probe on a slice of flowers5 (efficientnet_lite0) or amazon (minilm), exported."""
    if model == "minilm":
        rows = [line.rstrip("\n").split("\t") for line in (data / "sentiment" / "amazon.txt").open()][:200]
        with open(work / "amazon.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["text", "label"], *rows])
        source = work / "amazon.csv"
    else:
        for folder in sorted(p for p in (data / "flowers5").iterdir() if p.is_dir()):
            (work / "data" / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:per_class]:
                shutil.copy(image, work / "data" / folder.name / image.name)
        source = work / "data"
    fit_run(source, work / "run", model=model, workers=0, cache_dir=work / "cache")
    return export_bundle(work / "run", work / "bundle", samples=16).out_dir


def request_of(model: str, data: Path) -> tuple[dict, object, str]:
    """(httpx keyword arguments of one request, the input alone, how it is described)."""
    if model == "minilm":
        text = (data / "sentiment" / "yelp.txt").open().readline().split("\t")[0]
        return {"json": {"texts": [text]}}, text, f"one {len(text)}-character sentence"
    jpeg = sorted((data / "flowers5" / "tulip").glob("*.jpg"))[-1].read_bytes()
    return {"files": {"files": ("flower.jpg", jpeg, "image/jpeg")}}, jpeg, f"one {len(jpeg) / 1000:.1f} kB JPEG"


def model_alone(bundle_dir: Path, item: object, threads: int | None) -> dict:
    """ms per input of the model alone at batch 1 and 32 (prepared inputs, best of 3 after a warm-up)."""
    bundle = Bundle.load(bundle_dir, threads=threads)
    if isinstance(item, bytes):
        row, name = ImageDecoder(bundle)([("flower.jpg", item)])[0], bundle.session.get_inputs()[0].name

        def call(n: int) -> np.ndarray:
            return bundle.run({name: np.stack([row] * n)})
    else:
        def call(n: int) -> np.ndarray:
            return bundle.predict_proba([item] * n, batch_size=n)
    figures = {}
    for n in (1, 32):
        call(n)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            call(n)
            times.append(time.perf_counter() - started)
        figures[f"batch_{n}_ms_per_input"] = min(times) * 1000 / n
    figures["ceiling"] = figures["batch_1_ms_per_input"] / figures["batch_32_ms_per_input"]
    return figures


class Server:
    """`headstart serve BUNDLE --port 0 ...` in a subprocess; the URL is read from its first line."""

    def __init__(self, bundle: Path, flags: list[str]) -> None:
        command = [sys.executable, "-m", "headstart", "serve", str(bundle), "--port", "0", *flags]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 180)
        line = self.process.stdout.readline() if ready else ""
        if " on http://" not in line:
            self.stop()
            raise RuntimeError(f"headstart serve did not start: {line!r} {self.process.stderr.read()[-2000:]}")
        self.url = line.split(" on ")[1].split()[0]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def raw_request(url: str, request: dict) -> bytes:
    """The bytes of one keep-alive ``POST /predict`` (encoded once by httpx, sent as is every time)."""
    built = httpx.Request("POST", f"{url}/predict", **request)
    head = "".join(f"{name}: {value}\r\n" for name, value in built.headers.items())
    return f"POST /predict HTTP/1.1\r\n{head}\r\n".encode() + built.read()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> bool:
    """Send one request on an open connection and read its whole response: whether it is a 200
    holding one prediction."""
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and len(json.loads(body)["predictions"]) == 1


async def drive(url: str, raw: bytes, clients: int, total: int) -> tuple[list[float], int, float]:
    """``total`` requests from ``clients`` concurrent keep-alive connections: (latencies in s, errors,
    wall seconds). A bare asyncio client on uvloop: httpx's own costs ~5 ms of CPU per request, more
    than the server's handling, on the cores the server needs."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    remaining, latencies, errors = [total], [], [0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            try:
                ok = await exchange(reader, writer, raw)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError, StopIteration):
                ok = False
                reader, writer = await asyncio.open_connection(host, int(port))
            latencies.append(time.perf_counter() - started)
            errors[0] += not ok
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors[0], time.perf_counter() - started


async def load(url: str, request: dict, args) -> dict:
    raw = raw_request(url, request)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await drive(url, raw, args.clients, args.warmup)
        before = (await client.get("/stats")).json()
        latencies, errors, seconds = await drive(url, raw, args.clients, args.requests)
        after = (await client.get("/stats")).json()
    calls, inputs = after["model_calls"] - before["model_calls"], after["inputs"] - before["inputs"]
    ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return {"requests": args.requests, "seconds": round(seconds, 2), "per_s": args.requests / seconds,
            "p50_ms": float(ms[0]), "p95_ms": float(ms[1]), "p99_ms": float(ms[2]), "errors": errors,
            "model_calls": calls, "mean_batch": inputs / calls if calls else 0.0}


def measure(bundle: Path, request: dict, args) -> tuple[dict, list[float], int]:
    """Each side ``--rounds`` times, alternating (the machine's load drifts): each side's median
    round by throughput, the batched / unbatched ratio of every round, and the errors of all."""
    rounds: dict[str, list[dict]] = {side: [] for side in SIDES}
    threads = ["--threads", str(args.onnx_threads)] if args.onnx_threads else []
    for _ in range(args.rounds):
        for side, flags in SIDES.items():
            server = Server(bundle, flags + threads)
            try:
                rounds[side].append({"flags": " ".join(flags), **uvloop.run(load(server.url, request, args))})
            finally:
                server.stop()
    ratios = [b["per_s"] / u["per_s"] for b, u in zip(rounds["batched"], rounds["unbatched"])]
    median = {side: sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2] for side, runs in rounds.items()}
    return median, ratios, sum(r["errors"] for runs in rounds.values() for r in runs)


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", choices=("efficientnet_lite0", "minilm"), default="efficientnet_lite0")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--requests", type=int, default=2000, help="timed requests per server (default 2000)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both servers (default 3)")
    p.add_argument("--warmup", type=int, default=64, help="untimed requests first (default 64)")
    p.add_argument("--train-per-class", type=int, default=20, help="flowers5 images per class the probe fits on")
    p.add_argument("--onnx-threads", type=int, default=None, help="`headstart serve --threads` on both servers "
                                                                   "(default: ONNX Runtime's own)")
    p.add_argument("--bundle", type=Path, default=None, help="serve this bundle instead of fitting and exporting one")
    return p.parse_args()


def main() -> None:
    args = options()
    quiet()
    started = time.perf_counter()
    request, item, described = request_of(args.model, args.data)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as work:
        bundle = args.bundle or make_bundle(args.model, args.data, args.train_per_class, Path(work))
        setup = time.perf_counter() - started
        alone = model_alone(bundle, item, args.onnx_threads)
        sides, ratios, errors = measure(bundle, request, args)
    ratio = float(np.median(ratios))
    verdict = "pass" if ratio >= GOAL and errors == 0 else "FAIL"
    result = {"benchmark": "serve_load", "machine": machine(args.threads), "model": f"{args.model} linear probe",
              "request": described, "clients": args.clients, "onnx_threads": args.onnx_threads, "model_alone": alone,
              "sides": sides, "round_ratios": ratios, "errors": errors, "throughput_ratio": ratio, "goal": GOAL,
              "setup_s": round(setup, 1),
              "seconds": round(time.perf_counter() - started, 1)}
    rows = [(side, r["flags"], r["requests"], r["seconds"], r["per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
             r["errors"], r["model_calls"], r["mean_batch"]) for side, r in sides.items()]
    emit(args.json, result, f"headstart serve on loopback: {args.clients} clients, {described} per request, "
                            f"{args.model} bundle, ONNX Runtime threads: {args.onnx_threads or 'its default'}",
         ("server", "flags", "requests", "seconds", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "model calls",
          "mean batch"), rows,
         [f"throughput batched / unbatched, median of {len(ratios)} alternating rounds: {ratio:.2f} (rounds: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; goal >= {GOAL} with 0 errors: {verdict}); rows: each side's "
          "median round",
          f"model alone: {alone['batch_1_ms_per_input']:.2f} ms per input at batch 1, "
          f"{alone['batch_32_ms_per_input']:.2f} at batch 32: batching can speed the model up {alone['ceiling']:.2f}x "
          "at most",
          f"setup (fit + export) {result['setup_s']} s, total {result['seconds']} s; the clients share the "
          f"machine's {os.cpu_count()} cores with the server"])


if __name__ == "__main__":
    main()
