"""Plateaus of logged series (SPEC §4): long flat stretches, usually ended by a drop.

A step is *flat* when the least-squares slope of the spike-filtered signal over a centred window of m steps is below
``z`` standard errors (SE from the robust noise scale σ̂) and the estimated drift over a minimum-length plateau,
|slope|·min_length, stays below ``max_drift``·σ̂ (without it, a long window calls any slow trend significant and a
short one calls it flat; the drift bound says "flat" means "moves less than the noise"). The t-statistic of a slope does not change when the axis is
rescaled, so "slope per unit log-step below z·SE" and "slope per step below z·SE" flag the same steps; only the
window differs, and m is tied to the shortest plateau. Windows never straddle a detected jump, so a plateau ends
exactly where its drop happens. A plateau is a maximal run of flat steps of at least ``min_length`` (5 % of the run
by default: a plateau is long by definition), with short interruptions (< m/2) bridged. Each such run is then
tested over its whole length (``_confirmed``): a trend too slow to show in m steps but significant over the run is
not a plateau; a run that is flat in one part and trending in another is split where a two-line fit says so.

Why by hand: no library segments "flat versus trending"; ruptures finds changes in mean, not stretches of zero
slope. The pieces are cumulative sums and a median filter, O(n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from discrepancy.analysis.changepoints.jumps import JumpDetector, JumpResult, window_sums
from discrepancy.analysis.changepoints.noise import robust_sigma


def default_min_plateau(n: int) -> int:
    """Shortest stretch called a plateau: 5 % of the run, at least 10 steps (a plateau is *long* by definition).

    The detector's rule; the synthetic ground truth (``synthetic``) labels plateaus with the same length."""
    return max(10, n // 20)


@dataclass(frozen=True)
class Plateau:
    """One plateau: half-open [start, end) in input positions, its median level, and the drop that ended it.

    ``drop`` = level just after the plateau − plateau level (negative for a loss that fell); NaN when the plateau
    runs to the end of the series. ``ended_by_jump`` says whether a detected jump closes it.
    """

    start: int
    end: int
    level: float
    drop: float
    ended_by_jump: bool


def _centred_slope(y: np.ndarray, m: int) -> np.ndarray:
    """|OLS slope| over the m points centred on each position; positions within m/2 of an edge take the nearest value."""
    n = y.size
    if n < m or m < 3:
        return np.zeros(n)
    _, sum_xy = window_sums(y, m)  # [n-m+1]
    t = np.abs(sum_xy) / (m * (m * m - 1) / 12.0)  # [n-m+1]
    lead = m // 2
    return np.concatenate((np.full(lead, t[0]), t, np.full(n - t.size - lead, t[-1])))  # [n]


def _clipped(x: np.ndarray, xf: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` with residuals from its running median clipped to ±3σ̂, centred on its mean: a spike cannot tilt a fit,
    and the noise left stays independent from step to step (a median-filtered series is correlated, so its slope SE
    would be wrong). Centring keeps the prefix sums below small (less cancellation on long series)."""
    c = 3.0 * max(sigma, 1e-12)
    y = xf + np.clip(x - xf, -c, c)  # [n]
    return y - y.mean()


class _Lines:
    """Least-squares lines over any rows [a, b) of one series in O(1) each, from prefix sums of y, t·y and y²
    (the sums of 1, t and t² have closed forms). Written by hand: a scan over every breakpoint needs all the
    two-piece fits at once, which np.polyfit (one fit per call) would make O(L²)."""

    def __init__(self, y: np.ndarray) -> None:
        t = np.arange(y.size, dtype=np.float64)
        self.cy, self.cty, self.cyy = (np.concatenate(([0.0], np.cumsum(v))) for v in (y, t * y, y * y))  # [n+1]

    def fit(self, a: np.ndarray | int, b: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(slope, residual sum of squares) of the line over rows [a, b)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        ia, ib = a.astype(np.int64), b.astype(np.int64)
        n = b - a
        st = (b * (b - 1) - a * (a - 1)) / 2.0
        stt = ((b - 1) * b * (2 * b - 1) - (a - 1) * a * (2 * a - 1)) / 6.0
        sy, sty, syy = self.cy[ib] - self.cy[ia], self.cty[ib] - self.cty[ia], self.cyy[ib] - self.cyy[ia]
        sxx = stt - st * st / n
        sxy = sty - st * sy / n
        slope = sxy / np.maximum(sxx, 1e-300)  # guard: a single row has sxx = 0
        return slope, np.maximum(syy - sy * sy / n - slope * sxy, 0.0)


def _confirmed(lines: _Lines, s: int, e: int, sigma: float, min_len: int, z: float, max_drift: float
               ) -> list[tuple[int, int]]:
    """Parts of the candidate rows [s, e) that pass the plateau test over their *whole* length.

    The local test sees m steps and cannot tell a slow trend from noise (a slope of σ/50 per step is invisible
    in 20 steps, plain over 150), so each candidate is tested as one interval: flat when |OLS slope| < z·SE with
    SE = σ̂·√(12/(L(L²−1))), or when the fitted drift across it, |slope|·L, is below ``max_drift``·σ̂ (a very
    long stretch makes even a drift smaller than the noise significant). One that fails is either a trend (no
    plateau in it) or a flat part next to a trending part: it is split at the breakpoint of the best two-line fit
    when that fit is significantly better than one line (ΔSSE/σ̂² > z² + 2 ln L, a scan threshold that grows with
    the number of breakpoints tried), and the parts are tested again; otherwise it is dropped. O(L) per level.
    """
    sig = max(sigma, 1e-12)  # guard: σ̂ = 0 on a constant stretch
    out: list[tuple[int, int]] = []
    stack = [(s, e)]
    while stack:
        a, b = stack.pop()
        length = b - a
        if length < min_len:
            continue
        slope, sse = (float(v) for v in lines.fit(a, b))
        se = sig * np.sqrt(12.0 / (length * (length * length - 1.0)))
        if abs(slope) < z * se or abs(slope) * length < max_drift * sig:
            out.append((a, b))
            continue
        ks = np.arange(a + min_len // 2, b - min_len // 2 + 1)  # breakpoints: both parts ≥ min_len/2 rows
        if ks.size == 0:
            continue
        pieces = lines.fit(a, ks)[1] + lines.fit(ks, b)[1]  # [len(ks)] SSE of the two-line fits
        best = int(np.argmin(pieces))
        if (sse - float(pieces[best])) / sig**2 > z * z + 2.0 * np.log(length):
            stack += [(int(ks[best]), b), (a, int(ks[best]))]
    return sorted(out)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open runs of True in a boolean mask."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


class PlateauDetector:
    """Plateau detector, ruptures-style: ``PlateauDetector().fit(y).predict() -> list[Plateau]``.

    Keyword-only parameters: ``min_length`` shortest plateau (default 5 % of n, ≥ 10), ``z`` slope threshold in
    standard errors (default 3), ``window`` slope window m (default 2·min_length), ``jumps`` a JumpResult to reuse
    (default: detected here), ``max_drift`` largest drift over min_length, and over a whole plateau whose slope is
    significant only because it is long, in units of σ̂ (default 1). Defaults
    chosen on the synthetic benchmark (seed 0) and checked on a held-out seed.
    """

    def __init__(
        self,
        *,
        min_length: int | None = None,
        z: float = 3.0,
        window: int | None = None,
        jumps: JumpResult | None = None,
        max_drift: float = 1.0,
    ) -> None:
        self.max_drift = max_drift
        self.min_length = min_length
        self.z = z
        self.window = window
        self.jumps = jumps
        self._y: np.ndarray | None = None

    def fit(self, signal: np.ndarray) -> PlateauDetector:
        """Store a 1-D series (NaNs are gaps: skipped, never part of a level)."""
        y = np.asarray(signal, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"plateaus are defined for 1-D series, got shape {y.shape}")
        self._y = y
        return self

    def predict(self) -> list[Plateau]:
        """Plateaus of the fitted series, in order."""
        if self._y is None:
            raise RuntimeError("call fit(signal) before predict()")
        keep = np.flatnonzero(np.isfinite(self._y))
        x = self._y[keep]  # [n] gaps removed
        n = x.size
        min_len = self.min_length or default_min_plateau(n)
        if n < max(min_len, 12):
            return []
        m = self.window or 2 * min_len
        jumps = self.jumps if self.jumps is not None else JumpDetector().fit(self._y).predict()
        pos = np.searchsorted(keep, jumps.indices)  # jump positions in the gap-free series
        sizes = dict(zip(pos.tolist(), np.atleast_1d(jumps.sizes).tolist()))
        xf = ndimage.median_filter(x, size=5, mode="nearest")  # isolated spikes do not tilt a slope
        bounds = [0, *sorted(sizes), n]
        out: list[Plateau] = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            seg = xf[a:b]
            sigma = robust_sigma(x[a:b])
            mm = min(m, seg.size)
            slope = _centred_slope(seg, mm)  # [b-a]
            se = max(sigma, 1e-12) * np.sqrt(12.0 / (mm * (mm * mm - 1.0)))  # guard: σ̂ = 0 on a constant stretch
            # flat = slope not significant AND (estimated) drift over a minimum-length plateau below max_drift·σ
            flat = (slope < self.z * se) & (slope * min_len < self.max_drift * max(sigma, 1e-12))
            lines = _Lines(_clipped(x[a:b], xf[a:b], sigma))
            for s, e in self._bridged(flat, m // 2):
                for s2, e2 in _confirmed(lines, s, e, sigma, min_len, self.z, self.max_drift):
                    out.append(self._plateau(x, xf, keep, a + s2, a + e2, b, sizes))
        return out

    @staticmethod
    def _bridged(flat: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
        """Runs of flat steps, joining runs separated by fewer than ``max_gap`` steps."""
        runs = _runs(flat)
        merged: list[tuple[int, int]] = []
        for s, e in runs:
            if merged and s - merged[-1][1] < max_gap:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged

    @staticmethod
    def _plateau(
        x: np.ndarray, xf: np.ndarray, keep: np.ndarray, s: int, e: int, seg_end: int, sizes: dict[int, float]
    ) -> Plateau:
        """The plateau over gap-free rows [s, e) of a segment ending at ``seg_end``, in input positions."""
        level = float(np.median(x[s:e]))
        ended_by_jump = e == seg_end and seg_end in sizes
        if ended_by_jump:
            drop = float(sizes[seg_end])  # the jump's own estimate: a level right after the drop, before any decay
        elif e < x.size:
            drop = float(np.median(xf[e : e + 10])) - level
        else:
            drop = float("nan")
        end = int(keep[e]) if e < keep.size else int(keep[-1]) + 1
        return Plateau(int(keep[s]), end, level, drop, bool(ended_by_jump))


def detect_plateaus(signal: np.ndarray) -> list[tuple[int, int]]:
    """Half-open intervals [start, end) of the plateaus of ``signal``, with defaults that need no tuning."""
    return [(p.start, p.end) for p in PlateauDetector().fit(signal).predict()]
