"""Jump sets of logged series (docs/definitions.md §4): where the level changes abruptly, with signed size and z-score.

The test is the one docs/definitions.md §4 describes: at each boundary t, fit a straight line to the ``w`` points
left of t and
another to the ``w`` points right of t, and compare their values at the boundary. Lines (not means) so that a steep
but smooth trend — early exponential decay — is not mistaken for a jump, and a kink (slope change) gives no signal.
Robustness, in order (after ``seasonal`` removed any seasonal swing, which all the tests would read as noise):

* a short running median first removes isolated spikes of up to three steps (outliers are not jumps) and tames
  heavy-tailed noise;
* the statistic is standardised by the local noise scale (robust, from first differences, over blocks of ~16
  windows) and one global calibration factor, so heteroscedastic noise and the effect of the median filter are
  taken from the data, not assumed;
* a candidate must be a local maximum above a threshold that grows like √(2 ln(n/w)) (the maximum of n/w roughly
  independent Gaussians), must be confirmed, with the same sign, at twice the window, and both of its line fits must
  fit (a jump *inside* a window bends its line and makes a ghost peak up to w steps away).

The window test needs thousands of points to reach its power (a 5σ step in 100 points: found in half the trials).
Every stretch of 8–1,000 points between the jumps it found (the whole series when none, and series too short for the
windows) is then tested as a whole by ``steptest``: a permutation test at level 5 % that the stretch holds a step.

Why by hand: every step is vectorised numpy/scipy (cumulative sums give all window fits in O(n)), so a million points
take well under a second. ruptures' Pelt/Binseg/Window search is quadratic or runs in Python (a 1 M series takes
minutes), has no trend-robust cost, and a penalty from the noise level alone over-segments real curves; they are the
baselines in ``benchmarks/bench_jumps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special

from discrepancy.analysis.changepoints.levels import jump_fraction, level_change, side_means, window_sums
from discrepancy.analysis.changepoints.logscale import log_transform, use_log_scale
from discrepancy.analysis.changepoints.noise import blockwise_mad_scale, local_scale, noise_floor, robust_sigma
from discrepancy.analysis.changepoints.peaks import chi2_to_gaussian_z, find_peaks
from discrepancy.analysis.changepoints.seasonal import deseasonalise
from discrepancy.analysis.changepoints.steptest import ALPHA, PERMUTATION_MIN, segment_jumps

MIN_POINTS = 12  # below this no window pair fits and no jump can be told from noise


@dataclass(frozen=True)
class JumpResult:
    """Detected jumps of one series (or one multivariate series).

    ``indices`` are positions in the input (NaN rows included) of the first point of the new level.
    ``sizes`` [K] (or [K, d] for a [T, d] input) are signed level changes; ``z_scores`` [K] their strength, signed
    like the size: the window test's standardised line statistic (Gaussian-equivalent for several columns), or for
    a jump of the stretch tests their statistic at the split (rank Z, t, or the two-line z); ``trend_breaks`` those indices that are level breaks on top of a
    trend (``trendstep``); ``periods`` the period of the seasonal swing removed from each column before the tests
    (0 where ``seasonal.find_period`` found none). ``jump_fraction`` = Σ|J| / total variation of the denoised signal
    (per column for 2-D input). ``sigma`` is the robust noise scale σ̂ = 1.4826·MAD(Δy)/√2 (per column).
    """

    indices: list[int]
    sizes: np.ndarray
    z_scores: np.ndarray
    jump_fraction: float | np.ndarray
    sigma: float | np.ndarray
    window: int
    n: int
    trend_breaks: list[int] = field(default_factory=list)  # the subset of ``indices`` found as breaks on a trend
    periods: list[int] = field(default_factory=list)  # per column, the seasonal period removed first (0: none)


def default_window(n: int) -> int:
    """Half-window w of the two-sided test: √n/2 clipped to [5, 50] (short runs resolve close jumps, long runs gain power)."""
    return int(np.clip(round(np.sqrt(max(n, 1)) / 2), 5, 50))


def default_threshold(n: int, window: int) -> float:
    """z threshold: ~ the expected maximum of n/w independent N(0,1) plus 2, never below 5.

    The margin is empirical: the statistic is a smooth correlated process with more upcrossings than n/w
    independent draws, and heavy tails survive the running median a little; with +1 / 4, pure heavy-tailed noise on a
    decay gave a false jump in 1 of 5 series of 3000 steps, with +2 / 5 in 1 of 20, at the same benchmark F1.
    """
    return float(max(5.0, np.sqrt(2.0 * np.log(max(n / window, 2.0))) + 2.0))


def line_jump_statistic(y: np.ndarray, w: int) -> np.ndarray:
    """d[t] = right-line value − left-line value at the boundary between t−1 and t, for t in [w, n−w]; NaN elsewhere.

    Each side is an ordinary least-squares line over ``w`` points, evaluated half a step outside its window; all
    fits come from two cumulative sums, O(n). Var d ≈ 8σ²/w for white noise of scale σ.
    """
    n = y.size
    out = np.full(n, np.nan)
    if n < 2 * w + 1 or w < 2:
        return out
    sum_y, sum_xy = window_sums(y, w)
    mean, slope = sum_y / w, sum_xy / (w * (w * w - 1) / 12.0)  # [n-w+1] each
    # boundary t in [w, n-w]: left window starts at t-w (index 0 .. n-2w), right window at t (index w .. n-w)
    left = mean[: n - 2 * w + 1] + slope[: n - 2 * w + 1] * (w / 2.0)  # left line at t − ½
    right = mean[w:] - slope[w:] * (w / 2.0)  # right line at t − ½
    out[w : n - w + 1] = right - left
    return out


def _standardise(d: np.ndarray, x: np.ndarray, w: int) -> np.ndarray:
    """z of the jump statistic ``d`` of series ``x``; NaN where d is NaN.

    Scale: the local noise σ̂(t) from first differences of x (``local_scale``: robust over blocks of 16 windows,
    many nearly independent samples, so it follows heteroscedastic noise) times √(8/w), the white-noise SE of d;
    then one global factor κ = robust scale of d / that SE calibrates what theory cannot know (the running median's
    effect on heavy-tailed noise, autocorrelation). Centre: the local median of d, which absorbs the small bias that
    curvature of a smooth trend leaves in the two line fits.
    """
    z = np.full(d.size, np.nan)
    ok = np.isfinite(d)
    if ok.sum() < 3:
        return z
    dx = np.diff(x)  # [n-1]
    dscale = local_scale(dx, 16 * w)  # [n-1]
    sparse = bool(np.any(dscale > blockwise_mad_scale(dx, 16 * w)[1]))  # MAD 0 on a noisy stretch: counts, minima
    sigma = np.append(dscale, dscale[-1]) / np.sqrt(2.0)  # [n] noise scale at each step
    se = np.maximum(sigma[ok], noise_floor(x)) * np.sqrt(8.0 / w)  # [k]
    centre = blockwise_mad_scale(d[ok], 16 * w)[0]
    r = (d[ok] - centre) / se
    kappa = float(local_scale(r, r.size)[0])
    # Guard: κ is ~0.7–1.3 on real noise; a smaller value means the "noise" is floating-point rounding of a constant
    # (e.g. a log-bin mean), and calibrating to it would turn 1e-20 differences into huge z-scores.
    # On sparse series the running median flattens the noise into rare steps of whole lattice units, so a small κ is
    # an artefact of the filter, not a quieter statistic: no credit below 1 there.
    kappa = max(kappa, 1.0 if sparse else KAPPA_MIN)
    z[ok] = r / kappa
    return z


KAPPA_MIN = 0.5
MIN_STEP_RATIO = 1.5  # a jump exceeds 1.5 × the median one-step move around it (``abrupt``)
LEVEL_SHARE = 0.5  # the medians either side must move by half what the lines say (``_scan``)
MAX_MISFIT = 16.0  # residual variance 16× the typical one: the window holds a level change (heavy tails reach ~9×)


def window_misfit(xf: np.ndarray, x: np.ndarray, w: int) -> np.ndarray:
    """Residual variance of the OLS line over every window [a, a+w) of ``xf``, in units of the typical one.

    RSS = Σy² − (Σy)²/w − (Σx̃y)²/Sxx from three cumulative sums, divided by the local noise variance (from first
    differences of the raw ``x``) and then by its median over all windows, so ≈ 1 where a line fits and ≫ 1 where
    the window straddles a jump. Returns [n−w+1].
    """
    n = xf.size
    sum_y, sum_xy = window_sums(xf, w)  # [n-w+1] each, of the median-centred series
    y = xf - np.median(xf)
    s2 = np.concatenate(([0.0], np.cumsum(y * y)))  # [n+1]
    rss = (s2[w:] - s2[:-w]) - sum_y**2 / w - sum_xy**2 / (w * (w * w - 1) / 12.0)
    dscale = local_scale(np.diff(x), 16 * w)  # [n-1] local scale of differences (≈ √2 σ)
    var = np.maximum(dscale[: n - w + 1] ** 2 / 2.0, 1e-300)
    ratio = np.maximum(rss, 0.0) / (w - 2) / var  # [n-w+1]
    typical = float(np.median(ratio))
    return ratio / typical if typical > 0 else np.zeros_like(ratio)


def _combine(zs: np.ndarray) -> np.ndarray:
    """Columns' z [n, d] → one Gaussian-equivalent |z| [n] via Σz² ~ χ²_d (signed z for d = 1)."""
    if zs.shape[1] == 1:
        return zs[:, 0]
    q = np.nansum(zs**2, axis=1)  # [n]
    return chi2_to_gaussian_z(q, zs.shape[1])


class JumpDetector:
    """Two-scale robust jump detector, ruptures-style: ``JumpDetector().fit(y).predict()``.

    Parameters (keyword-only): ``window`` half-window w (default from n), ``threshold`` z threshold (default from n
    and w), ``spike_width`` longest outlier run removed by the running median (default 3: a one- or two-step spike
    plus a heavy-tailed neighbour), ``confirm`` require the same jump at window 2w (default True), ``log_scale``
    search log(y + c) instead of y (True, False, or "auto": see ``use_log_scale``; sizes stay in units of y),
    ``min_step_ratio`` a jump must exceed this many times the median one-step move |Δy| around it (0 disables),
    ``alpha`` level of the permutation test run on every stretch of 8–1,000 points between the jumps found (and on
    series too short for the windows; ``steptest``); 0 disables it. ``trend_breaks`` then also tests, in the
    stretches between all the level changes found, a level break on top of a local trend (``trendstep``, same level;
    default True), 1-D input only. ``seasonal``: a seasonal swing (``seasonal.find_period``) is removed from each
    column first, so that no test reads it as noise (default True; a series without one is searched as it is).
    """

    def __init__(
        self,
        *,
        window: int | None = None,
        threshold: float | None = None,
        spike_width: int = 3,
        confirm: bool = True,
        log_scale: bool | str = False,
        min_step_ratio: float = MIN_STEP_RATIO,
        alpha: float = ALPHA,
        trend_breaks: bool = True,
        seasonal: bool = True,
    ) -> None:
        self.alpha = alpha
        self.seasonal = seasonal
        self.trend_breaks = trend_breaks
        self.window = window
        self.log_scale = log_scale
        self.min_step_ratio = min_step_ratio
        self.threshold = threshold
        self.spike_width = spike_width
        self.confirm = confirm
        self._y: np.ndarray | None = None

    def fit(self, signal: np.ndarray) -> JumpDetector:
        """Store a 1-D [T] or 2-D [T, d] series; rows with any NaN are skipped (a gap is not a jump)."""
        y = np.asarray(signal, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"signal must be 1-D [T] or 2-D [T, d], got shape {y.shape}")
        self._y = y
        return self

    def predict(self) -> JumpResult:
        """Detect jumps in the fitted series."""
        if self._y is None:
            raise RuntimeError("call fit(signal) before predict()")
        y2 = self._y[:, None] if self._y.ndim == 1 else self._y  # [T, d]
        self._trend_at: list[int] = []
        keep = np.flatnonzero(np.all(np.isfinite(y2), axis=1))  # positions of complete rows
        x = y2[keep]  # [n, d] gaps removed
        n, d = x.shape
        sigma = np.array([robust_sigma(x[:, j]) for j in range(d)])
        lin = x  # [n, d] the series in its own units (sizes, jump fraction)
        logged = self.log_scale is True or (self.log_scale == "auto" and all(use_log_scale(x[:, j]) for j in range(d)))
        if logged:
            x = np.stack([log_transform(x[:, j]) for j in range(d)], axis=1)
        periods = [0] * d
        if self.seasonal:
            # A seasonal swing is most of Δy and of a local line's residuals, the noise every test scales by; a level
            # change smaller than the swing hid in it (a monthly series' yearly cycle). Removed first, where found.
            parts = [deseasonalise(x[:, j]) for j in range(d)]
            periods = [p for _, p in parts]
            if any(periods):
                x = np.stack([v for v, _ in parts], axis=1)
                lin = lin if logged else x  # sizes without the swing
        w = self.window or default_window(n)
        peaks = self._scan(x, n, w) if n >= max(MIN_POINTS, 2 * w + 1) else np.zeros(0, dtype=np.int64)
        z = self._z1[peaks] if peaks.size else np.zeros(0)
        sizes = level_change(lin, peaks, w, self.spike_width) if peaks.size else np.zeros((0, d))
        if self.alpha > 0 and d == 1 and n >= PERMUTATION_MIN:
            floor = noise_floor(x[:, 0])
            short = segment_jumps(x[:, 0], peaks.tolist(), alpha=self.alpha, floor=floor)
            if self.trend_breaks:  # then breaks on a trend, between all the level changes: those stay as they were
                levels = sorted([*peaks.tolist(), *(s.index for s in short)])
                short += [s for s in segment_jumps(x[:, 0], levels, alpha=self.alpha, floor=floor, trend=True)
                          if s.method == "trend"]
                short.sort(key=lambda s: s.index)
            self._trend_at = [s.index for s in short if s.method == "trend"]
            if short:
                at = np.array([s.index for s in short], dtype=np.int64)
                bounds = np.r_[0, np.sort(np.r_[peaks, at]), n]
                size_short = np.array([[side_means(lin[:, 0], bounds, s.index) if s.method != "trend" or lin is not x
                                        else s.size] for s in short])  # [k, 1]
                # the test's own statistic, not −Φ⁻¹(p/2): a permutation p-value stops at 1/2000 (z 3.48 for all)
                stat = np.array([abs(s.statistic) for s in short])
                z_short = np.sign(size_short[:, 0]) * np.where(  # a noiseless stretch's t is infinite: its p then
                    np.isfinite(stat), stat, -special.ndtri(np.array([s.p_value for s in short]) / 2.0))
                order = np.argsort(np.r_[peaks, at], kind="stable")
                peaks = np.r_[peaks, at][order]
                sizes, z = np.r_[sizes, size_short][order], np.r_[z, z_short][order]
        res = self._result(list(keep[peaks]), sizes, z, lin, sigma, w, n, peaks)
        res.trend_breaks.extend(int(keep[i]) for i in self._trend_at)
        res.periods.extend(periods)
        return res

    def _scan(self, x: np.ndarray, n: int, w: int) -> np.ndarray:
        """The two-window line test (the module docstring): peaks of |z| confirmed, unbent and abrupt."""
        d = x.shape[1]
        k = 2 * self.spike_width + 1
        xf = ndimage.median_filter(x, size=(k, 1), mode="nearest") if self.spike_width > 0 else x  # [n, d]
        d1 = np.stack([line_jump_statistic(xf[:, j], w) for j in range(d)], axis=1)  # [n, d]
        z1 = _combine(np.stack([_standardise(d1[:, j], x[:, j], w) for j in range(d)], axis=1))  # [n]
        self._d1, self._z1 = d1, z1
        thr = self.threshold if self.threshold is not None else default_threshold(n, w)
        peaks = find_peaks(np.nan_to_num(np.abs(z1)), height=thr, distance=w)
        if self.confirm and peaks.size:
            peaks = self._confirmed(x, xf, peaks, z1, w, thr)
        if peaks.size:
            peaks = self._unbent(x, xf, peaks, w)
        if peaks.size and self.min_step_ratio > 0:
            peaks = peaks[abrupt(x, d1, peaks, w, self.min_step_ratio)]
        if peaks.size and LEVEL_SHARE > 0:
            level = level_change(x, peaks, w, self.spike_width, filtered=xf)  # [k, d]
            d = d1[peaks]
            peaks = peaks[np.any((np.sign(level) == np.sign(d)) & (np.abs(level) >= LEVEL_SHARE * np.abs(d)), axis=1)]
        return peaks

    @staticmethod
    def _confirmed(x: np.ndarray, xf: np.ndarray, peaks: np.ndarray, z1: np.ndarray, w: int, thr: float) -> np.ndarray:
        """Keep peaks that reappear with the same sign within ±w/2 at window 2w (or, where 2w does not fit, at thr+2)."""
        w2 = 2 * w
        z2 = _combine(
            np.stack([_standardise(line_jump_statistic(xf[:, j], w2), x[:, j], w2) for j in range(xf.shape[1])], axis=1)
        )
        keep = []
        half = max(1, w // 2)
        for p in peaks:
            near = z2[max(0, p - half) : p + half + 1]
            near = near[np.isfinite(near)]
            if near.size == 0:
                keep.append(abs(z1[p]) >= thr + 2.0)
                continue
            best = near[np.argmax(np.abs(near))]
            same_sign = xf.shape[1] > 1 or np.sign(best) == np.sign(z1[p])
            keep.append(bool(same_sign and abs(best) >= 0.75 * thr))
        return peaks[np.array(keep, dtype=bool)]

    def _unbent(self, x: np.ndarray, xf: np.ndarray, peaks: np.ndarray, w: int) -> np.ndarray:
        """Drop peaks whose left or right line fit leaves MAX_MISFIT× the typical residual variance."""
        misfit = np.mean([window_misfit(xf[:, j], x[:, j], w) for j in range(x.shape[1])], axis=0)  # [n-w+1]
        off = self.spike_width + 1  # hold the windows off the boundary: the running median can move an edge
        left = misfit[np.maximum(peaks - w - off, 0)]
        right = misfit[np.minimum(peaks + off, misfit.size - 1)]
        return peaks[(left < MAX_MISFIT) & (right < MAX_MISFIT)]

    def _result(
        self, idx: list, sizes: np.ndarray, z: np.ndarray, x: np.ndarray, sigma: np.ndarray, w: int, n: int,
        peaks: np.ndarray | None = None,
    ) -> JumpResult:
        at = [] if peaks is None else list(peaks)
        frac = np.array([jump_fraction(x[:, j], at, sizes[:, j], w) for j in range(x.shape[1])])  # [d]
        one = self._y is not None and self._y.ndim == 1
        return JumpResult(
            indices=[int(i) for i in idx],
            sizes=sizes[:, 0] if one else sizes,
            z_scores=np.asarray(z, dtype=np.float64),
            jump_fraction=float(frac[0]) if one else frac,
            sigma=float(sigma[0]) if one else sigma,
            window=int(w),
            n=int(n),
        )


def abrupt(x: np.ndarray, d: np.ndarray, peaks: np.ndarray, w: int, ratio: float) -> np.ndarray:
    """Mask of peaks whose size |d| exceeds ``ratio`` × the median one-step move |Δx| over the 2w steps around them.

    An abrupt change is one no ordinary step makes. On a smooth but fast curve (an integrated quantity such as the
    LoRA weight norm, which grows by 0.02–0.07 every step) small slope changes bend the line fits into "jumps"
    smaller than a single ordinary increment; the noise scale from MAD(Δx) cannot see that, since the increments
    themselves vary little. For white noise median|Δx| ≈ 0.95σ, below any jump the z threshold lets through; for
    [n, d] input a peak is kept when any column passes.
    """
    n, keep = x.shape[0], np.zeros(peaks.size, dtype=bool)
    for i, p in enumerate(peaks):
        moves = np.abs(np.diff(x[max(0, p - w) : min(n, p + w)], axis=0))  # [≤2w-1, d]
        moves = np.delete(moves, min(p, w) - 1, axis=0) if moves.shape[0] > 1 else moves  # not the boundary move
        keep[i] = bool(np.any(np.abs(d[p]) > ratio * np.median(moves, axis=0)))
    return keep


def detect_jumps(signal: np.ndarray) -> list[int]:
    """Indices where the level of ``signal`` ([T] or [T, d]) jumps, with defaults that need no tuning."""
    return JumpDetector().fit(signal).predict().indices
