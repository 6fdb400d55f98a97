"""Wall time of each instrument per step, recorded as series next to what the instruments measure.

`Timed` wraps one instrument and adds its own series `time_<key>` (seconds spent in its hooks this step);
`InstrumentTime` reports the sum over all wrapped instruments as `instrument_time`. Both report at
`on_after_optimizer`, so the registry puts `InstrumentTime` last. The shared post-step forward is charged to the
first instrument that asks for it (the discrepancy operator when it is on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the trainer imports the instrumentation, never the other way round at run time
    from discrepancy.trainers.hooks import StepContext


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
    if ctx.input_ids.is_cuda:
        torch.cuda.synchronize(ctx.input_ids.device)


class Timed:
    """An instrument plus the time its hooks take; forwards every hook the inner instrument implements."""

    def __init__(self, key: str, inner: Any, clock: StepClock) -> None:
        self.key = key
        self.inner = inner
        self._clock = clock
        self._time_name = f"time_{key}"

    def series(self) -> dict[str, str]:
        """The inner series plus this instrument's time."""
        return {**self.inner.series(), self._time_name: f"seconds spent in the {self.key} instrument this step"}

    def arrays(self) -> dict[str, Any]:
        """The inner array specs, if any."""
        return self.inner.arrays() if hasattr(self.inner, "arrays") else {}

    def _run(self, hook: str, ctx: StepContext, *args: Any) -> dict[str, Any]:
        fn = getattr(self.inner, hook, None)
        if fn is None:
            return {}
        t0 = self._clock.timer()
        try:
            out = fn(ctx, *args) or {}
            _sync(ctx)
        except Exception as exc:
            # Name the wrapped measurement: the trainer's one-time warning only sees this wrapper's class.
            raise RuntimeError(f"{self.key}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._clock.add(self.key, self._clock.timer() - t0)
        return out

    def state_dict(self) -> Any:
        """The inner instrument's checkpoint state (None when it keeps none)."""
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state: Any) -> None:
        """Restore the inner instrument's checkpoint state."""
        if state is not None and hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state)

    def on_micro_backward(self, ctx: StepContext, k: int) -> dict[str, Any]:
        return self._run("on_micro_backward", ctx, k)

    def on_before_optimizer(self, ctx: StepContext) -> dict[str, Any]:
        return self._run("on_before_optimizer", ctx)

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, Any]:
        out = self._run("on_after_optimizer", ctx)
        return {**out, self._time_name: self._clock.spent.get(self.key, 0.0)}


class InstrumentTime:
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
