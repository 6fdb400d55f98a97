"""The run file of a TRL run: its schema, one row per optimizer step, samples and LoRA snapshots.

A row is completed in two moments of transformers' loop: the instruments' values at the optimizer step, then TRL's
logged values at its log call (right after the step, every ``logging_steps``). So the row is kept until the next
step begins (or training ends) and written then; TRL's series are NaN at steps TRL does not log.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from discrepancy.instrumentation.hooks import HookRunner, StepBatch
from discrepancy.instrumentation.drift import masked_mean
from discrepancy.integrations.trl_batch import Generation, prompt_key
from discrepancy.integrations.trl_record import EXTRA, noise_unit
from discrepancy.integrations.trl_series import IGNORED, safe_name, trl_series
from discrepancy.modeling.lora import lora_state_numpy
from discrepancy.runfile import Recorder, RunSchema


def step_extras(batch: StepBatch, logp: torch.Tensor, temperature: float, beta: float) -> dict[str, float]:
    """The `EXTRA` series of one step read off its batch (generation_time is added at the step's end)."""
    mask = batch.completion_mask
    rewards = list(batch.reward_components.values())
    unusable = (np.isnan(np.stack(rewards)).all(0).mean() if rewards else math.nan)
    return {
        "advantage_abs_mean": float(batch.advantages.abs().float().mean()),
        "ratio_mean": masked_mean(torch.exp(logp - batch.old_logp), mask),
        "reward_unusable_frac": float(unusable),
        "temperature": float(temperature),
        "beta": float(beta),
    }


class RunWriter:
    """Writes a TRL run's rows, samples and snapshots through a `Recorder` (module docstring)."""

    def __init__(self, rec: Recorder, names: dict[str, str], snapshots: bool) -> None:
        self.rec = rec
        self._names = names  # TRL log key → series name
        self._snapshots = snapshots
        self._pending: tuple[int, dict[str, float], dict[str, np.ndarray]] | None = None
        self._last_snapshot = 0
        self._unknown: set[str] = set()

    @classmethod
    def create(cls, trainer: Any, path: Path, runner: HookRunner, meta: dict[str, Any], config_toml: str,
               overwrite: bool, unmeasured: dict[str, str]) -> "RunWriter":
        """Declare everything the run will write (instruments, TRL's series, extras, the ``unmeasured``: name →
        why it stays NaN) and open it."""
        grouped = trainer.args.steps_per_generation == trainer.args.gradient_accumulation_steps
        units = noise_unit(grouped)
        series = {name: units.get(name, text) for name, text in runner.declared_series().items()}
        names = {}
        for key, (name, text) in trl_series(trainer).items():
            name = name if name not in series else f"trl_{name}"  # an instrument's series keeps its name
            series.setdefault(name, text)
            names[key] = name
        series |= {k: v for k, v in {**EXTRA, **unmeasured}.items() if k not in series}
        tensors = lora_state_numpy(trainer.model) if hasattr(trainer.model, "peft_config") else {}
        schema = RunSchema(series=series, arrays=runner.declared_arrays(),
                           sample_fields=[*(safe_name(n) for n in trainer.reward_func_names), "advantage", "length"],
                           snapshot_tensors={k: tuple(v.shape) for k, v in tensors.items()})
        meta = {**meta, "unmeasured": json.dumps(unmeasured, ensure_ascii=False)}
        rec = Recorder.create(path, schema, config_toml=config_toml, meta=meta, overwrite=overwrite)
        if tensors:  # the adapter before the first update (B = 0), as `discrepancy train` records it: the baseline
            rec.log_snapshot(0, tensors)  # of every curve over snapshots (LLC, probes)
        warnings.warn(f"discrepancy: under TRL {', '.join(unmeasured)} cannot be measured and are recorded as NaN "
                      "(docs/trl.md; why: the run's meta 'unmeasured')", RuntimeWarning, stacklevel=3)
        if meta.get("model_rebuild") != "ok":
            warnings.warn(f"discrepancy: {meta['model_rebuild']}; `discrepancy llc` and `probe` will refuse this "
                          "run", RuntimeWarning, stacklevel=3)
        return cls(rec, names, bool(tensors))

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            try:
                self.flush()  # the steps done before the failure stay in the run
            except Exception:  # noqa: BLE001 - the original exception is the one to report
                pass
        self.rec.__exit__(exc_type, exc, tb)

    def step(self, step: int, metrics: dict[str, Any], generations: list[Generation], samples: int) -> None:
        """Keep ``step``'s row (TRL's log joins it), after writing the previous one; record its samples."""
        self.flush()
        scalars = {k: float(v) for k, v in metrics.items() if not isinstance(v, np.ndarray)}
        arrays = {k: v for k, v in metrics.items() if isinstance(v, np.ndarray)}
        self._pending = (step, scalars, arrays)
        for gen in generations:
            n = min(samples, len(gen.prompts))
            if n:
                self.rec.log_samples(step, prompt_ids=[prompt_key(p) for p in gen.prompts[:n]],
                                     prompts=gen.prompts[:n], completions=gen.completions[:n],
                                     fields={k: v[:n] for k, v in gen.fields.items()})

    def trl_logs(self, step: int, logs: dict[str, Any]) -> None:
        """Merge what TRL logged at ``step`` into its row; a key the run did not declare is said once and left out."""
        if self._pending is None or self._pending[0] != step:
            return
        for key, value in logs.items():
            name = self._names.get(key)
            if name is not None:
                self._pending[1][name] = math.nan if value is None else float(value)
            elif key not in IGNORED and not key.startswith("eval_") and key not in self._unknown:
                self._unknown.add(key)
                warnings.warn(f"discrepancy: TRL logged {key!r}, which this run did not declare; it is not recorded",
                              RuntimeWarning, stacklevel=2)

    def flush(self) -> None:
        """Write the kept row."""
        if self._pending is not None:
            step, scalars, arrays = self._pending
            self._pending = None
            self.rec.log_step(step, scalars, arrays=arrays)

    def snapshot(self, step: int, model: torch.nn.Module) -> None:
        """The adapter's tensors at ``step`` (after its optimizer step)."""
        if self._snapshots and step > self._last_snapshot:
            self.rec.log_snapshot(step, lora_state_numpy(model))
            self._last_snapshot = step

    def finish(self, step: int, model: torch.nn.Module) -> None:
        """Last row, a snapshot of the final adapter, status "finished"."""
        self.flush()
        if step > 0:
            self.snapshot(step, model)
        self.rec.finish()
