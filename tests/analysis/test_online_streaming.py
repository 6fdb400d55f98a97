"""The streaming level-change test against the offline jump detector on the same finished series: the same window
statistic, so the two must find the same changes at the same steps (within the change-point margin max(5, n/200)),
on curves of both synthetic generators with held-out seeds."""

from __future__ import annotations

import numpy as np
import pytest

from discrepancy.analysis.changepoints import synthetic, synthetic2
from discrepancy.analysis.changepoints.jumps import JumpDetector
from discrepancy.analysis.online import StreamingJumps

W, THR = 15, 6.0
WARMUP = 6 * W + 7  # values before the stream's first judgement (two windows, the median, 3w past statistics)


def streamed(y: np.ndarray) -> list[int]:
    det = StreamingJumps(window=W, threshold=THR)
    for i, v in enumerate(y):
        det.update(i, float(v))
    return [c.step for c in det.located]


def offline(y: np.ndarray) -> list[int]:
    """The offline window test at the same window and threshold (no confirmation at 2w, no permutation test)."""
    return JumpDetector(window=W, threshold=THR, confirm=False, alpha=0).fit(y).predict().indices


def matched(a: list[int], b: list[int], margin: int) -> int:
    used: set[int] = set()
    for x in a:
        for j, y in enumerate(b):
            if j not in used and abs(x - y) <= margin:
                used.add(j)
                break
    return len(used)


def test_clear_steps_found_at_the_same_step() -> None:
    rng = np.random.default_rng(2024)
    y = rng.standard_normal(800)
    for at, size in ((200, 10.0), (420, -12.0), (650, 8.0)):
        y[at:] += size
    assert streamed(y) == offline(y) == [200, 420, 650]


@pytest.mark.parametrize("generator", ["synthetic", "synthetic2"])
def test_streaming_agrees_with_offline(generator: str) -> None:
    rng = np.random.default_rng(777 if generator == "synthetic" else 778)  # held out: never used while building
    agree = on_total = off_total = 0
    for _ in range(40):
        n = int(rng.integers(300, 1500))
        if generator == "synthetic":
            y = synthetic.training_curve(n, rng, "steps").signal
        else:
            y = synthetic2.curve(n, rng, noise=str(rng.choice(["gauss", "laplace", "t2.5", "ar1"])), ema=False).signal
        margin = max(5, n // 200)
        off = [j for j in offline(y) if j >= WARMUP]  # the stream judges nothing before its warm-up
        on = streamed(y)
        agree += matched(on, off, margin)
        on_total, off_total = on_total + len(on), off_total + len(off)
    assert off_total >= 15  # the curves do hold changes
    assert agree / on_total >= 0.8 and agree / off_total >= 0.8, (agree, on_total, off_total)


def test_gaps_are_skipped_not_jumps() -> None:
    rng = np.random.default_rng(9)
    y = rng.standard_normal(600)
    y[300:340] = np.nan
    assert streamed(y) == []
