"""glibc's memory allocator, set for running networks on the CPU (training, extraction, prediction).

A training step or an inference batch allocates and frees the same large buffers (activations,
gradients) every time. glibc serves a block over its mmap threshold (dynamic, at most 32 MiB by
default) with a fresh ``mmap`` and unmaps it when freed, and gives a freed heap top back to the
system, so every step faults in gigabytes of new zeroed pages: efficientnet_lite0 at 224 px, batch 32, 2 cores, spent 1.2
of its 1.85 s per step in the kernel. Kept in the heap instead (blocks up to 1 GiB, no trimming
below 1 GiB, heap grown 256 MiB at a time), the same step took 1.16 s with no kernel time, and
the process's peak memory grew 3.5 -> 4.0 GB (``bench/cpu_allocator.py``). A forward pass at batch 32
(inference mode) took 0.30 s instead of 0.63. A process that trains or extracts keeps its peak
memory until it ends; that is the trade.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_SETTINGS = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse (once per process); False where the C library is not
    glibc (macOS, musl), which is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no glibc: musl has no mallopt
        return False
    applied = all(mallopt(option, value) == 1 for option, value in _SETTINGS)
    log.debug("glibc malloc set to keep freed memory for training: %s", applied)
    return applied
