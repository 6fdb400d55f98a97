"""Measurements that attach to the GRPO step's hooks: the discrepancy operator, gradient noise, policy drift, LoRA
norms, rollout statistics and the optional linearisation error (docs/definitions.md §2–3).

    from discrepancy.instrumentation.hooks import HookRunner
    from discrepancy.instrumentation.registry import build_instruments

    instruments = build_instruments(InstrumentationConfig(), model)
    runner = HookRunner(instruments)   # the trainer declares runner.declared_series() / declared_arrays()

The contract is `hooks` (`Instrument`, `StepContext`, `StepBatch`, `HookRunner`); an instrument of one's own
subclasses `Instrument`, and `shared.with_shared` puts the provider of the measurements it declares in ``needs`` in
front of it. This package imports only its config here, so reading a config never loads torch.
"""

from discrepancy.instrumentation.config import InstrumentationConfig

__all__ = ["InstrumentationConfig"]
