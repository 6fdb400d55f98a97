"""Keep freed memory in the process on Linux, so a CPU training step reuses it instead of faulting in fresh pages.

A CPU step allocates and frees the same activation-sized blocks (a megabyte or more each) over and over. glibc serves
blocks above its mmap threshold (128 KiB at start) with fresh ``mmap``s and returns the heap's free top to the system
above its trim threshold, so each new tensor's first touch faults its pages in again. Raising both thresholds keeps
those blocks for reuse; on the tiny recipe the training forward and backward ran 6 % faster and the whole step 2–9 %
(A/B in separate processes, ``benchmarks/results/trainer_vs_trl.md``), at the same peak RSS. PyTorch's CPU tuning
guides get the same effect by preloading jemalloc or tcmalloc; ``mallopt`` needs no other library and no restart.

Process-wide and permanent, and only glibc's allocator: `discrepancy train` calls it for CPU runs (a library call
never changes its process); elsewhere it does nothing.
glibc keeps up to the trim threshold free per allocation arena, so a process with many threads that allocate may hold
more memory than before (measured only on the 2-core machine, where peak RSS did not change).
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 2**20  # free heap memory kept before any is returned to the system


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when both took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES))
