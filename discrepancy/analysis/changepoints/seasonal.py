"""A periodic swing in a logged series, found and removed before the jump tests (which read it as noise).

The jump tests take the noise scale from first differences and from local lines. A seasonal swing (monthly data
with a yearly cycle; a training curve logged over epochs of one fixed data order, or under a cyclic schedule) is
the largest part of those differences, so a level change smaller than the swing hides in it, while a rank test on
the raw series splits the cycle itself. Here:

* **period** — the autocorrelation r of Δy (Δ removes a trend and a level shift up to one term each; Δy minus
  its median over blocks of two of the longest periods tried, so that the changing slope of a decay, whose few
  large early Δy correlate at every lag, is not read as a cycle) peaks at the period p with r(p) ≥ ``MIN_SHARE``
  = ½ (the periodic part of Δy at least as large as all the rest), and is negative at half the period (r(⌊p/2⌋)
  < 0: a cycle is opposite itself half a period away, which smooth, AR(1) or EMA-smoothed noise never is; their r
  stays ≥ 0 and decays). p runs over 3 … min(n/``MIN_CYCLES``, ``MAX_PERIOD``), so every phase has at least 8
  values, and r(p) must exceed the white-noise bound z/√n, z the two-sided Bonferroni quantile over the lags
  tried (5 % in all). On the benchmarks' synthetic curves (both generators, development and held-out seeds) and
  on white, t(3), AR(1), EMA-smoothed, random-walk and spiky noise no period is found
  (tests/analysis/changepoints/test_seasonal.py).
* **profile** — the series minus a running median over one period (which follows the level, keeps steps and
  averages the cycle out), then for every phase the median of its values (robust to the steps and spikes left in
  it), centred: the classical additive decomposition (Cleveland et al. 1990 give the loess version; medians keep it
  robust). One median per phase assumes the swing stays the same; a real one changes over the years (a summer peak
  that grows, a month that trades places), and what one median leaves of it stays in the series as a swing of its
  own, which the tests read as noise. So each phase's value is taken instead from the ``PROFILE_CYCLES`` = 7
  neighbouring cycles (STL's cycle-subseries smoothing, at its smallest recommended seasonal window, by running
  medians, continued along the first and last window's Theil–Sen line at the ends; centred by the profile's mean
  over every full period, held at the ends) when the swing **changes**: each residual is predicted by the median of
  the other values of its phase, once from all cycles and once from its 7 neighbours, and the neighbours must
  predict better by a one-sided Wilcoxon signed-rank test at ``LEVEL`` (paired absolute errors of all points). A
  swing that does not change keeps the one median per phase, which has the lower variance (the 7-cycle profile on a
  steady swing raised the false jumps on seasonal null series from 0 to 2 in 30).

Only ``deseasonalise`` changes a series, and only when a period is found; everything else is passed as it was.
Written by hand: statsmodels' ``seasonal_decompose`` (not a dependency) needs the period given, or a pandas index
frequency, and averages with means, so a level shift leaks into the profile.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage, special, stats

from discrepancy.analysis.changepoints.noise import blockwise_mad_scale

MIN_SHARE = 0.5  # r(p) ≥ ½: the periodic part carries at least half of Δy's variance
MIN_CYCLES = 8  # the period fits ≥ 8 times: each phase's median from ≥ 8 values
PROFILE_CYCLES = 7  # a changing swing's profile: medians over 7 neighbouring cycles (STL's smallest seasonal window)
MIN_PERIOD = 3  # a period of 2 is the lag-1 anticorrelation of white-noise differences, not a cycle
MAX_PERIOD = 125  # 8 cycles fit in the longest stretch the step test reads (steptest.SEGMENT_MAX = 1,000 points);
# a slower swing moves Δy by at most 2π·amplitude/period per step and is a trend to the window test's lines
CHUNK, CHUNKS = 20_000, 10  # beyond 200 k differences, r from 10 evenly spread chunks of 20 k (as ``robust_sigma``)
LEVEL = 0.05


def _autocovariance(v: np.ndarray, max_lag: int) -> np.ndarray:
    """Σ_t v_t v_{t+k} for k = 0..max_lag by FFT, O(n log n): [max_lag + 1]."""
    m = 1 << int(np.ceil(np.log2(v.size + max_lag + 1)))
    f = np.fft.rfft(v, m)
    return np.fft.irfft(f * np.conj(f), m)[: max_lag + 1]


def _autocorrelation(y: np.ndarray, max_lag: int) -> np.ndarray:
    """r(0..max_lag) of Δy minus its local median (blocks of 2·max_lag + 1), from at most CHUNKS chunks of CHUNK
    differences on long series (the r of 200 k pairs is within ~0.002 of all of them): [max_lag + 1]."""
    starts = [0] if y.size <= CHUNK * CHUNKS else np.linspace(0, y.size - CHUNK - 1, CHUNKS).astype(int)
    size = y.size if len(starts) == 1 else CHUNK + 1
    acov = np.zeros(max_lag + 1)
    for a in starts:
        v = np.diff(y[a : a + size])
        v = v - blockwise_mad_scale(v, 2 * max_lag + 1)[0]  # minus its local median: a drifting slope is no cycle
        acov += _autocovariance(v - v.mean(), max_lag)
    return acov / acov[0] if acov[0] > 0 else np.zeros(max_lag + 1)


def find_period(y: np.ndarray) -> int:
    """The period of a seasonal swing in ``y`` (finite values), or 0 when there is none (module docstring).

    The highest r among the passing lags below 1.5× the shortest one: every multiple of a period passes too, and on
    a long period the peak is broad enough for noise to split it into neighbouring local maxima."""
    y = np.asarray(y, dtype=np.float64)
    max_lag = min(y.size // MIN_CYCLES, MAX_PERIOD + 1)
    if max_lag < MIN_PERIOD + 1:
        return 0
    r = _autocorrelation(y, max_lag)  # [max_lag + 1] of Δy
    inner = np.arange(MIN_PERIOD, max_lag)  # a peak needs a neighbour on either side
    bound = -special.ndtri(LEVEL / (2 * inner.size)) / np.sqrt(min(y.size - 1, CHUNK * CHUNKS))
    peaks = inner[(r[inner] >= r[inner - 1]) & (r[inner] >= r[inner + 1])]
    ok = peaks[(r[peaks] >= max(MIN_SHARE, bound)) & (r[peaks // 2] < 0)]
    if ok.size == 0:
        return 0
    first = ok[ok < 1.5 * ok[0]]  # the shortest passing peak's hump (its noise splits it), before the 2nd multiple
    return int(first[np.argmax(r[first])])


def _running_median(v: np.ndarray, width: int) -> np.ndarray:
    """Median of every ``width`` consecutive values of ``v`` (more than ``width`` of them), centred; at the ends,
    the first and last full window's median continued along that window's Theil–Sen slope (STL's loess fits a local
    line at the ends for the same reason). A centred median follows a linear drift without bias, a median held at
    the ends does not: a swing that grows was under-removed in the last cycles and left a false jump there."""
    med = np.median(sliding_window_view(v, width), axis=1)  # [m − width + 1]
    head, tail = width // 2, v.size - med.size - width // 2
    first = stats.theilslopes(v[:width]).slope
    last = stats.theilslopes(v[-width:]).slope
    return np.concatenate((med[0] + first * np.arange(-head, 0), med, med[-1] + last * np.arange(1, tail + 1)))


def _leave_one_out(v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """|v_j − median of the others| for every j, the others being all of ``v`` and being the ``width`` values around
    j (the first or last ``width`` at the ends): two [m] arrays; m > ``width`` ≥ 3, odd."""
    m = v.size
    order = np.argsort(v, kind="stable")
    s, rank = v[order], np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)

    def without(k: np.ndarray) -> np.ndarray:  # the k-th smallest of v once v_j is removed (j's rank skipped)
        return s[k + (k >= rank)]

    lo, hi = (m - 2) // 2, (m - 1) // 2  # the middle pair of m − 1 values (one index when m − 1 is odd)
    everyone = np.abs(v - 0.5 * (without(np.full(m, lo)) + without(np.full(m, hi))))
    start = np.clip(np.arange(m) - width // 2, 0, m - width)  # [m] each window's first index
    win = v[start[:, None] + np.arange(width)]  # [m, width]
    keep = (start[:, None] + np.arange(width)) != np.arange(m)[:, None]
    others = win[keep].reshape(m, width - 1)
    return everyone, np.abs(v - np.median(others, axis=1))


def changing(resid: np.ndarray, period: int) -> bool:
    """Whether the swing in ``resid`` (the series minus its running level) changes over the series: its phases'
    values are predicted better by their ``PROFILE_CYCLES`` neighbouring cycles than by all cycles (one-sided
    Wilcoxon signed-rank test of the paired absolute leave-one-out errors at ``LEVEL``; module docstring)."""
    pairs = [_leave_one_out(resid[i::period], PROFILE_CYCLES) for i in range(period)
             if resid[i::period].size > PROFILE_CYCLES]
    if not pairs:
        return False
    gain = np.concatenate([a - b for a, b in pairs])  # > 0 where the neighbours predicted better
    if not np.any(gain):
        return False
    return bool(stats.wilcoxon(gain, alternative="greater").pvalue <= LEVEL)


def seasonal_profile(y: np.ndarray, period: int) -> np.ndarray:
    """The additive seasonal component of ``y`` [n] for ``period`` (module docstring): [n], mean ≈ 0 over any
    period."""
    level = ndimage.median_filter(y, size=period + 1 - period % 2, mode="nearest")  # odd, ≥ one period
    resid = y - level
    if not changing(resid, period):
        phase = np.array([np.median(resid[i::period]) for i in range(period)])  # [period]
        return np.resize(phase - phase.mean(), y.size)
    out = np.empty(y.size)
    for i in range(period):
        out[i::period] = _running_median(resid[i::period], PROFILE_CYCLES)
    # centred by its mean over every full period, held at the ends: a mean over a window padded with the end value
    # (ndimage's "nearest") is a phase's value, not the cycle's mean, and shifted the last half period's level
    mean = sliding_window_view(out, period).mean(axis=1)  # [n − period + 1], window [t, t + period)
    head = period // 2
    return out - np.concatenate((np.full(head, mean[0]), mean, np.full(y.size - mean.size - head, mean[-1])))


def deseasonalise(y: np.ndarray) -> tuple[np.ndarray, int]:
    """(``y`` minus its seasonal component, period), or (``y``, 0) when ``find_period`` finds none."""
    period = find_period(y)
    return (y - seasonal_profile(y, period), period) if period else (y, 0)
