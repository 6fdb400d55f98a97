"""The allocator tuning: after it, a 2 MiB block comes from the heap (reused memory) instead of a fresh mapping."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, sys
    from discrepancy.trainers.allocator import keep_freed_memory

    libc = ctypes.CDLL(None)
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


def _glibc_with_defaults() -> bool:
    import os
    import platform

    tuned = any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ)
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" and not tuned


@pytest.mark.skipif(not _glibc_with_defaults(), reason="glibc's allocator, with its default thresholds")
def test_large_blocks_come_from_the_heap_once_tuned():
    # A fresh process, whose allocator is still untuned (a CPU training run in this process has tuned it already).
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"]  # mmapped before, from the heap after; a second call is a no-op
