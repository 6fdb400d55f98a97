"""Level changes on top of a trend in short stretches: a discontinuity test between two local lines.

``steptest`` asks whether a stretch holds one level change between two *constant* levels; a trend breaks its
exchangeability null, and its abruptness rule (two levels must beat a line and a parabola) then rejects the stretch.
A rising curve that jumps up once more (a loss curve that drops while it is still decaying, a reward curve that
steps while it is still climbing, a real series whose level breaks under its trend) is such a stretch. Here the
question is the one the long-series window test asks, as a test with a stated level:

* **statistic** — at each split k (``min_side``: ⌈h/2⌉, at least 3 points each side), a straight line fitted to
  the h points left of k and one to the h points right of k (h = ⌈√n⌉, at least 4, shorter at the ends), both
  evaluated at k − ½: d(k) = right − left. A kink (slope change) gives d = 0 at the kink, a level break gives its
  size. z(k) = d(k) / (σ̂·√(v_L + v_R)), v the variance factor of each line's value at k − ½, σ̂ the noise around
  local lines (the median over all h-point windows of their residual variance, made unbiased for a Gaussian).
  T = max_k |z(k)|.
* **null and level** — no level break: a straight line plus Gaussian AR(1) noise (``noise_model``: ρ from the
  lag-1 autocorrelation of Δy; a series whose differences are positively correlated wanders like a random walk and
  is simulated as an integrated AR(1)). T is pivotal under that null (the same for every line and noise scale), so
  its distribution is simulated (2,000 draws, cached; lengths above 64 rounded up on a 2^(1/8) grid and ρ up to a
  multiple of 0.05, both of which only widen it). Real series and smoothed logs are autocorrelated: with a white-
  noise null a smooth GDP series had "breaks" at p = 0.003.
* **gate** — the test is only run on a stretch the exchangeable rank test has already rejected at the same level
  (``steptest``): on noise around one level the two together keep the rank test's false-alarm level (≤ α).
* **abrupt** (only removes detections) — as for the window test: the break exceeds ``MIN_MOVE_RATIO`` × the median
  one-step move around it (a random walk moves by its innovations, a smooth fast curve by its slope), the medians of
  the 3 points either side of k differ by at least half of d in its direction (the change happens at k), and the
  break survives, by half, a running median that removes outlier runs of up to ``spike_width`` points.

Written by hand: no library offers a two-line discontinuity scan with a finite-sample null; every fit is a handful
of cumulative sums, vectorised over splits and simulated draws.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal, stats

NULL_DRAWS = 2000
SIDE = 3  # a line needs 3 points to leave a residual
MIN_MOVE_RATIO = 1.5  # the break exceeds 1.5 × the median one-step move around it, as ``jumps.MIN_STEP_RATIO``
_NULL: dict[tuple[int, float, bool], np.ndarray] = {}


def half_window(n: int) -> int:
    """Points per local line: ⌈√n⌉, at least 4 (a line and 2 residual degrees of freedom)."""
    return int(max(4, np.ceil(np.sqrt(n))))


def _sums(y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative Σ1, Σx, Σx², Σy, Σxy, Σy² along the last axis, with a leading 0: [..., n+1] each."""
    n = y.shape[-1]
    x = np.arange(n, dtype=np.float64)
    pad = [(0, 0)] * (y.ndim - 1) + [(1, 0)]
    c = [np.pad(np.cumsum(v, axis=-1), pad) for v in (y, x * y, y * y)]
    base = [np.concatenate(([0.0], np.cumsum(v))) for v in (np.ones(n), x, x * x)]
    return (*base, *c)


def _line_at(sums: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray, x0: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value at x0, variance factor of that value, and RSS of the OLS line over [a, b) for each (a, b, x0)."""
    s0, sx, sxx, sy, sxy, syy = (s[..., b] - s[..., a] for s in sums)
    xm = sx / s0
    cxx = sxx - sx * xm
    slope = (sxy - sx * sy / s0) / cxx
    value = sy / s0 + slope * (x0 - xm)
    var = 1.0 / s0 + (x0 - xm) ** 2 / cxx
    rss = syy - sy * sy / s0 - slope * slope * cxx
    return value, var, np.maximum(rss, 0.0)


def _sigma(sums: tuple[np.ndarray, ...], n: int, h: int) -> np.ndarray:
    """Noise scale around local lines: median over the h-point windows of RSS/(h−2), divided by the median of
    χ²_{h−2}/(h−2) (unbiased under Gaussian noise; a break spoils only the windows that straddle it)."""
    a = np.arange(0, n - h + 1)
    rss = _line_at(sums, a, a + h, a.astype(np.float64))[2] / (h - 2)
    return np.sqrt(np.median(rss, axis=-1) / (stats.chi2.median(h - 2) / (h - 2)))


def min_side(n: int) -> int:
    """Fewest points either side of a split: half the line's window ⌈h/2⌉, at least SIDE. A line through fewer
    points than half its window is mostly the tail of whatever ended the stretch (a fast transition spread over a
    few points), not a level."""
    return int(max(SIDE, np.ceil(half_window(n) / 2)))


def discontinuity_scan(y: np.ndarray, side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(splits k, d(k), z(k)) of the rows of ``y`` [..., n]: the two-line break statistic of the module docstring;
    ``side`` defaults to ``min_side(n)``."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[-1]
    h = min(half_window(n), n)
    side = min_side(n) if side is None else side
    k = np.arange(side, n - side + 1)
    sums = _sums(y - y[..., :1])
    x0 = k - 0.5
    lv, lvar, _ = _line_at(sums, np.maximum(k - h, 0), k, x0)
    rv, rvar, _ = _line_at(sums, k, np.minimum(k + h, n), x0)
    d = rv - lv
    sigma = _sigma(sums, n, h)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, d / (sigma * np.sqrt(lvar + rvar)), 0.0)
    return k, d, z


def _grid(n: int) -> int:
    """Lengths above 64 rounded up to 64·2^(j/8): the null of a longer scan is stochastically larger."""
    return n if n <= 64 else int(np.ceil(64 * 2 ** (np.ceil(8 * np.log2(n / 64)) / 8)))


RHO_STEP, RHO_MAX = 0.05, 0.95


def noise_model(y: np.ndarray) -> tuple[float, bool]:
    """(ρ, integrated): the AR(1) noise the null is simulated with, from the lag-1 autocorrelation r₁ of Δy.

    Stationary AR(1) noise of correlation ρ around a smooth trend has r₁(Δy) = −(1 − ρ)/2 ∈ [−½, 0], so
    ρ̂ = 1 + 2·r₁ (white noise: r₁ = −½, ρ̂ = 0). r₁ > 0 is outside that family: the series wanders like a random
    walk whose steps are themselves correlated (an integrated AR(1), ARIMA(1,1,0)), with step correlation r₁.
    Either ρ is clipped to [0, RHO_MAX] and rounded up to the grid of RHO_STEP (rounding up only widens the null)."""
    dy = np.diff(y)
    dy = dy - np.median(dy)
    den = float(np.sum(dy * dy))
    r = float(np.sum(dy[1:] * dy[:-1])) / den if den > 0 else -0.5
    integrated = r > 0.0
    rho = float(np.clip(r if integrated else 1.0 + 2.0 * r, 0.0, RHO_MAX))
    return float(min(RHO_MAX, np.ceil(rho / RHO_STEP - 1e-9) * RHO_STEP)), integrated


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """Stationary Gaussian AR(1) rows of unit innovation scale: [draws, m]."""
    e = rng.standard_normal(shape)
    if rho == 0.0:
        return e
    e[:, 0] /= np.sqrt(1.0 - rho * rho)
    return signal.lfilter([1.0], [1.0, -rho], e, axis=1)


def null_maxima(n: int, rho: float = 0.0, integrated: bool = False) -> np.ndarray:
    """Sorted max_k |z(k)| of NULL_DRAWS lines plus Gaussian AR(1) noise (lag-1 correlation ``rho``; its running
    sum when ``integrated``) of length ``_grid(n)`` (fixed seed, cached per length, ρ and kind)."""
    key = (_grid(n), round(rho, 3), integrated)
    if key not in _NULL:
        m = key[0]
        rng = np.random.default_rng(2024 + m + int(1000 * rho) + 7 * integrated)
        out = []
        for lo in range(0, NULL_DRAWS, 250):
            e = _ar1(rng, (min(250, NULL_DRAWS - lo), m), rho)
            z = discontinuity_scan(np.cumsum(e, axis=1) if integrated else e)[2]
            out.append(np.nanmax(np.abs(z), axis=1))
        _NULL[key] = np.sort(np.concatenate(out))
    return _NULL[key]


def trend_step(y: np.ndarray) -> tuple[int, float, float, float, bool] | None:
    """Test one level break on top of a local trend in ``y`` (n ≥ 2·``min_side(n)`` + 2 finite values).

    Returns (k, d, statistic, p-value, abrupt) for the split with the largest |z|, or None when too short or
    constant. ``abrupt``: |d| > MIN_MOVE_RATIO × median one-step move within h of k (the boundary move excluded),
    and the 3-point medians either side of k differ by ≥ |d|/2 in its direction.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 2 * min_side(n) + 2 or np.ptp(y) == 0:
        return None
    k, d, z = discontinuity_scan(y)
    z = np.nan_to_num(z)
    i = int(np.argmax(np.abs(z)))
    stat, kk, dd = float(abs(z[i])), int(k[i]), float(d[i])
    abrupt = _abrupt(y, kk, dd) and _lines_fit(y, kk)
    if not abrupt:  # the p-value of a break the rules reject is not needed (and its null is the costly part)
        return kk, dd, stat, 1.0, False
    null = null_maxima(n, *noise_model(y))
    p = (1.0 + null.size - np.searchsorted(null, stat, side="left")) / (1.0 + null.size)
    return kk, dd, stat, float(p), True


MAX_MISFIT = 16.0  # as ``jumps.MAX_MISFIT``: a line whose residual variance is 16× the noise's straddles a bend


def _lines_fit(y: np.ndarray, kk: int) -> bool:
    """Both lines of the split fit: each one's residual variance is below MAX_MISFIT × σ̂² (the window test's
    rule). Beside a bend (a warm-up's end, the knee of a blow-up or of a gradual sigmoid) one line straddles it,
    and its discontinuity is the bend seen from the side, not a break."""
    n = y.size
    h = min(half_window(n), n)
    sums = _sums(y - y[0])
    sigma2 = float(_sigma(sums, n, h)) ** 2
    for a, b in ((max(kk - h, 0), kk), (kk, min(kk + h, n))):
        if b - a > 2:
            rss = float(_line_at(sums, np.array(a), np.array(b), np.array(float(a)))[2])
            if rss / (b - a - 2) > MAX_MISFIT * sigma2:
                return False
    return True


SPIKE = 3  # longest outlier run that is not a level (the window test's ``spike_width``)


def spike_width(n: int) -> int:
    """Longest outlier run the spike check removes: SPIKE (the window test's 3), or ⌊h/2⌋ where a line has fewer
    than 6 points (2 for n ≤ 25), so that the running median of 2·width + 1 points keeps 2 points of a level."""
    return int(min(SPIKE, half_window(n) // 2))


def _abrupt(y: np.ndarray, kk: int, dd: float) -> bool:
    """The break at ``kk`` of size ``dd`` is abrupt: larger than MIN_MOVE_RATIO × the median one-step move within h
    of it, concentrated at kk (3-point medians either side differ by ≥ |dd|/2), and still there, by at least half
    and within a step of kk, after a running median of 2·``spike_width`` + 1 points: an outlier run is no level."""
    n = y.size
    h = half_window(n)
    moves = np.abs(np.diff(y[max(0, kk - h) : kk + h]))
    moves = np.delete(moves, min(kk, h) - 1)  # not the boundary move
    s = min(3, kk, n - kk)
    local = float(np.median(y[kk : kk + s]) - np.median(y[kk - s : kk]))
    if not (abs(dd) > MIN_MOVE_RATIO * np.median(moves) and local * np.sign(dd) >= 0.5 * abs(dd)):
        return False
    return _survives_spike_filter(y, kk, dd)


def _survives_spike_filter(y: np.ndarray, kk: int, dd: float) -> bool:
    """The break at ``kk`` is still there, by at least half of ``dd`` and within a step of kk, after a running median
    of 2·``spike_width`` + 1 points: an outlier run is no level."""
    yf = ndimage.median_filter(y, size=2 * spike_width(y.size) + 1, mode="nearest")
    kf, df, _ = discontinuity_scan(yf)
    return bool(np.any(df[np.abs(kf - kk) <= 1] * np.sign(dd) >= 0.5 * abs(dd)))
