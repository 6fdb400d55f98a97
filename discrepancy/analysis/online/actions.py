"""What happens when an event fires while a run trains: the console line, the events array row, the user's command
(``early_warning.on_event``) and the stop decision (``--stop-on``). `LiveWatch` holds them for the trainer, which
calls ``step`` once per step, before recording the step's row.

The user's command never stops or slows training: it starts in the background (no shell: the template is split
first, then filled, so an event's text cannot inject words), a watcher thread kills it after its timeout, a failure
or a timeout is one notice, and at most ``MAX_RUNNING`` run at once (more are skipped with a notice). At the end of
the run, commands still running get what is left of their timeout, then are killed.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from discrepancy.analysis.online.config import EarlyWarningConfig
from discrepancy.analysis.online.events import EVENTS_ARRAY, VALUES_ARRAY, Event, at_least, event_rows
from discrepancy.analysis.online.monitor import Monitor

MAX_RUNNING = 4
Notify = Callable[[str], None]


class EventHook:
    """Runs ``template`` (e.g. ``notify-send {event} {step}``) for each event, in the background, with a timeout."""

    def __init__(self, template: str, timeout: float, notify: Notify | None = None) -> None:
        self.words = shlex.split(template)
        self.timeout, self.notify = timeout, notify or (lambda line: None)
        self.running: list[tuple[subprocess.Popen, float, threading.Thread]] = []

    def fire(self, ev: Event) -> None:
        """Start the command for ``ev``; returns at once."""
        self.running = [r for r in self.running if r[0].poll() is None]
        if len(self.running) >= MAX_RUNNING:
            self.notify(f"early_warning.on_event: {MAX_RUNNING} commands still running; not run for {ev.check}")
            return
        fill = dict(event=ev.check, step=ev.step, severity=ev.severity, series=ev.series, message=ev.message)
        argv = [w.format(**fill) for w in self.words]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self.notify(f"early_warning.on_event could not start ({exc.strerror or exc}); training goes on")
            return
        thread = threading.Thread(target=self._wait, args=(proc, argv[0]), daemon=True)
        thread.start()
        self.running.append((proc, time.monotonic() + self.timeout, thread))

    def _wait(self, proc: subprocess.Popen, name: str) -> None:
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.notify(f"early_warning.on_event: {name} ran past {self.timeout:g} s and was killed")
            return
        if code != 0:
            self.notify(f"early_warning.on_event: {name} exited with {code}; training goes on")

    def close(self) -> None:
        """Give commands still running what is left of their timeout, then kill them."""
        for proc, deadline, thread in self.running:
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if proc.poll() is None:
                proc.kill()
        self.running = []


class LiveWatch:
    """The monitor of a training run with its actions: console lines, events array rows, hook, stop decision.

    ``show`` receives each event (the command line prints ``Event.line()``), ``notify`` the monitor's own notices
    (a command that failed). ``stop_on`` is "never", "warning" or "critical": the first event that severe sets ``stop_reason``; the trainer
    then stops cleanly after the step (its row, snapshot and checkpoint written). ``record`` says whether the run
    file declares the events arrays (a run created before they existed does not).
    """

    def __init__(self, cfg: EarlyWarningConfig, *, stop_on: str = "never", notify: Notify | None = None,
                 show: Callable[[Event], None] | None = None, record: bool = True) -> None:
        self.monitor = Monitor(cfg)
        self.stop_on, self.notify, self.show, self.record = stop_on, notify, show, record
        self.hook = EventHook(cfg.on_event, cfg.on_event_timeout, notify) if cfg.on_event else None
        self.stop_reason: str | None = None
        self.failed = False
        self.dossier_steps = cfg.dossier_steps
        self.dossier: tuple[int, int] | None = None  # (event step, last step) of the evidence being kept

    def replay(self, rows: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        """Feed a resumed run's recorded rows: the monitor continues where it was, nothing is printed or run."""
        self.monitor.replay(rows)

    def step(self, step: int, metrics: Mapping[str, float]) -> dict[str, np.ndarray]:
        """Judge one step; act on its events; the arrays to record with the step's row ({} when not recorded)."""
        if self.failed:
            return {}
        try:
            events = self.monitor.update(step, metrics)
        except Exception as exc:  # a monitoring bug must never stop training: say so once, go on without it
            self.failed = True
            if self.notify:
                self.notify(f"early warning switched off after an error at step {step}: {exc!r}")
            return {}
        for ev in events:
            if self.show:
                self.show(ev)
            if self.hook is not None:
                self.hook.fire(ev)
            if self.dossier_steps and at_least(ev.severity, "warning") and not self.in_dossier(step):
                self.dossier = (step, step + self.dossier_steps)
            if self.stop_reason is None and self.stop_on != "never" and at_least(ev.severity, self.stop_on):
                self.stop_reason = f"stopped by early warning at step {ev.step}: {ev.severity} {ev.check}"
        if not self.record:
            return {}
        codes, values = event_rows(events, self.monitor.columns)
        return {EVENTS_ARRAY: codes, VALUES_ARRAY: values}

    def in_dossier(self, step: int) -> bool:
        """Whether ``step`` is inside an event's evidence window: all its completions are recorded."""
        return self.dossier is not None and self.dossier[0] <= step <= self.dossier[1]

    def snapshot_due(self, step: int) -> bool:
        """Whether the evidence of an event wants a LoRA snapshot at ``step`` (the event's step, and the window's
        last step)."""
        return self.dossier is not None and step in self.dossier

    def close(self) -> None:
        """Wait for (or end) the user's commands still running."""
        if self.hook is not None:
            self.hook.close()
