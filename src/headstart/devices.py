"""Where computation runs: the torch device and how many decoding workers to use."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["check_device_name", "resolve_device", "default_workers", "cpu_description"]

_INT8_EXTENSIONS = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    import torch  # here: a command that reads cached features only never loads torch

    if isinstance(device, torch.device):
        return device
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("`--device cuda` was asked for, but torch sees no CUDA device. Use `--device cpu`.")
    return torch.device(device)


def check_device_name(device: str | torch.device) -> str | torch.device:
    """``device`` when it names a device headstart runs on (auto, cpu, cuda, cuda:N; or a torch.device),
    without importing torch: a command that may not need a device still refuses a misspelt one at once."""
    if isinstance(device, str) and device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"The 'device' option must be auto, cpu or cuda. Got {device!r} instead.")
    return device


def default_workers(num_workers: int | None = None) -> int:
    """Image-decoding worker processes: as given, else none on <= 2 cores (decoding in the main
    process was faster there, bench/extraction_throughput.py --workers), else half the cores, at most 4."""
    if num_workers is not None:
        return num_workers
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)


def cpu_description() -> str:
    """The CPU's model and the vector extensions ONNX Runtime's int8 kernels depend on: the same int8
    model agreed with its float one on 0.963 of flowers5's test images on an AVX2 CPU without VNNI,
    where an unrecorded machine measured 0.986 (bench/README.md), so agreement is stated with the CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return " ".join([model or platform.machine(), *sorted(flags & _INT8_EXTENSIONS)])
