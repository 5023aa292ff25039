"""Keep freed memory inside the process, so CNNs on the CPU stop paying page faults.

glibc's malloc hands out blocks above a threshold (128 KiB at first, raised as it
goes) with a fresh mmap and gives them back to the kernel on free. A CNN on the CPU
allocates activations of several to tens of megabytes at every layer, so every layer
touched fresh zero pages and half of a forward pass was kernel time. Raising the mmap
threshold to its maximum and never trimming the heap makes the pass more than twice as
fast (measured: docs/benchmarks.md, 'finetune', Speed). These are the
mallopt settings that the MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_
environment variables would make, set at run time so that no launcher has to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit: larger blocks are always mmapped
TRIM_THRESHOLD = 2**31 - 1  # about never: the memory stays for the next batch
TOP_PAD = 256 * 1024 * 1024


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Apply the settings once per process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
