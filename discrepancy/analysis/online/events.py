"""What the early-warning monitor reports: one `Event` per rule firing or level change, and how events are kept in
a run file (the ``early_warning`` array: one column per check, its severity code at the step it fired, 0 elsewhere).

Why an array and not a new kind of dataset: arrays are per-step tables with named columns that every run file
already declares, writes under SWMR and reads back (``Run.array``), so a run with events stays readable by every
reader of the format, and a run without them simply lacks the array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discrepancy.runfile.schema import ArraySpec

SEVERITIES = ("notice", "warning", "critical")
"""notice: a level change on a key series (something happened, maybe learning); warning: a silent-failure sign that
can be benign for a while; critical: training is no longer doing what it should (``--stop-on critical`` stops)."""

SEVERITY_CODE = {name: i + 1 for i, name in enumerate(SEVERITIES)}  # 0 = nothing fired at that step
EVENTS_ARRAY = "early_warning"
VALUES_ARRAY = "early_warning_value"


@dataclass(frozen=True)
class Event:
    """One event: ``check`` fired at ``step`` (the step whose values made it fire).

    ``value`` is the statistic that crossed its threshold (a rule's series value, or a level change's z-score);
    ``since`` the first step of the condition (a rule's first step of the streak, a level change's located step).
    """

    step: int
    check: str  # rule name, or "level:<series>"
    severity: str
    series: str
    value: float
    threshold: float
    since: int
    message: str

    @property
    def kind(self) -> str:
        """'level' for a level change of a series, 'rule' for a silent-failure rule."""
        return "level" if self.check.startswith("level:") else "rule"

    def line(self) -> str:
        """The console line: ``[early warning] step 120 critical entropy_collapse: ...``."""
        return f"[early warning] step {self.step} {self.severity} {self.check}: {self.message}"


def at_least(severity: str, floor: str) -> bool:
    """Whether ``severity`` is ``floor`` or worse."""
    return SEVERITY_CODE[severity] >= SEVERITY_CODE[floor]


def event_rows(events: list[Event], columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One step's events as the two array rows (severity codes, values) over ``columns``; unknown checks dropped."""
    codes = np.zeros(len(columns), dtype=np.float32)  # [C]
    values = np.full(len(columns), np.nan, dtype=np.float32)  # [C]
    where = {c: i for i, c in enumerate(columns)}
    for ev in events:
        i = where.get(ev.check)
        if i is not None and SEVERITY_CODE[ev.severity] >= codes[i]:
            codes[i], values[i] = SEVERITY_CODE[ev.severity], ev.value
    return codes, values


def event_arrays(columns: list[str]) -> dict[str, ArraySpec]:
    """The run file's events arrays over the monitor's ``columns`` (docs/run-format.md, docs/early-warning.md)."""
    codes = ", ".join(f"{i} {name}" for name, i in SEVERITY_CODE.items())
    return {
        EVENTS_ARRAY: ArraySpec(columns=list(columns), description=f"early-warning events: 0 none, {codes}"),
        VALUES_ARRAY: ArraySpec(columns=list(columns), description="the value that fired each event (NaN: none)"),
    }


def recorded_events(codes: object, values: object) -> list[tuple[int, str, str, float]]:
    """(step, check, severity, value) of every event in a run's two events arrays (DataFrames indexed by step)."""
    names = {i: name for name, i in SEVERITY_CODE.items()}
    out = []
    c = codes.to_numpy()  # type: ignore[attr-defined]
    v = values.to_numpy()  # type: ignore[attr-defined]
    steps = codes.index.to_numpy()  # type: ignore[attr-defined]
    cols = list(codes.columns)  # type: ignore[attr-defined]
    for i, j in zip(*np.nonzero(np.nan_to_num(c) > 0)):
        out.append((int(steps[i]), cols[j], names.get(int(c[i, j]), "?"), float(v[i, j])))
    return out
