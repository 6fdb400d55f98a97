"""Curriculum phases: the rule that ends a phase, the phase a step runs in, and the settings it trains with.

A phase ends when its ``max_steps`` run out (trigger 1) or when its ``end_when`` rule holds (trigger 2); the next
step runs in the next phase, and records ``phase`` (its 0-based index) and ``phase_trigger`` (1 or 2 at the first
step of a new phase, 0 on every other step). The last phase runs until the run ends.

Rule grammar (docs/curriculum.md)::

    rule   := clause ("and" clause)*
    clause := stat op number "over" N
    stat   := series | func "(" series ")"        func: mean | min | max | last | slope
    op     := ">=" | "<=" | ">" | "<"

A bare series means its mean. The window is the last N steps *of the current phase* (a phase never ends on what
the previous phase measured), so a rule can hold at the earliest at the phase's N-th step. NaN values are left out;
a window with no finite value (two for ``slope``) does not hold. ``slope`` is the least-squares slope per step.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from discrepancy.errors import ConfigError
from discrepancy.trainers.curriculum_config import CurriculumConfig, PhaseConfig
from discrepancy.trainers.rewards import REWARD_RANGES
from discrepancy.trainers.schedules import cosine_interp

TRIGGER_NONE, TRIGGER_MAX_STEPS, TRIGGER_RULE = 0, 1, 2

CURRICULUM_SERIES = {
    "phase": "curriculum: 0-based index of the phase this step ran in",
    "phase_trigger": "curriculum: at the first step of a new phase, why the previous one ended: 1 = its max_steps "
                     "ran out, 2 = its end_when rule held; 0 on every other step",
}

_CLAUSE = re.compile(
    r"^\s*(?:(?P<func>mean|min|max|last|slope)\s*\(\s*(?P<inner>[A-Za-z_][\w.]*)\s*\)|(?P<bare>[A-Za-z_][\w.]*))"
    r"\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s+over\s+(?P<n>\d+)\s*$")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Clause:
    """``func(series) op value over window``."""

    func: str
    series: str
    op: str
    value: float
    window: int

    def statistic(self, values: list[float]) -> float:
        """The clause's statistic of the window ``values`` (oldest first); NaN when it cannot be computed."""
        x = np.asarray(values, dtype=np.float64)
        steps = np.arange(x.size, dtype=np.float64)
        finite = np.isfinite(x)
        x, steps = x[finite], steps[finite]
        if x.size == 0 or (self.func == "slope" and x.size < 2):
            return math.nan
        if self.func == "slope":
            return float(np.polyfit(steps, x, 1)[0])  # least-squares slope per step
        return float({"mean": np.mean, "min": np.min, "max": np.max, "last": lambda v: v[-1]}[self.func](x))

    def holds(self, values: list[float]) -> bool:
        """Whether the clause holds on a full window (``values``: at least ``window`` values of this phase)."""
        if len(values) < self.window:
            return False
        stat = self.statistic(values[-self.window:])
        return math.isfinite(stat) and _OPS[self.op](stat, self.value)


@dataclass(frozen=True)
class Rule:
    """Clauses joined by ``and`` (the parsed ``end_when``)."""

    text: str
    clauses: tuple[Clause, ...]

    @property
    def series(self) -> set[str]:
        return {c.series for c in self.clauses}

    @property
    def window(self) -> int:
        return max(c.window for c in self.clauses)

    def holds(self, history: Mapping[str, list[float]]) -> bool:
        return all(c.holds(list(history.get(c.series, ()))) for c in self.clauses)


def parse_rule(text: str, where: str = "end_when") -> Rule:
    """Parse ``text`` by the grammar above; a malformed rule is one ConfigError naming ``where``."""
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip()):
        m = _CLAUSE.match(part)
        if m is None:
            raise ConfigError(f"config key '{where}': cannot read {part.strip()!r} as 'stat op number over N' (e.g. "
                              "'reward_format >= 0.9 over 20' or 'slope(reward_correctness) <= 0.001 over 30')")
        n = int(m["n"])
        if n < 1 or (m["func"] == "slope" and n < 2):
            raise ConfigError(f"config key '{where}': the window of {part.strip()!r} must be ≥ "
                              f"{2 if m['func'] == 'slope' else 1} steps")
        clauses.append(Clause(m["func"] or "mean", m["inner"] or m["bare"], m["op"], float(m["value"]), n))
    return Rule(text, tuple(clauses))


@dataclass(frozen=True)
class PhaseSettings:
    """What the current phase sets for one step (None: the run's own value)."""

    index: int
    name: str
    temperature: float | None
    beta: float | None
    difficulty: tuple[int, int] | None
    progress: float | None  # fraction of the phase's max_steps done before this step; None without max_steps


def _ranged(values: list[float], progress: float) -> float | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else cosine_interp(values[0], values[1], progress)


class Curriculum:
    """The phase state machine: which phase a step runs in and when the phase ends (see the module docstring)."""

    def __init__(self, cfg: CurriculumConfig) -> None:
        self.phases: list[PhaseConfig] = list(cfg.phases)
        self.rules = [parse_rule(p.end_when, f"curriculum.phases[{p.name}].end_when") if p.end_when else None
                      for p in self.phases]
        self.index = 0
        self.steps_in_phase = 0  # steps completed in the current phase
        self.pending_trigger = TRIGGER_NONE  # recorded at the first step of the phase just entered
        self.windows: dict[str, deque[float]] = {}
        self._reset_windows()

    @property
    def phase(self) -> PhaseConfig:
        return self.phases[self.index]

    def _reset_windows(self) -> None:
        rule = self.rules[self.index] if self.phases else None
        self.windows = {s: deque(maxlen=rule.window) for s in sorted(rule.series)} if rule else {}

    def settings(self) -> PhaseSettings:
        """The current phase's settings for the coming step."""
        p = self.phase
        progress = self.steps_in_phase / max(1, p.max_steps - 1) if p.max_steps else None
        at = min(1.0, progress) if progress is not None else 0.0
        diff = (int(p.difficulty[0]), int(p.difficulty[1])) if p.difficulty else None
        return PhaseSettings(self.index, p.name, _ranged(p.temperature, at), _ranged(p.beta, at), diff, progress)

    def step_series(self) -> dict[str, float]:
        """``phase`` and ``phase_trigger`` of the coming step; the trigger is reported once."""
        out = {"phase": float(self.index), "phase_trigger": float(self.pending_trigger)}
        self.pending_trigger = TRIGGER_NONE
        return out

    def observe(self, metrics: Mapping[str, float]) -> int:
        """Count a finished step of the current phase; returns the trigger when the phase ends after it (0: not)."""
        self.steps_in_phase += 1
        for name, window in self.windows.items():
            window.append(float(metrics.get(name, math.nan)))
        if self.index >= len(self.phases) - 1:
            return TRIGGER_NONE  # the last phase runs until the run ends
        rule = self.rules[self.index]
        trigger = TRIGGER_NONE
        if rule is not None and rule.holds({k: list(v) for k, v in self.windows.items()}):
            trigger = TRIGGER_RULE
        elif self.phase.max_steps and self.steps_in_phase >= self.phase.max_steps:
            trigger = TRIGGER_MAX_STEPS
        if trigger:
            self.index += 1
            self.steps_in_phase = 0
            self.pending_trigger = trigger
            self._reset_windows()
        return trigger

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "steps_in_phase": self.steps_in_phase, "pending_trigger": self.pending_trigger,
                "windows": {k: list(v) for k, v in self.windows.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.index = int(state["index"])
        self.steps_in_phase = int(state["steps_in_phase"])
        self.pending_trigger = int(state["pending_trigger"])
        self._reset_windows()
        for name, values in dict(state.get("windows", {})).items():
            if name in self.windows:
                self.windows[name].extend(float(v) for v in values)


def check_curriculum(cfg: CurriculumConfig, *, rewards: Iterable[str], series: Iterable[str],
                     difficulties: Iterable[int]) -> None:
    """Refuse, in one line, a phase that names an unknown reward, a rule on a series the run does not record, or a
    difficulty range that holds no prompt of the task."""
    rewards, series, levels = set(rewards), set(series), sorted(set(difficulties))
    for p in cfg.phases:
        where = f"curriculum.phases[{p.name}]"
        unknown = sorted((set(p.reward_weights) | set(p.locked_rewards)) - rewards)
        if unknown:
            raise ConfigError(f"config key '{where}': reward {', '.join(map(repr, unknown))} is not in rewards.names "
                              f"({', '.join(sorted(rewards))})")
        if p.end_when:
            missing = sorted(parse_rule(p.end_when, f"{where}.end_when").series - series)
            if missing:
                raise ConfigError(f"config key '{where}.end_when': the run records no series {', '.join(missing)} "
                                  f"(did you mean {_closest(missing[0], series)}?)")
        if p.difficulty and not any(p.difficulty[0] <= d <= p.difficulty[1] for d in levels):
            raise ConfigError(f"config key '{where}.difficulty': no prompt of the task has a difficulty in "
                              f"{p.difficulty} (the task's levels: {levels})")


def unreachable_rules(cfg: CurriculumConfig, ranges: Mapping[str, tuple[float, float]] | None = None) -> list[str]:
    """One warning per phase rule that can never hold: a window longer than the phase's ``max_steps`` (the phase
    always ends by its step limit first), or a clause on a reward's mean, min, max or last value past the reward's
    range (``reward_format >= 1.5`` for a reward in [0, 1]). ``ranges``: reward name → (lowest, highest). The last
    phase runs to the end of the run and has no rule to check."""
    ranges = REWARD_RANGES if ranges is None else ranges
    out = []
    for p in cfg.phases[:-1]:
        if not p.end_when:
            continue
        rule, where = parse_rule(p.end_when), f"curriculum phase {p.name!r}: end_when {p.end_when!r}"
        if p.max_steps > 0 and rule.window > p.max_steps:
            out.append(f"{where} can never hold: its window of {rule.window} steps is longer than the phase's "
                       f"max_steps {p.max_steps}, so the phase ends by its step limit")
        for c in rule.clauses:
            lo, hi = ranges.get(c.series.removeprefix("reward_"), (-math.inf, math.inf)) \
                if c.series.startswith("reward_") and c.func != "slope" else (-math.inf, math.inf)
            never = {">=": c.value > hi, ">": c.value >= hi, "<=": c.value < lo, "<": c.value <= lo}[c.op]
            if never:
                out.append(f"{where} can never hold: {c.series} lies in [{lo:g}, {hi:g}]")
    return out


def _closest(name: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.4)
    return repr(close[0]) if close else "a series of `discrepancy inspect RUN`"
