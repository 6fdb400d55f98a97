"""Robust noise scale of a logged series, estimated from the data itself.

Training curves carry trends, jumps, isolated spikes and heavy-tailed noise whose size changes over the run, so the
noise level is taken from first differences (trend- and jump-free up to a few terms) with the median absolute
deviation (insensitive to spikes): σ̂ = 1.4826 · MAD(Δy) / √2 (SPEC §4). The 1.4826 makes MAD consistent for a
Gaussian; the √2 undoes the variance doubling of differencing independent noise.
"""

from __future__ import annotations

import numpy as np

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
