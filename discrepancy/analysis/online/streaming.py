"""Streaming level-change detection: the offline jump detector's window test, evaluated as each step arrives.

The statistic is ``changepoints.jumps``' (docs/changepoints.md, "the window test"): a running median of
2·spike_width + 1 points removes spikes, then at boundary t the straight line fitted to the w filtered points left
of t and the line fitted to the w points right of t disagree at t − ½ by d; d is standardised by the noise scale σ̂ =
1.4826·MAD(Δy)/√2 of the raw values (``noise.robust_sigma``, floored by ``noise.noise_floor``) times √(8/w), then
centred and scaled by the robust centre and scale κ of its own past values (the offline test's global calibration,
here taken from the past only); a change must also be *abrupt* (|d| > 1.5 × the median one-step move around it), and
neither line may leave 16× the typical residual variance (a change inside a window bends its line: a ghost). In
place of the offline confirmation at window 2w, the right window's line may not undo more than half the change
(``REVERT``): an outlier logged through an EMA is a jump followed by a decay, not a new level.

Online, boundary t can be judged once its right window is complete: the newest value is the last point of the right
window after the running median's own lag, so a change at t is judged at step t + w + spike_width. The threshold is
a fixed |z| (default 6, about one false alarm per 10,000 steps of noise in ``benchmarks/bench_early_warning.py``,
where the offline default, ≥ 5 with a confirmation at 2w, was not usable: a confirmation at 2w would double the
delay). After a detection the series is quiet for 2w steps and until |z| falls back below the threshold; the change
is located at the boundary of largest |z| within that stretch (``located``).

Why by hand: the offline detector's arrays are built for a whole series at once; here each step costs a 7-point
median, two 15-point dot products and, every w steps, a MAD over the last 16·w values.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from discrepancy.analysis.changepoints.jumps import KAPPA_MIN, MAX_MISFIT, MIN_STEP_RATIO
from discrepancy.analysis.changepoints.noise import MAD_TO_SIGMA, noise_floor, robust_sigma

# The largest share of a change its right window's line may undo over the window (instead of the offline test's
# confirmation at 2w, which would double the delay): an outlier logged through an EMA is a jump followed by a decay.
REVERT = 0.5


@dataclass(frozen=True)
class LevelChange:
    """A level change seen while streaming: ``step`` the first step of the new level (the boundary of largest |z|
    so far), ``detected`` the step whose value made |z| cross the threshold, ``size`` the signed line difference."""

    step: int
    detected: int
    z: float
    size: float


class StreamingJumps:
    """The window test of one series, one value at a time: ``update(step, value)`` returns a LevelChange when the
    newest value completes a boundary whose |z| crosses ``threshold`` (None otherwise). NaN/inf values are skipped
    (a gap is not a jump), as the offline detector skips them."""

    def __init__(self, *, window: int = 15, threshold: float = 6.0, spike_width: int = 3,
                 min_step_ratio: float = MIN_STEP_RATIO) -> None:
        self.w, self.threshold, self.k, self.ratio = window, threshold, 2 * spike_width + 1, min_step_ratio
        w = window
        self.xc = np.arange(w, dtype=np.float64) - (w - 1) / 2.0  # [w] centred positions of a window
        self.sxx = w * (w * w - 1) / 12.0
        self.raw: deque[float] = deque(maxlen=16 * w)  # raw values: the noise scale
        self.rsteps: deque[int] = deque(maxlen=self.k)  # the steps of the newest raw values
        self.filt: deque[float] = deque(maxlen=2 * w)  # running-median values: the two windows
        self.fsteps: deque[int] = deque(maxlen=2 * w)  # the step of each filtered value
        self.past_r: deque[float] = deque(maxlen=64 * w)  # past unscaled statistics: centre and κ
        self.misfits: deque[float] = deque(maxlen=16 * w)  # past residual variances of the right window's line
        self.typical_misfit = math.nan
        self.warmup = 3 * w  # past statistics needed before κ is trusted
        self.sigma = math.nan
        self.centre, self.kappa = 0.0, 1.0
        self.count = 0
        self.quiet_until = -1  # count below which no new change is reported
        self.hot = False  # |z| is still above the threshold after a detection
        self.located: list[LevelChange] = []  # every change, its location refined over the quiet stretch

    def update(self, step: int, value: float) -> LevelChange | None:
        """Add one step's value; the LevelChange it reveals, if any."""
        if not math.isfinite(value):
            return None
        self.raw.append(float(value))
        self.rsteps.append(int(step))
        self.count += 1
        if len(self.raw) < self.k:
            return None
        recent = sorted(list(self.raw)[-self.k:])  # the running median, centred on the point k//2 steps back
        self.filt.append(recent[self.k // 2])
        self.fsteps.append(self.rsteps[-1 - self.k // 2])  # the step the median is centred on
        if len(self.filt) < 2 * self.w:
            return None
        return self._judge(step)

    def _judge(self, step: int) -> LevelChange | None:
        w = self.w
        y = np.fromiter(self.filt, dtype=np.float64, count=2 * w)  # [2w] left window, then right window
        left, right = y[:w], y[w:]
        d = (right.mean() - (right @ self.xc) / self.sxx * (w / 2.0)) - (left.mean() + (left @ self.xc) / self.sxx
                                                                         * (w / 2.0))
        rc = right - right.mean()
        self.misfits.append(float(rc @ rc - (right @ self.xc) ** 2 / self.sxx))  # RSS of the right window's line
        if self.count % w == 0 or not math.isfinite(self.sigma):
            self._recalibrate()
        r = d / (self.sigma * math.sqrt(8.0 / w))
        z = (r - self.centre) / self.kappa
        self.past_r.append(r)
        boundary = self.fsteps[w]
        if self.hot:
            self._refine(boundary, z)
            if abs(z) < self.threshold and self.count >= self.quiet_until:
                self.hot = False
            return None
        if len(self.past_r) <= self.warmup or abs(z) < self.threshold or not self._abrupt(d) or self._bent():
            return None
        if -math.copysign(1.0, d) * (right @ self.xc) / self.sxx * w > REVERT * abs(d):
            return None  # the new level is already going back: a smoothed spike, not a level change
        change = LevelChange(boundary, step, float(z), float(d))
        self.located.append(change)
        self.hot, self.quiet_until = True, self.count + 2 * w
        return change

    def _refine(self, boundary: int, z: float) -> None:
        """Move the last change to this boundary when its |z| is larger (same sign) within the quiet stretch."""
        last = self.located[-1]
        if self.count < self.quiet_until and abs(z) > abs(last.z) and np.sign(z) == np.sign(last.z):
            self.located[-1] = LevelChange(boundary, last.detected, float(z), last.size)

    def _recalibrate(self) -> None:
        """σ̂ of the raw values, and the centre and κ of the past statistics (every w values: they move slowly)."""
        raw = np.fromiter(self.raw, dtype=np.float64, count=len(self.raw))
        self.sigma = max(robust_sigma(raw), noise_floor(raw))
        if len(self.past_r) > self.warmup:
            past = np.fromiter(self.past_r, dtype=np.float64, count=len(self.past_r))
            self.centre = float(np.median(past))
            self.kappa = max(MAD_TO_SIGMA * float(np.median(np.abs(past - self.centre))), KAPPA_MIN)
            self.typical_misfit = float(np.median(np.fromiter(self.misfits, dtype=np.float64)))

    def _bent(self) -> bool:
        """Whether the left or right line fit leaves MAX_MISFIT × the typical residual variance (``jumps._unbent``):
        a change *inside* a window bends its line and makes a ghost crossing up to w steps before the change."""
        if len(self.misfits) <= self.w or not self.typical_misfit > 0:
            return False
        limit = MAX_MISFIT * self.typical_misfit
        return self.misfits[-1] >= limit or self.misfits[-1 - self.w] >= limit

    def _abrupt(self, d: float) -> bool:
        """|d| above ``ratio`` × the median one-step move of the raw values around the boundary (``jumps.abrupt``)."""
        if self.ratio <= 0:
            return True
        span = 2 * self.w + self.k // 2
        raw = np.fromiter(self.raw, dtype=np.float64, count=len(self.raw))[-span:]
        moves = np.abs(np.diff(raw))
        return abs(d) > self.ratio * float(np.median(moves))
