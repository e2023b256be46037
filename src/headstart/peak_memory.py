"""Peak memory of a block of work, measured, so strategies can be compared on what they need.

On CUDA it is ``torch.cuda.max_memory_allocated`` (tensors on the device, reset at entry).
On CPU torch keeps no such counter, so a thread samples the resident set size (RSS) of this
process with psutil every few milliseconds and reports the peak above the RSS at entry;
memory freed by earlier work is handed back to the system first (``gc`` and glibc's
``malloc_trim``), so it cannot hide this block's own growth. DataLoader worker processes
are not counted: the figure is the training process's own.
"""

from __future__ import annotations

import ctypes
import gc
import threading

import torch

__all__ = ["PeakMemory"]


def _release_free_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is then a little high, never wrong
        pass


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.bytes`` and ``peak.method``."""

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.bytes = 0
        self.method = ("torch.cuda.max_memory_allocated" if self.device.type == "cuda"
                       else "peak RSS growth of the process, sampled every 5 ms")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        _release_free_heap()
        self._process = psutil.Process()
        self._base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.bytes = self._peak - self._base
