"""Measurements that attach to the GRPO step's hooks (`discrepancy.instrumentation.hooks`): the discrepancy operator,
gradient noise, policy drift, LoRA norms, rollout statistics and the optional linearisation error (SPEC §2–3).

    instruments = build_instruments(InstrumentationConfig(), model)
    runner = HookRunner(instruments)   # the trainer declares runner.declared_series() / declared_arrays()

An instrument of one's own subclasses `Instrument`; `with_shared` puts the provider of the measurements it declares
in ``needs`` in front of it.
"""

from discrepancy.instrumentation.hooks import HookRunner, Instrument, StepBatch, StepContext
from discrepancy.instrumentation.registry import InstrumentationConfig, build_instruments
from discrepancy.instrumentation.shared import SharedMeasurements, with_shared

__all__ = ["HookRunner", "Instrument", "InstrumentationConfig", "SharedMeasurements", "StepBatch", "StepContext",
           "build_instruments", "with_shared"]
