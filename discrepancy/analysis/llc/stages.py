"""Stage boundaries of an LLC curve over training (Hoogland et al. 2024), as rows of the analysis event table.

A boundary is a critical point of the LLC curve against log step after Gaussian smoothing: a snapshot where the
smoothed slope changes sign. Only healthy estimates (``health``) draw the curve: an unhealthy one is no LLC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from discrepancy.analysis.llc.health import healthy_mask
from discrepancy.runfile.results import EVENT_COLUMNS


def stage_boundaries(steps: Sequence[int], llc: Sequence[float], sigma: float = 1.0) -> list[int]:
    """Snapshot steps where the Gaussian-smoothed LLC curve, against log(step + 1), has a critical point."""
    from scipy.ndimage import gaussian_filter1d  # lazily: scipy.ndimage costs ~0.3 s to import

    x = np.log1p(np.asarray(steps, dtype=float))
    y = np.asarray(llc, dtype=float)
    if len(x) < 4 or not np.isfinite(y).all():
        return []
    ys = gaussian_filter1d(y, sigma=sigma, mode="nearest")
    slope = np.gradient(ys, x)  # per unit log-step
    out = []
    for i in range(len(slope) - 1):
        if slope[i] * slope[i + 1] < 0:  # the smoothed slope changes sign between snapshots i and i+1
            pick = max if slope[i] > 0 else min  # a maximum or a minimum: report the more extreme snapshot
            out.append(int(steps[pick((i, i + 1), key=lambda j: ys[j])]))
    return out


def healthy_stage_boundaries(table: pd.DataFrame, sigma: float = 1.0) -> list[int]:
    """Stage boundaries of the LLC curve drawn through the healthy rows only (an unhealthy estimate is no LLC)."""
    ok = table[healthy_mask(table)]
    return stage_boundaries(list(ok["step"]), list(ok["llc_mean"]), sigma)


def llc_stage_events(table: pd.DataFrame) -> pd.DataFrame:
    """Stage boundaries (from healthy rows) as rows of the analysis event table (kind "llc_stage", one step long;
    score: the LLC there), so they can be listed with the jumps and plateaus of ``discrepancy analyze``."""
    bounds = healthy_stage_boundaries(table)
    at = table.set_index("step")["llc_mean"]
    rows = [{"event": "", "kind": "llc_stage", "signal": "llc", "step": b, "start_step": b, "end_step": b,
             "size": np.nan, "score": float(at.loc[b]), "axis": "log", "signals": "", "n_families": np.nan}
            for b in bounds]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
