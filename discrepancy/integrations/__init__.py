"""Instrument training runs of other libraries into the project's run file, so `discrepancy inspect / analyze / llc /
probe` read them as they read a run of `discrepancy train`.

- `trl_trainer.InstrumentedGRPOTrainer`: TRL's `GRPOTrainer` plus the step measurements of `instrumentation`
  (D_t, ρ_t, gradient noise, LoRA norms, policy shift, rollout statistics), TRL's own logged series, samples and
  LoRA snapshots (docs/trl.md says what is measured and what is NaN, and why).

This package imports nothing at its top: reading it never loads trl or torch. `trl_version.require_trl` refuses a
trl outside the supported range in one line before any trl class is touched.
"""
