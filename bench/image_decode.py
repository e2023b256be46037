"""Decoding a large JPEG for a 224 px backbone: full decode against reduced (draft) decoding.

load_image with the transform's size_hint lets libjpeg decode at 1/2..1/8 scale, never below
the size the transform resizes to (256 px shorter side for a 224 px contract at crop_pct 0.875).
Both sides load the same 6000x4000 photo-like JPEG (or --image); times are the median of
--repeats runs; peak memory is, in a fresh process per side, the rise of the peak resident memory
(VmHWM, reset through /proc/self/clear_refs) over the memory in use before the one load.
The final 224 crops are compared as 8-bit pixels (mean absolute difference, 0..255).

    .venv/bin/python bench/image_decode.py [--image photo.jpg] [--repeats 5] [--json]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headstart.contract import InputContract
from headstart.data import image_transform, load_image

from _common import emit, machine, parser, quiet

MIB = 1 << 20
CONTRACT = InputContract(modality="image", feature_dim=8, input_size=224, crop_pct=0.875,
                         interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def photo_like(path: Path, width: int = 6000, height: int = 4000) -> None:
    """Smooth shapes plus fine grain at quality 90: the entropy of a camera photo, not of noise."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 100, width // 100, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.int16)
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rise_mib(path: Path, size_hint: int | None) -> float:
    """How far one load pushes the peak resident memory above what was in use before it."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _status_kib("VmRSS")
    image = load_image(path, size_hint=size_hint)
    rise = (_status_kib("VmHWM") - before) / 1024
    del image
    return rise


def peak_in_fresh_process(path: Path, size_hint: int | None) -> float:
    """``peak_rise_mib`` in a new interpreter, so memory freed by earlier loads cannot hide a peak."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from image_decode import peak_rise_mib; "
            f"from pathlib import Path; print(peak_rise_mib(Path({str(path)!r}), {size_hint!r}))")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split()[-1])


def timed(path: Path, size_hint: int | None, repeats: int, transform) -> tuple[float, float]:
    """Median seconds of load_image alone, and of load_image + the contract's transform."""
    decode, total = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        image = load_image(path, size_hint=size_hint)
        decode.append(time.perf_counter() - start)
        transform(image)
        total.append(time.perf_counter() - start)
    return statistics.median(decode), statistics.median(total)


def crop_difference(path: Path, transform) -> float:
    """Mean absolute difference (0..255) of the final crops of the full and the reduced decode."""
    std = torch.tensor(CONTRACT.std).view(3, 1, 1)
    full = transform(load_image(path)) * std
    reduced = transform(load_image(path, size_hint=transform.size_hint)) * std
    return float((full - reduced).abs().mean() * 255)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, help="a JPEG to load (default: a generated 6000x4000 one)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    transform = image_transform(CONTRACT)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.image or Path(tmp, "photo.jpg")
        if args.image is None:
            photo_like(path)
        load_image(path)  # warm the file cache and the plugins before anything is timed
        sides = {"full": None, "draft": transform.size_hint}
        rows = {name: [load_image(path, size_hint=hint).size, *timed(path, hint, args.repeats, transform),
                       peak_in_fresh_process(path, hint)] for name, hint in sides.items()}
        difference = crop_difference(path, transform)
        with Image.open(path) as image:
            source = str(args.image) if args.image else f"generated {image.width}x{image.height}"
    ratios = [rows["full"][i] / rows["draft"][i] for i in (1, 2, 3)]
    result = {"image": source, "size_hint": transform.size_hint,
              "sides": {name: dict(zip(("decoded_size", "decode_s", "load_transform_s", "peak_rise_mib"), row))
                        for name, row in rows.items()},
              "full_over_draft": dict(zip(("decode", "load_transform", "peak"), ratios)),
              "crop_mean_abs_diff_0_255": difference, "machine": machine(args.threads)}
    table_rows = [[name, f"{row[0][0]}x{row[0][1]}", row[1] * 1000, row[2] * 1000, row[3]]
                  for name, row in rows.items()]
    table_rows.append(["full / draft", "", *ratios])
    emit(args.json, result, f"loading {source} JPEG for a 224 px contract (size_hint {transform.size_hint})",
         ["decode", "decoded size", "decode ms", "load+transform ms", "peak rise MiB"], table_rows,
         [f"final 224 crop, full vs draft: mean abs pixel difference {difference:.2f} / 255"])


if __name__ == "__main__":
    main()
