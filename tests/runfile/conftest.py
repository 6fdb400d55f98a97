"""Helpers for run-file tests: a writer in a real subprocess, and the shared series run (``tests/sample_runs.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sample_runs import run_file  # noqa: F401 - fixture

WRITER = Path(__file__).with_name("_writer.py")


def start_writer(path: Path, steps: int, flush_every: int, mode: str) -> tuple[subprocess.Popen, int]:
    """Start a writer process; return it and the number of steps it reports as flushed."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(steps), str(flush_every), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"writer failed: {line} {proc.stderr.read()}")
    return proc, int(line.split()[1])


@pytest.fixture
def writer():
    procs: list[subprocess.Popen] = []

    def start(path: Path, steps: int, flush_every: int = 10, mode: str = "wait") -> tuple[subprocess.Popen, int]:
        proc, flushed = start_writer(path, steps, flush_every, mode)
        procs.append(proc)
        return proc, flushed

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
