"""One helper the benchmarks share: a training run through the command line, read back as its per-step table.

The benchmarks train through `discrepancy train` (a fresh process per run, as a user would) rather than in-process,
so one run's threads, caches and compiled code never leak into the next one's timing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def train_series(out: Path, seed: int, steps: int, sets: list[str], *, failed_ok: bool = True,
                 config: Path | None = None) -> tuple[pd.DataFrame, float]:
    """(per-step series, wall seconds) of ``discrepancy train --out OUT --seed S --steps N --force [--config C]
    --set …``.

    ``failed_ok``: a run that ends "failed" (exit 1: too many non-finite steps) is a result, as when a stress recipe
    collapses; any other exit stops the benchmark with the trainer's last words."""
    cmd = [sys.executable, "-m", "discrepancy", "train", "--out", str(out), "--seed", str(seed), "--steps",
           str(steps), "--force", *(["--config", str(config)] if config is not None else [])]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in ((0, 1) if failed_ok else (0,)):
        sys.exit(f"train failed: {proc.stderr.strip()[-400:]}")
    seconds = time.perf_counter() - t0
    from discrepancy.runfile import open_run

    with open_run(out) as run:
        return run.series(), seconds
