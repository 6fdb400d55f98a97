"""Line fits over sliding windows, and how large a jump is, and how much of a series' variation jumps carry: sizes in the series' own units.

``level_change`` sizes the window test's jumps (robust to spikes and to the local trend), ``side_means`` the step
test's (the stretches between change points hold one level each), ``jump_fraction`` the share of the total variation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from discrepancy.analysis.changepoints.noise import robust_sigma


def window_sums(y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Σy and Σ(x − x̄)y over every window [a, a+w) of ``y`` (x = position), from two cumulative sums: [n−w+1] each.

    The OLS line of window a has mean Σy/w and slope Σ(x − x̄)y / (w(w²−1)/12). ``y`` is centred by its median
    first (the caller's line values are unaffected up to that constant) because the rounding error of a cumulative
    sum grows with its magnitude.
    """
    n = y.size
    yc = y - np.median(y)
    s0 = np.zeros(n + 1)
    np.cumsum(yc, out=s0[1:])  # [n+1]
    s1 = np.zeros(n + 1)
    np.cumsum(np.arange(n, dtype=np.float64) * yc, out=s1[1:])  # [n+1]
    sum_y = s0[w:] - s0[:-w]  # [n-w+1]: window [a, a+w) for every a
    centre = np.arange(n - w + 1, dtype=np.float64) + (w - 1) / 2.0
    return sum_y, s1[w:] - s1[:-w] - centre * sum_y


def window_slopes(y: np.ndarray, w: int) -> np.ndarray:
    """Slope of the OLS line over every window [a, a+w) of 1-D ``y``: [n−w+1]."""
    return window_sums(y, w)[1] / (w * (w * w - 1) / 12.0)


def side_means(y: np.ndarray, bounds: np.ndarray, at: int) -> float:
    """Mean of ``y`` from ``at`` to the next bound minus its mean from the previous bound to ``at``."""
    i = int(np.searchsorted(bounds, at))
    return float(np.mean(y[at : bounds[i + 1]]) - np.mean(y[bounds[i - 1] : at]))


def level_change(y: np.ndarray, peaks: np.ndarray, w: int, spike_width: int = 3,
                 filtered: np.ndarray | None = None) -> np.ndarray:
    """Signed size of each jump in units of ``y`` [n, d]: the median of the w values after it minus the median of the
    w before, both taken around the local trend.

    The trend is the mean slope of two lines fitted to the spike-filtered series on either side, held off the jump
    by the filter's reach (as ``_unbent`` holds its fits off), so neither the jump nor a spike tilts it. Why not the
    test's own statistic d: its lines meet the filtered edge, which the running median rounds off, and their slopes
    lean into the step: planted steps were reported 10–20 % small (``tests/analysis/changepoints/test_jumps.py``).
    Why not plain medians: on a trend they add slope·w (30 % at a slope of 6 steps per run, 100 points); but a slope
    within two standard errors of 0 is not removed, since on a flat series it is noise multiplied by w.
    ``filtered``: that running median of ``y`` when the caller has it already.
    """
    n, out = y.shape[0], np.zeros((peaks.size, y.shape[1]))
    if n < w:
        return out
    k, off = 2 * spike_width + 1, spike_width + 1
    if filtered is not None:  # the caller's running median of ``y`` (the window test's own), not computed again
        yf = filtered
    else:
        yf = ndimage.median_filter(y, size=(k, 1), mode="nearest") if spike_width > 0 else y
    for j in range(y.shape[1]):
        slope = window_slopes(yf[:, j], w)  # [n-w+1]
        # SE of the two lines' mean slope under the series' noise: a slope within 2 SE of 0 is not removed (on a flat
        # series the fitted slope of 2w points is noise, and times w it scattered a 0.5 step by ±0.027 at σ = 0.03)
        se = robust_sigma(y[:, j]) / np.sqrt(2.0 * w * (w * w - 1) / 12.0)
        for i, p in enumerate(peaks):
            m = 0.5 * (slope[int(np.clip(p - w - off, 0, slope.size - 1))] + slope[int(min(p + off, slope.size - 1))])
            m = m if abs(m) > 2.0 * se else 0.0
            t = np.arange(max(0, p - w), min(n, p + w)) - p + 0.5  # positions relative to the boundary
            v = y[max(0, p - w) : min(n, p + w), j] - m * t
            out[i, j] = np.median(v[t > 0]) - np.median(v[t < 0])
    return out


def jump_fraction(y: np.ndarray, jumps: list[int], sizes: np.ndarray, w: int) -> float:
    """Σ|J| / (Σ|J| + smooth variation), the share of the total variation carried by jumps, in [0, 1].

    The smooth variation is the total variation of block medians (≤ 8 blocks per segment between jumps, each ≥ w
    points) with every difference soft-thresholded by twice its noise SE, so pure noise adds ~nothing; a series
    without any variation returns 0.
    """
    y = np.asarray(y, dtype=np.float64)
    jump_tv = float(np.sum(np.abs(sizes)))
    bounds = [0, *sorted(jumps), y.size]
    smooth_tv = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = y[a:b]
        if seg.size < 2 * w:
            continue
        block = max(w, seg.size // 8)
        nb = seg.size // block
        med = np.median(seg[: nb * block].reshape(nb, block), axis=1)  # [nb]
        se = 1.2533 * robust_sigma(seg) / np.sqrt(block) * np.sqrt(2.0)  # SE of a difference of two block medians
        smooth_tv += float(np.sum(np.clip(np.abs(np.diff(med)) - 2.0 * se, 0.0, None)))
    total = jump_tv + smooth_tv
    return jump_tv / total if total > 0 else 0.0
