"""Robust noise scale of a logged series, estimated from the data itself.

Training curves carry trends, jumps, isolated spikes and heavy-tailed noise whose size changes over the run, so the
noise level is taken from first differences (trend- and jump-free up to a few terms) with the median absolute
deviation (insensitive to spikes): σ̂ = 1.4826 · MAD(Δy) / √2 (docs/definitions.md §4). The 1.4826 makes MAD
consistent for a
Gaussian; the √2 undoes the variance doubling of differencing independent noise.

Two other scales serve the detectors: ``local_scale`` / ``noise_floor`` (the jump test's local σ̂ of differences and
its floor on lattice-valued series), and ``quadratic_residuals`` / ``local_mad`` (the plateau bands' σ̂: residuals
from local parabolas, which keep the part of autocorrelated or EMA-smoothed noise that first differences miss).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.4826  # 1 / Φ⁻¹(3/4): MAD of a Gaussian is 0.6745 σ


def robust_sigma(y: np.ndarray, max_pairs: int = 200_000) -> float:
    """σ̂ = 1.4826·MAD(Δy)/√2 over the finite values of ``y`` (NaNs dropped); 0.0 for fewer than 3 values.

    Beyond ``max_pairs`` differences, an evenly strided subset is used: the MAD of 200 k differences is already
    within ~0.3 % of that of all of them, and the median (a partition) is the cost on long runs.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    finite = np.isfinite(y)
    y = y if finite.all() else y[finite]  # copies only a series with gaps
    if y.size < 3:
        return 0.0
    s = int(np.ceil((y.size - 1) / max_pairs))  # stride over the n-1 differences
    dy = y[1::s][: (y.size - 2) // s + 1] - y[: y.size - 1 : s]  # [≤ max_pairs] = np.diff(y)[::s], without all of it
    return float(MAD_TO_SIGMA * np.median(np.abs(dy - np.median(dy))) / np.sqrt(2.0))


def blockwise_mad_scale(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Local robust centre and scale of ``x``: median and 1.4826·MAD over consecutive blocks, spread back to ``x``.

    Used to calibrate a test statistic whose null spread drifts along the run (heteroscedastic noise): each point
    gets the centre/scale of its block, linearly interpolated between block centres so the scale has no steps.
    A reshape-based median costs O(n) in C; a rolling median (scipy.ndimage) over thousands of points per window
    would cost 20× more for no gain, since the noise level drifts slowly.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    block = int(max(1, min(block, n)))
    n_blocks = max(1, n // block)
    head = (n_blocks - 1) * block  # equal blocks, reshaped; the last block also takes the remainder
    blocks = x[:head].reshape(n_blocks - 1, block)  # [n_blocks-1, block]
    centre = np.append(np.median(blocks, axis=1), np.median(x[head:]))  # [n_blocks]
    spread = np.abs(blocks - centre[:-1, None])  # [n_blocks-1, block]
    scale = MAD_TO_SIGMA * np.append(np.median(spread, axis=1), np.median(np.abs(x[head:] - centre[-1])))
    edges = np.append(np.arange(0, head + 1, block), n)  # [n_blocks+1]
    if n_blocks == 1:
        return np.full(n, centre[0]), np.full(n, scale[0])
    mids = 0.5 * (edges[:-1] + edges[1:])  # [n_blocks]
    pos = np.arange(n)
    return np.interp(pos, mids, centre), np.interp(pos, mids, scale)


SPARSE_SHARE = 0.1  # a block where ≥ 10 % of the values differ from its median is noisy, even when its MAD is 0


def local_scale(v: np.ndarray, block: int) -> np.ndarray:
    """Robust local scale of ``v`` [m] → [m]: 1.4826·MAD per block, or √(π/2)·mean|v − median| where MAD fails.

    The MAD is 0 whenever more than half of the values equal the median: sparse counts (0–2 truncated completions
    of 64 per step), a minimum that is mostly one lattice value. Their noise is still real, and a scale of 0 (or a
    floor of the smallest move) turned ordinary moves into 5–10⁴ σ "jumps". Such a block (MAD 0 but ≥ SPARSE_SHARE
    of its values off the median) takes the mean absolute deviation instead, the Gaussian-consistent scale that a
    point mass does not zero out. A block with fewer moves than that (a noise-free step) keeps MAD 0, so the
    caller's quantisation floor applies. Blocks and interpolation follow ``noise.blockwise_mad_scale``.
    """
    v = np.asarray(v, dtype=np.float64)
    scale = blockwise_mad_scale(v, block)[1]
    if np.all(scale > 0) or v.size == 0:
        return scale
    block = int(max(1, min(block, v.size)))
    nb = max(1, v.size // block)
    edges = np.append(np.arange(0, (nb - 1) * block + 1, block), v.size)  # [nb+1], last block takes the remainder
    fallback = np.zeros(nb)
    for b in range(nb):
        dev = np.abs(v[edges[b] : edges[b + 1]] - np.median(v[edges[b] : edges[b + 1]]))
        if np.mean(dev > 0) >= SPARSE_SHARE:
            fallback[b] = np.sqrt(np.pi / 2.0) * float(np.mean(dev))
    mids = 0.5 * (edges[:-1] + edges[1:])  # [nb]; np.interp of one block is that block's value everywhere
    return np.maximum(scale, np.interp(np.arange(v.size), mids, fallback))


def noise_floor(x: np.ndarray) -> float:
    """Smallest noise scale σ̂ may take for series ``x``: the quantisation noise of its own resolution.

    An exactly constant stretch has MAD 0. For series on a lattice (token counts, shares of a batch of 64,
    means of 0/1 rewards) that is the rule, and a move of one lattice step is resolution, not a 10⁸-σ event. The
    resolution q is the smallest non-zero change the series ever makes; uniform rounding to a grid of q has noise
    q/√12. Continuous series have a tiny q, so their floor stays relative to their values (rounding is not a jump).
    """
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return 1e-300
    moves = np.abs(np.diff(finite))
    moves = moves[moves > 0]
    resolution = float(moves.min()) / np.sqrt(12.0) if moves.size else 0.0
    return max(1e-300, 1e-9 * float(np.max(np.abs(finite))), resolution)


def quadratic_residuals(x: np.ndarray, w: int) -> np.ndarray:
    """x minus the least-squares parabola over the w points centred on each point (edges: the nearest full window),
    divided by √(1 − 3/w) (a parabola absorbs 3 of the w points' noise variance).

    The noise scale is taken from these residuals, not from first differences: noise that is autocorrelated or
    EMA-smoothed varies little from one step to the next but as much as it is large over a window, and that is the
    size the band must allow. A parabola (not a line) over a minimum plateau length follows the curvature of a
    decay, which would otherwise count as noise on smooth, quiet curves. Coefficients from prefix sums of y, j·y and
    j²·y (j centred on the series), O(n).
    """
    n = x.size
    w = int(min(max(w, 5), n))
    y = x - np.median(x)
    j = np.arange(n, dtype=np.float64) - (n - 1) / 2.0  # centred: smaller prefix sums
    c0, c1, c2 = (np.concatenate(([0.0], np.cumsum(v))) for v in (y, j * y, j * j * y))  # [n+1] each
    t0, t1, t2 = c0[w:] - c0[:-w], c1[w:] - c1[:-w], c2[w:] - c2[:-w]  # [n-w+1] window sums
    mid = j[: n - w + 1] + (w - 1) / 2.0  # [n-w+1] centre of each window, in j units
    s0, s1, s2 = t0, t1 - mid * t0, t2 - 2.0 * mid * t1 + mid * mid * t0  # sums of u^k·y, u = j − mid
    u2 = w * (w * w - 1) / 12.0
    u4 = w * (w * w - 1) * (3.0 * w * w - 7) / 240.0
    b2 = (w * s2 - u2 * s0) / (w * u4 - u2 * u2)
    b1, b0 = s1 / u2, (s0 - b2 * u2) / w
    a = np.clip(np.arange(n) - w // 2, 0, n - w)  # [n] window of each point
    u = j - mid[a]
    return (y - (b0[a] + b1[a] * u + b2[a] * u * u)) / np.sqrt(max(1.0 - 3.0 / w, 0.25))


def piecewise_residuals(x: np.ndarray, bounds: list[int], w: int) -> np.ndarray:
    """``quadratic_residuals`` inside each stretch [bounds[i], bounds[i+1]); stretches under 5 points: minus their
    median."""
    resid = np.empty_like(x)
    for a, b in zip(bounds[:-1], bounds[1:]):
        resid[a:b] = quadratic_residuals(x[a:b], min(w, b - a)) if b - a >= 5 else x[a:b] - np.median(x[a:b])
    return resid


def local_mad(r: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """1.4826 · running median of |r| over ``k`` points, at each block of ``starts`` ([m]).

    ``r`` are residuals from local lines, already centred: subtracting a running median again would remove the slow
    part of autocorrelated noise, which the band must allow for. Blocks of ≥ 8 points: each block's median |r|,
    then a running median of those over k points' worth of blocks; shorter blocks: a running median of |r| itself.
    """
    n = r.size
    f = int(np.ceil(n / starts.size)) if starts.size else 1
    a = np.abs(r)
    if f >= 8:
        m = n // f
        med = np.median(a[: m * f].reshape(m, f), axis=1)  # [m]
        if starts.size > m:  # the last, shorter block
            med = np.append(med, np.median(a[m * f :]))
        kb = max(1, int(round(k / f)))
        return MAD_TO_SIGMA * (ndimage.median_filter(med, size=kb, mode="nearest") if kb > 1 else med)
    k = int(min(max(3, k), n))
    med = ndimage.median_filter(a, size=k, mode="nearest")  # [n]
    return MAD_TO_SIGMA * med[np.minimum(starts + f // 2, n - 1)]
