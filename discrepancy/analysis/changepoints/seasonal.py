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
  averages the cycle out), then the median of every phase (robust to the steps and spikes left in it), centred:
  the classical additive decomposition (Cleveland et al. 1990 give the loess version; medians keep it robust).

Only ``deseasonalise`` changes a series, and only when a period is found; everything else is passed as it was.
Written by hand: statsmodels' ``seasonal_decompose`` (not a dependency) needs the period given, or a pandas index
frequency, and averages with means, so a level shift leaks into the profile.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

from discrepancy.analysis.changepoints.noise import blockwise_mad_scale

MIN_SHARE = 0.5  # r(p) ≥ ½: the periodic part carries at least half of Δy's variance
MIN_CYCLES = 8  # the period fits ≥ 8 times: each phase's median from ≥ 8 values
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


def seasonal_profile(y: np.ndarray, period: int) -> np.ndarray:
    """The additive seasonal component of ``y`` [n] for ``period``: [n], mean 0 over a period."""
    level = ndimage.median_filter(y, size=period + 1 - period % 2, mode="nearest")  # odd, ≥ one period
    resid = y - level
    phase = np.array([np.median(resid[i::period]) for i in range(period)])  # [period]
    return np.resize(phase - phase.mean(), y.size)


def deseasonalise(y: np.ndarray) -> tuple[np.ndarray, int]:
    """(``y`` minus its seasonal component, period), or (``y``, 0) when ``find_period`` finds none."""
    period = find_period(y)
    return (y - seasonal_profile(y, period), period) if period else (y, 0)
