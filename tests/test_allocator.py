"""The allocator setting training uses on the CPU: large buffers come from the heap, and freed ones
stay there for the next step, instead of a fresh mmap each time."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import ctypes
import numpy as np
from headstart.allocator import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = Info

def where_a_buffer_lives():
    buffer = np.ones(8 << 20)  # 64 MiB
    mapped = mallinfo2().hblkhd  # bytes in blocks of their own mmap
    del buffer
    return mapped >= 64 << 20, mallinfo2().arena >= 64 << 20  # mapped on its own; heap still holds it when freed

default = where_a_buffer_lives()
applied = keep_freed_memory()
print(applied, keep_freed_memory(), *default, *where_a_buffer_lives())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_large_buffers_come_from_the_heap_and_stay_there_when_freed():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    applied, again, default_mapped, default_kept, mapped, kept = done.stdout.split()
    assert applied == again == "True"
    assert (default_mapped, default_kept) == ("True", "False")  # glibc's default: an mmap per buffer, unmapped
    assert (mapped, kept) == ("False", "True")
