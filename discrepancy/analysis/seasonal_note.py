"""The seasonal swing the jump detector removed from a series before its tests, said once in the notes.

A monthly sales series with a yearly cycle is searched after its swing is taken out (``changepoints.seasonal``): its
jump sizes are then sizes without the swing, and its curve still shows the swing. A reader is told which series were
so treated and with which period, so a jump that looks small against the drawn swing is not a surprise.
"""

from __future__ import annotations

import numpy as np

from discrepancy.analysis.changepoints.jumps import JumpResult


def swing_period(res: JumpResult, steps: np.ndarray, rows_per_point: float) -> int:
    """Period in steps of the swing the detector removed from a one-column series (0: none). The detector counts
    it in the points it read: a long series' points are block medians of ``rows_per_point`` rows, each row one
    logged step (``steps``, a log may record every k-th step)."""
    period = int(res.periods[0]) if res.periods else 0
    if period <= 0:
        return 0
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0  # [steps per logged row]
    return int(round(period * max(rows_per_point, 1.0) * spacing))


def seasonal_note(periods: dict[str, int]) -> list[str]:
    """One note naming every series whose seasonal swing was removed before the jump tests, with its period."""
    if not periods:
        return []
    what = "; ".join(f"{name}: a swing of period {p} steps" for name, p in periods.items())
    return [f"{what} removed before the jump tests (jump sizes are without it; the figures draw the logged values)"]
