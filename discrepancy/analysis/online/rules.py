"""Silent-failure rules: conditions on one step's metrics row that researchers otherwise write by hand.

Each rule reads named series of the row (the names the trainer records: ``trainers.recipe.STEP_SERIES`` and the
instruments' series), holds for ``patience`` steps in a row before it fires, fires once per streak (it re-arms when
the condition clears), and says in its message what crossed which threshold. Rules relative to the run's own level
compare with the median of the last ``REFERENCE_STEPS`` values at which the rule did not hold (so a collapse never
becomes its own reference), and wait for ``REFERENCE_MIN`` such values. The thresholds and why they are what they
are: docs/early-warning.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from discrepancy.analysis.online.events import Event

REFERENCE_STEPS = 100  # the run's own level: median of this many recent values at which the rule did not hold
REFERENCE_MIN = 10  # a relative rule judges nothing before it has this many


def _value(row: Mapping[str, float], name: str) -> float | None:
    """The row's finite value of ``name``; None when missing or NaN/inf (a rule on it cannot judge this step)."""
    v = row.get(name)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class Rule:
    """A condition that must hold ``patience`` consecutive judged steps; ``judge`` returns (holds, value) or None."""

    name = "rule"
    severity = "warning"
    counted_before = 0  # steps of the condition before its streak starts (a repeat needs a first value)

    def __init__(self, patience: int = 1) -> None:
        self.patience = patience
        self.streak = 0
        self.since = 0
        self.fired = False

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        """(holds, value, series, threshold) for this row, or None when the row cannot be judged."""
        raise NotImplementedError

    def message(self, value: float, threshold: float) -> str:
        """What the condition means, with the numbers."""
        raise NotImplementedError

    def update(self, step: int, row: Mapping[str, float]) -> Event | None:
        """Judge one step; the Event when this step completes a streak of ``patience`` steps."""
        verdict = self.judge(row)
        if verdict is None:
            return None  # no data: the streak neither grows nor breaks
        holds, value, series, threshold = verdict
        if not holds:
            self.streak, self.fired = 0, False
            return None
        if self.streak == 0:
            self.since = step
        self.streak += 1
        if self.fired or self.streak < self.patience:
            return None
        self.fired = True
        return Event(step, self.name, self.severity, series, value, threshold, self.since,
                     self.message(value, threshold) + (f" for {self.streak + self.counted_before} steps"
                                                          if self.patience + self.counted_before > 1 else ""))


class Limit(Rule):
    """``series`` ≥ ``limit`` (or ≤ when ``below``)."""

    def __init__(self, name: str, severity: str, series: str, limit: float, *, below: bool = False,
                 patience: int = 1, text: str = "") -> None:
        super().__init__(patience)
        self.name, self.severity, self.series, self.limit, self.below, self.text = (
            name, severity, series, limit, below, text)

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        v = _value(row, self.series)
        if v is None:
            return None
        return (v <= self.limit if self.below else v >= self.limit), v, self.series, self.limit

    def message(self, value: float, threshold: float) -> str:
        return f"{self.text} ({self.series} {value:.4g} {'≤' if self.below else '≥'} {threshold:.4g})"


class Relative(Rule):
    """``series`` ≤ ``factor`` × its reference (``below``) or ≥ ``factor`` × reference and ≥ ``floor`` (above).

    ``floor`` for a falling rule is an absolute level that counts by itself (a gradient norm ≤ 1e-10 is zero
    whatever came before); for a rising rule a level the value must also reach (a KL of 1e-5 that grew tenfold is
    still nothing).
    """

    def __init__(self, name: str, severity: str, series: str, factor: float, *, below: bool, floor: float = 0.0,
                 patience: int = 1, text: str = "") -> None:
        super().__init__(patience)
        self.name, self.severity, self.series, self.factor, self.below, self.floor, self.text = (
            name, severity, series, factor, below, floor, text)
        self.reference: deque[float] = deque(maxlen=REFERENCE_STEPS)
        self.level = math.nan

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        v = _value(row, self.series)
        if v is None:
            return None
        if len(self.reference) < REFERENCE_MIN:
            self.reference.append(v)
            return None
        self.level = float(np.median(self.reference))
        limit = self.factor * self.level
        if self.below:
            holds = v <= limit or v <= self.floor
            threshold = max(limit, self.floor)
        else:
            holds = v >= limit and v >= self.floor
            threshold = max(limit, self.floor)
        if not holds:
            self.reference.append(v)
        return holds, v, self.series, threshold

    def message(self, value: float, threshold: float) -> str:
        side = "below" if self.below else "above"
        return (f"{self.text} ({self.series} {value:.4g}, {side} {self.factor:g}× its recent median "
                f"{self.level:.4g}{f' / floor {self.floor:g}' if self.floor else ''})")


class RatioBounds(Rule):
    """Importance ratios π_new/π_old outside [1/``bound``, ``bound``] at any recorded quantile, or their token mean
    outside [1/√bound, √bound]: the update moved the policy far beyond the clip region."""

    name, severity = "ratio_out_of_bounds", "critical"
    QUANTILES = ("ratio_q01", "ratio_q99", "ratio_mean")

    def __init__(self, bound: float, patience: int = 1) -> None:
        super().__init__(patience)
        self.bound = bound

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        seen = False
        for name in self.QUANTILES:
            v = _value(row, name)
            if v is None:
                continue
            seen = True
            b = math.sqrt(self.bound) if name == "ratio_mean" else self.bound
            if v >= b or v <= 1.0 / b:
                return True, v, name, b if v >= b else 1.0 / b
        return (False, 1.0, "ratio_mean", self.bound) if seen else None

    def message(self, value: float, threshold: float) -> str:
        return f"importance ratio {value:.4g} beyond {threshold:.4g} (blowing up or collapsing)"


class NonFinite(Rule):
    """One of ``series`` is NaN/inf at this step after having been finite before (a series that is NaN by design,
    such as the KL when β = 0, never fires)."""

    name, severity = "non_finite", "critical"

    def __init__(self, series: Sequence[str]) -> None:
        super().__init__(1)
        self.series = list(series)
        self.seen: set[str] = set()
        self.bad = ""

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        self.bad = ""
        for name in self.series:
            if name not in row:
                continue
            if math.isfinite(float(row[name])):
                self.seen.add(name)
            elif name in self.seen and not self.bad:
                self.bad = name
        return bool(self.bad), math.nan if self.bad else 0.0, self.bad or self.series[0], math.nan

    def message(self, value: float, threshold: float) -> str:
        return f"{self.bad} is NaN/inf after finite values"


class FormatOverCorrectness(Rule):
    """Reward hacking sign: the format reward's mean over the last ``window`` steps is ≥ ``saturated`` while the
    correctness reward's window mean has fallen ≥ ``drop`` below its best earlier window mean."""

    name, severity = "format_over_correctness", "warning"

    def __init__(self, fmt: str, correct: str, *, window: int = 10, saturated: float = 0.95, drop: float = 0.1,
                 patience: int = 5) -> None:
        super().__init__(patience)
        self.fmt, self.correct, self.window, self.saturated, self.drop = fmt, correct, window, saturated, drop
        self.f: deque[float] = deque(maxlen=window)
        self.c: deque[float] = deque(maxlen=window)
        self.best = -math.inf
        self.now = (math.nan, math.nan)

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        f, c = _value(row, self.fmt), _value(row, self.correct)
        if f is None or c is None:
            return None
        self.f.append(f)
        self.c.append(c)
        if len(self.c) < self.window:
            return None
        fm, cm = float(np.mean(self.f)), float(np.mean(self.c))
        self.now = (fm, cm)
        holds = fm >= self.saturated and cm <= self.best - self.drop
        self.best = max(self.best, cm)
        return holds, cm, self.correct, self.best - self.drop

    def message(self, value: float, threshold: float) -> str:
        fm, cm = self.now
        return (f"format reward saturated ({self.fmt} {self.window}-step mean {fm:.3f}) while correctness fell "
                f"({self.correct} {cm:.3f}, best {self.best:.3f})")


# The trainer's reward weights (curriculum phases, fusion): held constant by design between phase switches.
NOT_COMPONENT_PREFIX = "reward_weight_"


class ConstantReward(Rule):
    """A reward component's batch mean repeats exactly for ``patience`` steps at a value strictly inside the range
    it took before: the reward function returns a constant. Means of per-completion rewards repeat exactly by chance
    only at their bounds (every completion scored 0, or 1: saturation, which ``no_signal`` covers), so those are not
    flagged. Components are the row's ``reward_*`` series other than the total's statistics and the trainer's
    ``reward_weight_*`` (a curriculum phase holds its weights constant on purpose)."""

    name, severity = "reward_constant", "critical"
    counted_before = 1
    NOT_COMPONENTS = ("reward_mean", "reward_std", "reward_unusable_frac")

    def __init__(self, patience: int = 10) -> None:
        super().__init__(patience - 1)  # the streak starts at the first repeat: ``patience`` equal values in a row
        self.state: dict[str, list[float]] = {}  # series → [last value, repeats, min before, max before]
        self.which = ""

    def judge(self, row: Mapping[str, float]) -> tuple[bool, float, str, float] | None:
        seen, hit = False, None
        for name, raw in row.items():
            if not name.startswith("reward_") or name in self.NOT_COMPONENTS or name.startswith(NOT_COMPONENT_PREFIX):
                continue
            v = _value(row, name)
            if v is None:
                continue
            seen = True
            st = self.state.setdefault(name, [math.nan, 0, math.inf, -math.inf])
            if v == st[0]:
                st[1] += 1
            else:
                if math.isfinite(st[0]):
                    st[2], st[3] = min(st[2], st[0]), max(st[3], st[0])
                st[0], st[1] = v, 1
            if hit is None and st[1] >= 2 and st[2] < v < st[3]:
                hit = name
        if not seen:
            return None
        self.which = hit or ""
        return hit is not None, row[hit] if hit else 0.0, hit or "reward_*", math.nan

    def message(self, value: float, threshold: float) -> str:
        return f"reward component {self.which} returns the constant {value:.4g} (inside its earlier range)"
