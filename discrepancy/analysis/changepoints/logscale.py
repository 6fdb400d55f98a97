"""Log scale for series that change multiplicatively (``JumpDetector(log_scale="auto")``): when, and how."""

from __future__ import annotations

import numpy as np


def use_log_scale(y: np.ndarray) -> bool:
    """Whether a series is better searched on log scale: non-negative (up to rounding), ≥ 90 % positive, and
    spanning a ratio ≥ 10 between its 5th and 95th percentiles.

    Such series (KL, losses near 0, gradient-noise traces) change multiplicatively and their noise grows with their
    level, so on the linear scale a 10× rise looks small next to the noise after it; on log scale it is a step.
    """
    y = y[np.isfinite(y)]
    if y.size == 0 or y.min() < -1e-6 * np.max(np.abs(y)) or np.mean(y > 0) < 0.9:
        return False
    lo, hi = np.percentile(y[y > 0], [5, 95])
    return bool(lo > 0 and hi / lo >= 10.0)


def log_transform(y: np.ndarray) -> np.ndarray:
    """log(max(y, 0) + c), c = half the 5th percentile of the positive values: zeros become a finite floor."""
    pos = y[y > 0]
    c = 0.5 * float(np.percentile(pos, 5)) if pos.size else 1.0
    return np.log(np.maximum(y, 0.0) + c)
