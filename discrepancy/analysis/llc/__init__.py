"""The local learning coefficient (LLC, docs/definitions.md §5): the estimator and the LLC of a run's adapter over
training.

- ``estimator``: ``estimate_llc(model, loss_fn, data)`` at the model's current weights, with ``LLCResult``;
- ``sgld``, ``calibrate``, ``stats``: the vectorised SGLD chains, the automatic step-size rule, traces → LLC values;
- ``health``: which estimates of a run may be read as LLCs at all;
- ``evalset``: the fixed evaluation set of recorded (prompt, completion) pairs and its token loss;
- ``over_run``: ``llc_over_run(run_path)``, the ``discrepancy llc`` job; ``stages``: stage boundaries of its curve.

The estimator's names are re-exported (``discrepancy.analysis.llc.estimate_llc``); every module here works on torch
models, so importing the estimator with the package costs nothing its users would not load anyway.
"""

from __future__ import annotations

from discrepancy.analysis.llc.estimator import LLCError, LLCResult, estimate_llc

__all__ = ["LLCError", "LLCResult", "estimate_llc"]
