"""Helpers for run-file tests: a writer in a real subprocess, a run written by the trainer, and the shared series run
(``tests/sample_runs.py``)."""

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


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """A run written by the trainer itself (tiny model, 10 GRPO steps, LoRA rank 2, snapshots at 0, 5, 10, two
    samples per step): the source of the damaged-file corpus (tests/runfile/corpus.py). Takes ~2 s."""
    import torch

    from discrepancy.config import apply_overrides
    from discrepancy.trainers.config import TrainConfig
    from discrepancy.trainers.run import train_run

    torch.set_num_threads(1)
    cfg = apply_overrides(TrainConfig(), [
        "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64", "sft.steps=5", "lora.rank=2",
        "grpo.num_prompts=2", "grpo.group_size=4", "grpo.max_completion_length=8", "task.num_examples=50",
        "run.steps=10", "run.snapshot_every=5", "run.checkpoint_every=0", "run.samples_per_step=2",
        "run.flush_every=5", "run.threads=1", 'run.device="cpu"',
    ])
    path = tmp_path_factory.mktemp("real") / "run.h5"
    train_run(cfg, path)
    return path
