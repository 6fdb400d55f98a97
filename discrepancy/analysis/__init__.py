"""discrepancy.analysis: jump sets, plateaus and phase transitions of recorded runs, and their LLC.

- ``pipeline``: ``analyze(path)`` returns an ``AnalysisResult`` of pandas DataFrames; ``plots``: its figures;
- ``changepoints``: the detectors (``detect_jumps`` / ``detect_plateaus`` work on any 1-D array) and their scores;
- ``llc``: the LLC estimator and the LLC of a run's adapter over training.

Names are imported lazily so that importing one detector does not pull in pandas or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnalysisResult": "pipeline", "analyze": "pipeline", "analyze_series": "pipeline",
    "JumpDetector": "changepoints.jumps", "JumpResult": "changepoints.jumps", "detect_jumps": "changepoints.jumps",
    "Plateau": "changepoints.plateaus", "PlateauDetector": "changepoints.plateaus",
    "detect_plateaus": "changepoints.plateaus",
    "robust_sigma": "changepoints.noise", "group_transitions": "changepoints.events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'discrepancy.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"discrepancy.analysis.{_EXPORTS[name]}"), name)
