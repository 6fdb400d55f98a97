"""Bias-corrected exponentially weighted moving average (Kingma & Ba 2015, §3).

Written by hand because pandas' `ewm(adjust=True)` needs the whole series, while the trainer sees one value per
step and must record the smoothed value immediately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class BiasCorrectedEWMA:
    """m_t = β m_{t−1} + (1−β) x_t, reported as m̂_t = m_t / (1 − β^t).

    The correction makes a constant series read as that constant from the first step on. Non-finite inputs are
    skipped (they do not advance t), so one NaN step does not poison the average; before any finite input the
    average is NaN.
    """

    beta: float = 0.95
    _m: float = 0.0
    _t: int = 0

    def update(self, x: float) -> float:
        """Fold in one value and return the bias-corrected average."""
        if math.isfinite(x):
            self._m = self.beta * self._m + (1.0 - self.beta) * x
            self._t += 1
        return self.value

    def state_dict(self) -> dict[str, float]:
        """The running state (for checkpoints: a resumed run continues the same average)."""
        return {"m": self._m, "t": self._t}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Continue from a `state_dict`."""
        self._m, self._t = float(state["m"]), int(state["t"])

    @property
    def value(self) -> float:
        """The current bias-corrected average (NaN before the first finite value)."""
        if self._t == 0:
            return math.nan
        return self._m / (1.0 - self.beta**self._t)
