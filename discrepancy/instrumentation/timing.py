"""Wall time of each instrument per step, recorded as series next to what the instruments measure.

`Timed` wraps one instrument and adds its own series `time_<key>` (seconds spent in its hooks this step);
`InstrumentTime` reports the sum over all wrapped instruments as `instrument_time`. Both report at
`on_after_optimizer`, so the registry puts `InstrumentTime` last. The measurements instruments share (the post-step
forward above all) have their own key, ``shared``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from discrepancy.instrumentation.hooks import Instrument, Metrics, StepContext
from discrepancy.runfile.schema import ArraySpec


@dataclass
class StepClock:
    """Seconds spent in instruments since the last report, per instrument key.

    `timer` is wall time by default; a benchmark on a shared CPU may pass `time.process_time` instead.
    """

    timer: Callable[[], float] = time.perf_counter
    spent: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.spent[key] = self.spent.get(key, 0.0) + seconds


def _sync(ctx: StepContext) -> None:
    # Device sync: without it GPU work launched by an instrument would be billed to whoever syncs next.
    if ctx.batch.input_ids.is_cuda:
        torch.cuda.synchronize(ctx.batch.input_ids.device)


class Timed(Instrument):
    """An instrument plus the time its hooks take; forwards every hook, its needs and what it provides."""

    def __init__(self, key: str, inner: Instrument, clock: StepClock) -> None:
        self.key = key
        self.inner = inner
        self.needs, self.provides = inner.needs, inner.provides
        self._clock = clock
        self._time_name = f"time_{key}"

    def series(self) -> dict[str, str]:
        """The inner series plus this instrument's time."""
        return {**self.inner.series(), self._time_name: f"seconds spent in the {self.key} instrument this step"}

    def arrays(self) -> dict[str, ArraySpec]:
        """The inner array specs."""
        return self.inner.arrays()

    def _run(self, ctx: StepContext, call: Callable[[], Metrics | None]) -> Metrics:
        t0 = self._clock.timer()
        try:
            out = call() or {}
            _sync(ctx)
        except Exception as exc:
            # Name the wrapped measurement: the runner's one-time warning only sees this wrapper's class.
            raise RuntimeError(f"{self.key}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._clock.add(self.key, self._clock.timer() - t0)
        return out

    def state_dict(self) -> Any:
        """The inner instrument's checkpoint state (None when it keeps none)."""
        return self.inner.state_dict()

    def load_state_dict(self, state: Any) -> None:
        """Restore the inner instrument's checkpoint state."""
        self.inner.load_state_dict(state)

    def on_micro_backward(self, ctx: StepContext, k: int) -> Metrics:
        return self._run(ctx, lambda: self.inner.on_micro_backward(ctx, k))

    def on_before_optimizer(self, ctx: StepContext) -> Metrics:
        return self._run(ctx, lambda: self.inner.on_before_optimizer(ctx))

    def on_after_optimizer(self, ctx: StepContext) -> Metrics:
        out = self._run(ctx, lambda: self.inner.on_after_optimizer(ctx))
        return {**out, self._time_name: self._clock.spent.get(self.key, 0.0)}


class InstrumentTime(Instrument):
    """Reports the step's total instrument time and starts the next step's count (registered last)."""

    def __init__(self, clock: StepClock) -> None:
        self._clock = clock

    def series(self) -> dict[str, str]:
        """One series."""
        return {"instrument_time": "seconds spent in all instruments this step (included in step_time)"}

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float]:
        total = sum(self._clock.spent.values())
        self._clock.spent.clear()
        return {"instrument_time": total}
