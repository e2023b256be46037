"""Where computation runs: the torch device and how many decoding workers to use."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "default_workers"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("`--device cuda` was asked for, but torch sees no CUDA device. Use `--device cpu`.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"The 'device' option must be auto, cpu or cuda. Got {device!r} instead.")
    return torch.device(device)


def default_workers(num_workers: int | None = None) -> int:
    """Image-decoding worker processes: as given, else none on <= 2 cores (decoding in the main
    process was faster there, bench/extraction_throughput.py --workers), else half the cores, at most 4."""
    if num_workers is not None:
        return num_workers
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)
