"""Plateaus and converged tails of logged series (docs/definitions.md §4), estimated from noisy data.

The definitions are in ``truth`` (the same rules label the synthetic benchmarks): a plateau is the maximal stretch
before a transition over which the level stays within b = min(2σ, |D|/4) of the level the transition leaves from (D
the transition's size, σ the noise scale); a converged tail is the final stretch within b of the final level, after
the curve moved. Estimation, in order:

1. **Level.** The series is reduced to ≤ ``MAX_POINTS`` block medians (plateaus are ≥ 5 % of the run, so 500
   blocks lose nothing) and smoothed inside each stretch between detected jumps by a running median, then a
   running mean, of h = min_length/4 blocks: spikes and heavy tails do not move a median, jumps stay sharp.
2. **Noise.** σ̂ is the robust scale (MAD) of the residuals from that level, per tenth of the run, so it follows
   heteroscedastic noise, and — unlike first differences — counts autocorrelated and EMA-smoothed noise at the size
   it has in the signal. The level's own standard error SE = 1.25·σ̂/√(h·f) (f points per block) is a floor on the
   band: the estimate's noise alone cannot end a plateau.
3. **Scan.** For every candidate end e and length L: the deviation Dev(e, L) = max |level(t) − level(e−1)| over the L
   points before e, and the transition D(e, L) = the largest move of the level away from level(e−1) within the L
   points from e on — a transition takes at most as long as the plateau it ends (a slow trend, whose "transition"
   takes longer, is never a plateau). e ends a plateau of length L when Dev(e, L) ≤ max(min(2σ̂, |D|/4), 3·SE),
   |D| ≥ 3σ̂ and |D| ≥ 5·√2·SE (the transition is real), and L ≥ min_length. Adjacent valid ends form one plateau,
   from the earliest start to the last end, which is where the level leaves the band: the start is where the decay
   before it has come within the band of the plateau's final level. An end within one block of a detected jump is
   moved onto the jump.
4. **Converged tail.** The same band around the final level, with D the larger of the last transition and the largest
   excursion of the level after it; reported as ``converged_from`` when the curve moved (|D| ≥ 3σ̂) and the tail is
   at least min_length long — never as a plateau.

Why by hand: no library segments "stalls before transitions"; ruptures finds changes in mean or slope, not bands.
The scan is two [m, m] arrays of running maxima (m ≤ 500): a few ms per series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from discrepancy.analysis.changepoints.axes import block_medians
from discrepancy.analysis.changepoints.jumps import JumpDetector, JumpResult
from discrepancy.analysis.changepoints.noise import local_mad, piecewise_residuals
from discrepancy.analysis.changepoints.truth import C_SIGMA, HORIZON, RHO, default_min_plateau

__all__ = ["Plateau", "PlateauDetector", "PlateauResult", "default_min_plateau", "detect_plateaus"]

MAX_POINTS = 500
MIN_SERIES = 30  # fewer points hold no plateau of 10 points with a transition after it
SIGMA_WINDOW = 50
WIDEN = True
SPIKE_MEDIAN = 7  # the narrowest running median: removes spikes of up to 3 points
ONSET_SHARE = 0.9  # the transition's onset: the last end with ≥ 90 % of the move still ahead
SE_BAND = 3.0  # the band is at least 3 standard errors of the level
Z_TRANSITION = 5.0  # a transition moves the level by at least 5 standard errors of a difference of two levels
TRANSITION_SIGMA = 4.0  # ... and by at least 4σ̂ (set on the development seeds of both generators, between 3 and 6)


@dataclass(frozen=True)
class Plateau:
    """One plateau: half-open [start, end) in input positions, its median level, and the change that ended it.

    ``drop`` = level just after the plateau's transition − plateau level (negative for a loss that fell).
    ``ended_by_jump`` says whether a detected jump closes it.
    """

    start: int
    end: int
    level: float
    drop: float
    ended_by_jump: bool


@dataclass(frozen=True)
class PlateauResult:
    """Plateaus in order, the first input position of the converged tail (None: the curve did not converge, or never
    moved), and the noise scale σ̂ the bands were built from (median over the run, in the series' units)."""

    plateaus: list[Plateau]
    converged_from: int | None
    sigma: float
    notes: list[str] = field(default_factory=list)


def _level(x: np.ndarray, cuts: list[int], med: int, mean: int) -> np.ndarray:
    """Running median of width ``med``, then running mean of width ``mean``, of ``x`` [m], separately inside each
    stretch between ``cuts``. A median keeps steps and ramps as they are and removes any bump narrower than half
    its width: a spike, and the slow tail an EMA gives a spike."""
    out = np.empty_like(x)
    bounds = [0, *cuts, x.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = x[a:b]
        out[a:b] = _truncated(_truncated(seg, min(med, seg.size), np.median), max(1, min(mean, seg.size)), np.mean)
    return out


def _truncated(y: np.ndarray, k: int, fn) -> np.ndarray:
    """Running ``fn`` (np.median or np.mean) over k centred points, the window cut at both ends rather than padded:
    padding with the end value (scipy's "nearest") would pull the last k/2 estimates toward one noisy point."""
    if k <= 1:
        return y.copy()
    inner = (ndimage.median_filter if fn is np.median else ndimage.uniform_filter1d)(y, size=k, mode="nearest")
    half = k // 2
    for i in [*range(min(half, y.size)), *range(max(half, y.size - half), y.size)]:  # ≤ k edge points, k ≤ ~100
        inner[i] = fn(y[max(0, i - half) : i + half + 1])
    return inner


def _back_deviation(f: np.ndarray) -> np.ndarray:
    """Dev [m+1, m+1]: Dev[e, L] = max_{1≤l≤L} |f[e−l] − f[e−1]| (inf where e − L < 0)."""
    m = f.size
    e = np.arange(m + 1)[:, None]  # [m+1, 1]
    idx = e - np.arange(1, m + 1)[None, :]  # [m+1, m] index e − l
    anchor = f[np.clip(e - 1, 0, m - 1)]  # [m+1, 1]
    dev = np.where(idx >= 0, np.abs(f[np.clip(idx, 0, m - 1)] - anchor), np.inf)  # [m+1, m]
    out = np.full((m + 1, m + 1), np.inf)
    out[:, 0] = 0.0
    out[:, 1:] = np.maximum.accumulate(dev, axis=1)
    return out


def _forward_move(f: np.ndarray, jumps: dict[int, float], min_len: int) -> np.ndarray:
    """D [m+1, m+1]: for a plateau of length L ending at e, the signed move f[e+h] − f[e−1] of largest size over
    h < ⌈L·HORIZON⌉: a transition is sudden, it makes its move within half the plateau's length (a slow trend,
    however long, never does). 0 for L = 0 and after the last point.

    A move counts only when the level is still at least half as far away at its horizon: the level is
    median-filtered, so a spike is no move, and an EMA-smoothed spike, a dip that recovers, is none either.
    ``jumps`` {reduced index: size}: a move never looks past the first jump at or after e, and a jump at e moves
    the level by its own size (the jump detector's two-line estimate), not by what the curve does after it.
    """
    m = f.size
    e = np.arange(m + 1)[:, None]
    cuts = np.array([*sorted(jumps), m - 1, m - 1], dtype=np.int64)  # the end stops every move
    stop = cuts[np.minimum(np.searchsorted(cuts, np.arange(m + 1)), cuts.size - 1)][:, None]  # [m+1, 1] first cut ≥ e
    idx = np.minimum(np.clip(e + np.arange(m)[None, :], 0, m - 1), stop)  # [m+1, m]
    move = f[idx] - f[np.clip(e - 1, 0, m - 1)]  # [m+1, m]: move h steps after the end
    for c, size in jumps.items():
        move[c, :] = size
    move[m, :] = 0.0  # no transition after the last point
    best = np.maximum.accumulate(np.abs(move), axis=1)
    at = np.maximum.accumulate(np.where(np.abs(move) >= best, np.arange(m)[None, :], 0), axis=1)
    signed = np.take_along_axis(move, at, axis=1)  # [m+1, m]: largest move within the first h+1 steps
    lengths = np.arange(m + 1)
    cols = np.clip(np.ceil(lengths * HORIZON).astype(np.int64) - 1, 0, m - 1)  # [m+1] quick horizon − 1
    quick = signed[:, cols]
    # the level stays moved (a new level, not a dip that recovers): at least half as far away a minimum plateau
    # length after the end, and still a plateau's length later (an EMA-smoothed spike decays back over many steps)
    late = np.abs(move[:, np.maximum(cols, min_len - 1).clip(max=m - 1)])  # [m+1, m+1]
    back = np.abs(move[:, np.maximum(lengths, 2 * min_len).clip(max=m) - 1])  # [m+1, m+1]
    lasting = np.minimum(late, back) >= 0.5 * np.abs(quick)
    # a jump's row holds its size for every h; look at the level itself after it (up to the next jump)
    after = cuts[np.minimum(np.searchsorted(cuts, np.arange(m + 1), side="right"), cuts.size - 1)]  # first cut > e
    for c, size in jumps.items():
        later = f[min(c + min_len - 1, m - 1, int(after[c]))] - f[max(c - 1, 0)]
        lasting[c] = later * np.sign(size) >= 0.5 * abs(size) or c + min_len - 1 >= m
    quick = np.where(lasting, quick, 0.0)
    quick[:, 0] = 0.0
    return quick


class PlateauDetector:
    """Plateau detector, ruptures-style: ``PlateauDetector().fit(y).predict() -> list[Plateau]``; ``analyse()`` also
    gives the converged tail.

    Keyword-only parameters: ``min_length`` shortest plateau or tail (default 5 % of n, ≥ 10), ``jumps`` a
    JumpResult of the same series to reuse (default: detected here), ``rho`` and ``c_sigma`` the band's share of the
    transition and multiple of the noise (the definition's 1/4 and 2; change them to change what "flat" means).
    """

    def __init__(self, *, min_length: int | None = None, jumps: JumpResult | None = None, rho: float = RHO,
                 c_sigma: float = C_SIGMA) -> None:
        self.min_length = min_length
        self.jumps = jumps
        self.rho = rho
        self.c_sigma = c_sigma
        self._y: np.ndarray | None = None

    def fit(self, signal: np.ndarray) -> PlateauDetector:
        """Store a 1-D series (NaNs are gaps: skipped, never part of a level)."""
        y = np.asarray(signal, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"plateaus are defined for 1-D series, got shape {y.shape}")
        self._y = y
        return self

    def predict(self) -> list[Plateau]:
        """Plateaus of the fitted series, in order (the converged tail is not one: see ``analyse``)."""
        return self.analyse().plateaus

    def analyse(self) -> PlateauResult:
        """Plateaus, converged tail and noise scale of the fitted series."""
        if self._y is None:
            raise RuntimeError("call fit(signal) before predict()")
        keep = np.flatnonzero(np.isfinite(self._y))
        x = self._y[keep]  # [n] gaps removed
        n = x.size
        min_len = self.min_length or default_min_plateau(n)
        if n < max(MIN_SERIES, 2 * min_len) or np.ptp(x) == 0:
            return PlateauResult([], None, 0.0)  # too short, or constant by construction: neither
        jumps = self.jumps if self.jumps is not None else JumpDetector().fit(self._y).predict()
        # a break on top of a trend lies inside a decay or a rise, not between levels: no plateau ends there
        on_trend = set(jumps.trend_breaks)
        level = [(i, sz) for i, sz in zip(jumps.indices, np.atleast_1d(jumps.sizes).tolist()) if i not in on_trend]
        jump_rows = np.searchsorted(keep, [i for i, _ in level]).tolist()  # positions in the gap-free series
        sizes = dict(zip(jump_rows, [sz for _, sz in level]))
        red = block_medians(x, MAX_POINTS)
        f_rows = int(np.ceil(n / red.values.size))
        at = {int(np.searchsorted(red.starts, r, side="left")): sizes[r] for r in jump_rows}  # first block of the new level
        cuts = sorted(set(at) - {0, red.values.size})
        med = max(SPIKE_MEDIAN, 2 * int(round(min_len / f_rows / 4)) + 1)  # half a plateau, odd, ≥ 7
        level = _level(red.values, cuts, med, max(1, int(round(min_len / f_rows / 8))))  # [m]
        sigma, se = self._noise(x, red.starts, min_len, med * f_rows, jump_rows)  # [m] each
        scan = _Scan(level, sigma, se, {c: at[c] for c in cuts}, rho=self.rho, c_sigma=self.c_sigma,
                     min_len=max(1, int(np.ceil(min_len / f_rows))))
        plats = [self._plateau(x, keep, red.starts, level, s, e, d, sizes) for s, e, d in scan.plateaus()]
        tail = scan.converged()
        converged = None if tail is None else int(keep[int(red.starts[tail])])
        return PlateauResult(plats, converged, float(np.median(sigma)))

    @staticmethod
    def _noise(x: np.ndarray, starts: np.ndarray, min_len: int, hw: int, jump_rows: list[int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Noise scale σ̂ of the input and standard error of the level (smoothed over ``hw`` input points), at each
        reduced point ([m] each). σ̂: MAD of the residuals from local parabolas over min_len points inside each
        stretch between jumps (a fit across a jump would count the jump as noise), over a running window of min_len
        points (``noise.local_mad``). Strongly autocorrelated noise (AR, EMA-smoothed) wanders over many steps, and a
        parabola over min_len points follows part of the wander: when the residuals' integrated autocorrelation time
        τ = (1 + φ̂)/(1 − φ̂) (φ̂ their lag-1 correlation) is more than min_len/4, the parabolas are widened to 4τ
        (at most 4·min_len) and σ̂ is the larger of the two."""
        w = max(5, min_len)
        bounds = [0, *sorted(r for r in jump_rows if 0 < r < x.size), x.size]
        resid = piecewise_residuals(x, bounds, w)
        ok = np.ones(x.size - 1, dtype=bool)
        ok[np.asarray(bounds[1:-1], dtype=np.int64) - 1] = False  # no pair across a jump
        a, b = resid[:-1][ok], resid[1:][ok]
        phi = float(np.clip(np.sum(a * b) / max(np.sum(a * a), 1e-300), 0.0, 0.99)) if a.size > 2 else 0.0
        tau = (1.0 + phi) / (1.0 - phi)
        k = max(w, min(x.size, SIGMA_WINDOW))  # at least 50 points: a median of fewer |r| is too noisy to take a min of
        sigma = local_mad(resid, starts, k)
        if WIDEN and 4.0 * tau > w:
            wide = piecewise_residuals(x, bounds, int(min(4 * w, 4 * tau)))
            sigma = np.maximum(sigma, local_mad(wide, starts, k))
        sigma = np.maximum(sigma, 1e-12 * max(1.0, np.max(np.abs(x))))
        return sigma, 1.25 * sigma / np.sqrt(max(1, hw))

    @staticmethod
    def _plateau(x: np.ndarray, keep: np.ndarray, starts: np.ndarray, level: np.ndarray, s: int, e: int,
                 drop: float, sizes: dict[int, float]) -> Plateau:
        """A plateau over reduced points [s, e) as input positions; its end snapped onto a jump within one block."""
        rows = np.append(starts, x.size)
        a, b = int(rows[s]), int(rows[e])
        near = [r for r in sizes if rows[max(0, e - 1)] <= r <= rows[min(e + 1, len(rows) - 1)]]
        ended_by_jump = bool(near)
        if near:
            b = min(near, key=lambda r: abs(r - b))
            drop = float(sizes[b])
        end = int(keep[b]) if b < keep.size else int(keep[-1]) + 1
        return Plateau(int(keep[a]), end, float(np.median(x[a:b])), float(drop), ended_by_jump)


class _Scan:
    """The scan of step 3 and the tail of step 4 over a reduced level [m] with its noise and standard error."""

    def __init__(self, level: np.ndarray, sigma: np.ndarray, se: np.ndarray, jumps: dict[int, float], *, rho: float,
                 c_sigma: float, min_len: int) -> None:
        self.f, self.sigma, self.rho, self.c, self.min_len = level, sigma, rho, c_sigma, min_len
        self.se = se / np.maximum(sigma, 1e-300)  # the level's standard error per unit of σ̂
        self.jumps = jumps
        self._found: list[tuple[int, int, float]] | None = None

    def _sigma_before(self, at: np.ndarray | int) -> np.ndarray:
        """σ̂ for a plateau ending at ``at``: the smaller of σ̂ there and one plateau length earlier, since the local
        lines near a transition (a sigmoid is not a line) inflate σ̂ around it, never inside the plateau."""
        at = np.asarray(at)
        return np.minimum(self.sigma[at], self.sigma[np.maximum(at - self.min_len, 0)])

    def _band(self, at: int, size: np.ndarray | float) -> np.ndarray:
        sig = self._sigma_before(at)
        return np.maximum(np.minimum(self.c * sig, self.rho * np.abs(size)), SE_BAND * self.se[at] * sig)

    def plateaus(self) -> list[tuple[int, int, float]]:
        """(start, end, D) of every plateau over reduced points, in order."""
        if self._found is not None:
            return self._found
        m = self.f.size
        dev = _back_deviation(self.f)  # [m+1, m+1]
        move = _forward_move(self.f, self.jumps, self.min_len)  # [m+1, m+1]
        lengths = np.arange(m + 1)[None, :]
        ends = np.clip(np.arange(m + 1) - 1, 0, m - 1)  # the anchor of each candidate end
        sig = self._sigma_before(ends)[:, None]
        se = self.se[ends][:, None] * sig
        band = np.maximum(np.minimum(self.c * sig, self.rho * np.abs(move)), SE_BAND * se)
        real = (np.abs(move) >= TRANSITION_SIGMA * sig) & (np.abs(move) >= Z_TRANSITION * np.sqrt(2.0) * se)
        ok = (dev <= band) & real & (lengths >= self.min_len) & (lengths <= np.arange(m + 1)[:, None])
        seen = np.arange(m + 1) <= m - max(1, self.min_len)  # the new level is seen for a plateau length
        seen[[c for c in self.jumps if c < m]] = True  # (a detected jump has been tested already)
        ok &= seen[:, None]
        best = np.where(ok.any(axis=1), m - np.argmax(ok[:, ::-1], axis=1), 0)  # [m+1] longest valid L per end
        valid = np.flatnonzero(best > 0)
        found: list[tuple[int, int, float]] = []
        for run in np.split(valid, np.flatnonzero(np.diff(valid) > 1) + 1) if valid.size else []:
            plateau = self._anchored(run, move[run, best[run]], floor=found[-1][1] if found else 0)
            if plateau is not None:
                found.append(plateau)
        self._found = found
        return found

    def _anchored(self, run: np.ndarray, moves: np.ndarray, floor: int) -> tuple[int, int, float] | None:
        """The plateau of one run of valid ends, anchored as the definition says: at the transition's onset, the
        last end from which the level still has ≥ 90 % of the run's largest move ahead of it; the band is then
        laid around the level there, back to where the decay before it enters the band and forward to where the
        transition leaves it."""
        sizes = np.abs(moves)
        k = int(np.flatnonzero(sizes >= ONSET_SHARE * sizes.max())[-1])
        onset, size = int(run[k]), float(moves[k])
        if onset <= floor:
            return None  # the same stall as the previous plateau, seen from a later end
        anchor = self.f[onset - 1]
        b = float(self._band(onset - 1, size))
        inside = np.abs(self.f - anchor) <= b  # [m]
        start = onset
        while start > floor and inside[start - 1]:
            start -= 1
        end = onset
        while end < self.f.size and inside[end] and end not in self.jumps:
            end += 1
        return (start, end, size) if end - start >= self.min_len else None

    def converged(self) -> int | None:
        """First reduced point of the converged tail, or None. The change it settled from: the largest excursion of
        the level from its final value since just before the last plateau's end or the last jump (so that
        transition counts), which must be a real move (as a transition must)."""
        m = self.f.size
        ends = [e for _, e, _ in self.plateaus()] + list(self.jumps)
        after = max([e - 1 for e in ends if e > 0], default=0)
        final = self.f[-1]
        size = float(np.max(np.abs(self.f[after:] - final)))
        sig = float(self._sigma_before(m - 1))
        if size < TRANSITION_SIGMA * sig or size < Z_TRANSITION * np.sqrt(2.0) * self.se[-1] * sig:
            return None
        outside = np.abs(self.f[::-1] - final) > float(self._band(m - 1, size))  # [m] from the end backwards
        length = int(np.argmax(outside)) if outside.any() else m
        return m - length if length >= self.min_len else None


def detect_plateaus(signal: np.ndarray) -> list[tuple[int, int]]:
    """Half-open intervals [start, end) of the plateaus of ``signal``, with defaults that need no tuning."""
    return [(p.start, p.end) for p in PlateauDetector().fit(signal).predict()]
