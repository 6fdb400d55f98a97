"""The embedded default (what `discrepancy train` and `make demo` run) shows what the tool is for: clear learning and
a transition the analysis finds. Instruments are off here (they measure, they never change the training numbers)."""

from __future__ import annotations

import pytest

from discrepancy.analysis import detect_jumps
from discrepancy.runfile import open_run
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.run import train_run

pytestmark = pytest.mark.slow


def test_the_default_run_learns_and_has_a_correctness_jump(tmp_path):
    summary = train_run(TrainConfig(), tmp_path / "run.h5", instruments=[])
    assert summary.status == "finished" and summary.steps == 300
    with open_run(tmp_path / "run.h5") as run:
        series = run.series()
    correct = series["reward_correctness"].to_numpy()
    first, last = correct[:60].mean(), correct[-60:].mean()
    assert last - first > 0.15 and last > 0.5, (first, last)  # was 0.54 → 0.58 with the previous default
    rises = [i for i in detect_jumps(correct) if correct[i:i + 20].mean() > correct[max(0, i - 20):i].mean()]
    assert rises, "no upward jump of correctness found"
