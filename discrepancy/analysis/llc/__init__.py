"""The local learning coefficient (LLC, SPEC §5): the estimator and the LLC of a run's adapter over training.

- ``estimator``: ``estimate_llc(model, loss_fn, data)`` at the model's current weights, with ``LLCResult``;
- ``sgld``, ``calibrate``, ``stats``: the vectorised SGLD chains, the automatic step-size rule, traces → LLC values;
- ``health``: which estimates of a run may be read as LLCs at all;
- ``evalset``: the fixed evaluation set of recorded (prompt, completion) pairs and its token loss;
- ``over_run``: ``llc_over_run(run_path)``, the ``discrepancy llc`` job; ``stages``: stage boundaries of its curve.

Names are imported lazily (``discrepancy.analysis.llc.estimate_llc`` works), so that importing ``health`` or
``stages`` alone does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLCError": "estimator", "LLCResult": "estimator", "estimate_llc": "estimator",
    "LLCSettingsError": "over_run", "llc_over_run": "over_run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'discrepancy.analysis.llc' has no attribute {name!r}")
    return getattr(importlib.import_module(f"discrepancy.analysis.llc.{_EXPORTS[name]}"), name)
