"""The allocator tuning: after it, a 2 MiB block comes from the heap (reused memory) instead of a fresh mapping."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, sys
    from discrepancy.trainers.allocator import keep_freed_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]

    def in_heap(size):
        addr = libc.malloc(size)
        for line in open("/proc/self/maps"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.rstrip().endswith("[heap]")
        raise AssertionError("block not mapped")

    before = in_heap(2 << 20)
    tuned = keep_freed_memory()
    print(before, tuned, in_heap(2 << 20), keep_freed_memory())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_large_blocks_come_from_the_heap_once_tuned():
    # A fresh process: the tuning is process-wide, and the test process must keep glibc's defaults.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"]  # mmapped before, from the heap after; a second call is a no-op
