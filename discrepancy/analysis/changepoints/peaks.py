"""Peak picking and the χ² → Gaussian tail conversion the jump detector needs, without scipy.signal / scipy.stats.

Why not the libraries: ``scipy.signal.find_peaks`` and ``scipy.stats`` are what the detector used first, but
importing either package loads all of it (~1 s each on this project's 2-core machines), more than ``analyze`` then
spends detecting jumps in a typical run. ``find_peaks`` below reproduces scipy's rules for the two options used
(height, distance; flat tops give their middle, higher peaks win), and the tests check it against scipy itself;
the tail conversion calls the same scipy.special functions scipy.stats calls.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def find_peaks(x: np.ndarray, height: float, distance: int) -> np.ndarray:
    """Indices of local maxima of ``x`` that reach ``height``, at least ``distance`` apart (higher ones kept first).

    As ``scipy.signal.find_peaks(x, height=height, distance=distance)[0]``: a maximum must be strictly higher than
    its neighbours; a flat top counts once, at its middle (left-biased); the first and last samples never count.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 3:
        return np.zeros(0, dtype=np.intp)
    change = np.flatnonzero(np.diff(x))  # [r-1] last index of each run of equal values (but the final run)
    starts, ends = np.r_[0, change + 1], np.r_[change, x.size - 1]  # [r] runs of equal values
    v = x[starts]  # [r]
    inner = np.arange(1, v.size - 1)  # runs touching either end are never maxima
    top = inner[(v[inner - 1] < v[inner]) & (v[inner + 1] < v[inner]) & (v[inner] >= height)]
    peaks = (starts[top] + ends[top]) // 2  # [k] sorted
    if peaks.size < 2 or distance <= 1:
        return peaks
    keep = np.ones(peaks.size, dtype=bool)
    # highest first, ties in the order of numpy's default argsort, as scipy; a kept peak removes the lower ones
    # closer than `distance`. A Python loop over peaks: tens, not millions (only those above the threshold).
    for j in np.argsort(x[peaks])[::-1]:
        if keep[j]:
            near = np.abs(peaks - peaks[j]) < int(np.ceil(distance))
            keep[near] = False
            keep[j] = True
    return peaks[keep]


def chi2_to_gaussian_z(q: np.ndarray, dof: int) -> np.ndarray:
    """|z| whose two-sided Gaussian tail equals the χ²_dof tail beyond ``q``: Φ̄⁻¹(χ²_sf(q, dof) / 2).

    scipy.special.chdtrc is χ²'s survival function and −ndtri(p) = Φ̄⁻¹(p), exact for the tiny p of real jumps.
    """
    return -special.ndtri(special.chdtrc(dof, q) / 2.0)
