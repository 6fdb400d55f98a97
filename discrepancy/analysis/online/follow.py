"""Early warning for a run written elsewhere (``discrepancy watch``): the same monitor the trainer runs, fed the
rows of a run file as they are flushed (a live file is read through SWMR: ``runfile.opening``).

The monitor's settings are the run's own recorded ``[early_warning]`` section when it has one (a run of
``discrepancy train``), the defaults otherwise (a run written by another trainer, e.g. the TRL integration), so for
a run of ``discrepancy train`` watch prints the events the trainer raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from discrepancy.analysis.online.config import EarlyWarningConfig
from discrepancy.analysis.online.events import Event
from discrepancy.analysis.online.monitor import Monitor, frame_rows
from discrepancy.config import from_dict
from discrepancy.runfile import open_run


@dataclass
class WatchEnd:
    """How a watch ended: the run's status and message, and the last step seen."""

    status: str = "running"
    message: str = ""
    last_step: int = 0


@dataclass
class Progress:
    """What ``watch`` says on stderr while it follows a run: one line when it attaches (from which step), then at
    most one line every ``every`` seconds, and only when the run moved on (a CI log gets one line per ``every`` of a
    healthy run, none while it stalls); ``every`` ≤ 0 keeps only the first. Events are printed apart, as they come.
    """

    every: float = 10.0
    clock: Callable[[], float] = time.monotonic
    events: int = 0  # events printed so far (the caller counts them)
    _at: tuple[float, int] | None = None  # (clock, step) of the last line

    def line(self, path: str | Path, step: int) -> str | None:
        """The line to print after a read that reached ``step``, or None."""
        now = self.clock()
        if self._at is None:
            self._at = (now, step)
            where = f"from step {step}" if step else "(no step written yet)"
            return f"following {path} {where}: early-warning events print as they come; Ctrl-C stops"
        then, before = self._at
        if self.every <= 0 or now - then < self.every or step == before:
            return None
        self._at = (now, step)
        return f"at step {step} (+{step - before} in {now - then:.0f} s), {self.events} event(s) so far"


def run_monitor_config(recorded: dict) -> EarlyWarningConfig:
    """The run's recorded ``[early_warning]`` section as a config (defaults for what it lacks, or all of it)."""
    return from_dict(EarlyWarningConfig, dict(recorded.get("early_warning") or {}))


def watch_run(path: str | Path, *, follow: bool = True, interval: float = 2.0, end: WatchEnd | None = None,
              sleep: Callable[[float], None] = time.sleep,
              on_read: Callable[[WatchEnd], None] | None = None) -> Iterator[Event]:
    """Events of the run at ``path``: those of its steps so far, then (``follow``) of each step as it is flushed,
    until its writer finishes, fails, is interrupted or is gone. ``end`` receives how it ended; ``on_read(end)`` is
    called after each read of a run still being written, before the wait for the next (``Progress`` lines)."""
    end = end if end is not None else WatchEnd()
    with open_run(path) as run:
        monitor = Monitor(run_monitor_config(run.config))
        while True:
            run.refresh()
            status = run.status  # read before the rows: rows flushed before a final status are then all seen
            series = run.series()
            fresh = series.loc[end.last_step + 1 :] if len(series) else series
            for step, row in frame_rows(fresh):
                yield from monitor.update(step, row)
                end.last_step = step
            if not follow or status != "running":
                end.status, end.message = status, run.status_message
                return
            if on_read is not None:
                on_read(end)
            sleep(interval)
