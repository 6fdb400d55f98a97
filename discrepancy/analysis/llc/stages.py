"""Stage boundaries of an LLC curve over training (after Hoogland et al. 2024), as rows of the analysis event table.

Hoogland et al. take the critical points of the smoothed LLC curve against log step. Smoothing alone cannot tell a
real turn from the wobble of noisy estimates, so a boundary here is a turning point that the error bars cannot
explain: a snapshot i where the curve rises to i and falls after it (or falls, then rises), each leg a difference
larger than ``z`` combined standard errors,

    |λ̂_i − λ̂_j| > z·√(se_i² + se_j²)   for the turning point i and the extreme j of each leg,

found by one pass of a zigzag with that per-pair threshold (a hysteresis: the curve must leave the current extreme by
more than the error bars before the extreme counts as a turn). The level is stated for the whole curve, not per pair:
z = q_{1−α}(R_m)/√2, with R_m the range of m independent standard normals (m the number of estimates) and α = 5 %,
so that on a flat curve of m estimates with exact error bars no pair at all differs significantly in 95 % of cases
(z = 2.34 for 3 estimates, 3.16 for 10, 3.99 for 50); a per-pair z = 2 gave a boundary on 27 % of flat 10-point
curves. The step axis plays no part (turning points do not depend on a monotone transform of it, log or not). Only
healthy estimates (``health``) draw the curve: an unhealthy one is no LLC.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from discrepancy.analysis.llc.health import healthy_mask
from discrepancy.runfile.results import EVENT_COLUMNS

if TYPE_CHECKING:  # the table functions take DataFrames; importing pandas is the caller's cost
    import pandas as pd

ALPHA = 0.05  # chance that a flat curve with exact error bars shows any significant difference


@functools.lru_cache(maxsize=256)
def range_threshold(m: int, alpha: float = ALPHA) -> float:
    """z such that the largest of m(m−1)/2 differences of m independent N(0, 1) exceeds z·√2 with probability α.

    The range R_m of m standard normals has P(R_m ≤ r) = m∫φ(x)[Φ(x + r) − Φ(x)]^(m−1) dx; solved for r here on a
    grid, because scipy's ``studentized_range`` takes seconds per quantile as its degrees of freedom grow.
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    if m < 2:
        return math.inf
    x = np.linspace(-8.0, 8.0, 4001)
    dx = x[1] - x[0]

    def cdf(r: float) -> float:
        return float(m * np.sum(norm.pdf(x) * (norm.cdf(x + r) - norm.cdf(x)) ** (m - 1)) * dx)

    return brentq(lambda r: cdf(r) - (1 - alpha), 1e-3, 20.0) / math.sqrt(2)


def _significant(y: np.ndarray, se: np.ndarray, i: int, j: int, z: float) -> bool:
    return abs(y[i] - y[j]) > z * math.hypot(se[i], se[j])


def stage_boundaries(steps: Sequence[int], llc: Sequence[float], se: Sequence[float],
                     z: float | None = None) -> list[int]:
    """Snapshot steps where the LLC curve turns (a maximum or a minimum) by more than its error bars on both sides.

    ``se``: the standard error of each estimate (``llc_se``; 0 treats the estimates as exact); ``z``: standard errors
    of a difference a leg must exceed (default: ``range_threshold`` of the number of estimates). Points with a
    non-finite estimate or standard error are skipped.
    """
    y, s = np.asarray(llc, dtype=float), np.asarray(se, dtype=float)
    keep = np.isfinite(y) & np.isfinite(s)
    steps = [int(t) for t, k in zip(steps, keep) if k]
    y, s = y[keep], s[keep]
    out: list[int] = []
    if len(y) < 3:
        return out
    z = range_threshold(len(y)) if z is None else z
    lo = hi = 0  # extremes since the last turn; while the direction is unknown both are candidates
    direction = 0  # +1 rising from a confirmed low, −1 falling from a confirmed high
    for i in range(1, len(y)):
        if direction >= 0 and y[i] >= y[hi]:
            hi = i
        if direction <= 0 and y[i] <= y[lo]:
            lo = i
        if direction == 0:
            # the first significant leg: its start is no turn (nothing significant came before it)
            if y[i] > y[lo] and _significant(y, s, i, lo, z):
                direction, hi = 1, lo + int(np.argmax(y[lo : i + 1]))
            elif y[i] < y[hi] and _significant(y, s, i, hi, z):
                direction, lo = -1, hi + int(np.argmin(y[hi : i + 1]))
        elif direction == 1 and y[i] < y[hi] and _significant(y, s, i, hi, z):
            out.append(steps[hi])  # rose significantly to hi, and now fell significantly from it
            direction, lo = -1, i
        elif direction == -1 and y[i] > y[lo] and _significant(y, s, i, lo, z):
            out.append(steps[lo])
            direction, hi = 1, i
    return out


def healthy_stage_boundaries(table: pd.DataFrame, z: float | None = None) -> list[int]:
    """Stage boundaries of the LLC curve drawn through the healthy rows only (an unhealthy estimate is no LLC);
    a table without ``llc_se`` is taken as exact estimates."""
    ok = table[healthy_mask(table)]
    se = ok["llc_se"] if "llc_se" in ok else [0.0] * len(ok)
    return stage_boundaries(list(ok["step"]), list(ok["llc_mean"]), list(se), z)


def llc_stage_events(table: pd.DataFrame) -> pd.DataFrame:
    """Stage boundaries (from healthy rows) as rows of the analysis event table (kind "llc_stage", one step long,
    ids L1…; level: the LLC there; no size or score), so they can be listed with the jumps and plateaus of
    ``discrepancy analyze`` with each column meaning what ``EVENT_DOCS`` says."""
    import pandas as pd

    bounds = healthy_stage_boundaries(table)
    at = table.set_index("step")["llc_mean"]
    rows = [{"event": f"L{i + 1}", "kind": "llc_stage", "signal": "llc", "step": b, "start_step": b, "end_step": b,
             "size": np.nan, "level": float(at.loc[b]), "score": np.nan, "axis": "log", "signals": "llc",
             "n_families": 1} for i, b in enumerate(bounds)]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
