"""Curriculum phase switches of a run, and whether the detected phase transitions coincide with them.

A curriculum run records two series (docs/curriculum.md): ``phase``, the 0-based index of the phase each step ran
in, and ``phase_trigger``, set at the first step of a new phase to what ended the previous one (1: its
``max_steps`` ran out, 2: its ``end_when`` rule held; 0 elsewhere). The phases' names and rules are read from the
config stored in the run (``curriculum.phases``). A switch is set by the trainer, not learned: the two series are
never searched for jumps (``selection``), and a transition found at a switch is the switch's effect, not an
emergent change; one found away from every switch is the run's own.
"""

from __future__ import annotations

import math
import tomllib
from typing import Any

import numpy as np
import pandas as pd

PHASE, PHASE_TRIGGER = "phase", "phase_trigger"
TRIGGERS = {1: "max_steps", 2: "end_when"}
SWITCH_COLUMNS = ["event", "step", "from_phase", "phase", "trigger", "rule"]
MATCH_COLUMNS = ["switch", "switch_step", "phase", "trigger", "transition", "transition_step", "lag", "coincide"]


def tolerance(num_steps: int) -> int:
    """Steps before a switch within which a transition still counts as at it: max(3, 2 % of the run). A
    transition's step is the median of its jumps, and the analysis places a jump within a few steps."""
    return max(3, int(math.ceil(0.02 * max(num_steps, 0))))


def response(num_steps: int) -> int:
    """Steps after a switch within which a transition that starts there counts as its effect: 3 × `tolerance`.

    A switch changes the reward weights, the prompts or the modules that train at one step, and the curves answer
    over the next updates (the policy has to move before its samples do): a transition that begins up to this many
    steps after the switch is the switch's; one that begins later, or ends before it, is the run's own.
    """
    return 3 * tolerance(num_steps)


def _phases_of(config_toml: str) -> list[dict[str, Any]]:
    """The ``curriculum.phases`` tables of a stored config ([] when absent or unreadable)."""
    if not config_toml:
        return []
    try:
        cfg = tomllib.loads(config_toml)
    except tomllib.TOMLDecodeError:
        return []
    phases = (cfg.get("curriculum") or {}).get("phases") or []
    return [p for p in phases if isinstance(p, dict)] if isinstance(phases, list) else []


def edge_phases(phase: Any, config_toml: str, edge: float) -> tuple[str, str] | None:
    """(phase names of the first ``edge`` share of the logged steps, of the last) when they differ, else None:
    a start-to-end comparison then crosses curriculum phases, whose reward weights and prompts differ.
    ``phase``: the run's ``phase`` series (0-based index per step; NaN where not logged)."""
    import numpy as np

    idx = np.asarray(phase, dtype=np.float64)
    idx = idx[np.isfinite(idx)].astype(np.int64)
    if idx.size < 2:
        return None
    k = max(1, int(round(edge * idx.size)))
    first, last = sorted(set(idx[:k].tolist())), sorted(set(idx[-k:].tolist()))
    if first == last:
        return None
    phases = _phases_of(config_toml)
    return ("/".join(_name(phases, i) for i in first), "/".join(_name(phases, i) for i in last))


def _name(phases: list[dict[str, Any]], k: int) -> str:
    name = phases[k].get("name") if 0 <= k < len(phases) else None
    return str(name) if name else f"phase {k}"


def _rule(phases: list[dict[str, Any]], k: int, trigger: str) -> str:
    """What ended phase ``k``, in the config's words."""
    p = phases[k] if 0 <= k < len(phases) else {}
    if trigger == "end_when":
        return str(p.get("end_when") or "its end_when rule")
    if trigger == "max_steps":
        return f"max_steps = {p['max_steps']}" if p.get("max_steps") is not None else "its step budget"
    return ""


def phase_switches(frame: pd.DataFrame, config_toml: str = "") -> pd.DataFrame:
    """One row per phase switch (SWITCH_COLUMNS): the first step of each new phase, the phase left and entered,
    what triggered it (``max_steps``, ``end_when`` or ``unknown`` when the run did not record ``phase_trigger``)
    and the rule's text from the stored config. Empty when the run has no ``phase`` series or one phase."""
    if PHASE not in frame.columns:
        return pd.DataFrame(columns=SWITCH_COLUMNS)
    phase = frame[PHASE]
    phase = phase[np.isfinite(phase.to_numpy(dtype=np.float64))]
    if len(phase) < 2:
        return pd.DataFrame(columns=SWITCH_COLUMNS)
    values = phase.to_numpy(dtype=np.float64)
    at = np.flatnonzero(values[1:] != values[:-1]) + 1
    phases = _phases_of(config_toml)
    trig = frame[PHASE_TRIGGER] if PHASE_TRIGGER in frame.columns else None
    rows = []
    for i, pos in enumerate(at):
        step = int(phase.index[pos])
        old, new = int(values[pos - 1]), int(values[pos])
        code = trig.get(step, np.nan) if trig is not None else np.nan
        trigger = TRIGGERS.get(int(code), "unknown") if np.isfinite(code) else "unknown"
        rows.append({"event": f"W{i + 1}", "step": step, "from_phase": _name(phases, old),
                     "phase": _name(phases, new), "trigger": trigger, "rule": _rule(phases, old, trigger)})
    return pd.DataFrame(rows, columns=SWITCH_COLUMNS)


def switches_vs_transitions(switches: pd.DataFrame, transitions: pd.DataFrame, num_steps: int) -> pd.DataFrame:
    """Each switch with the detected phase transition it explains, then each transition no switch explains
    (MATCH_COLUMNS; ``coincide``: yes / no; lag = transition step − switch step). A transition is a switch's when
    its step is at most `tolerance` steps before the switch and its first step at most `response` steps after;
    each transition goes to one switch at most, the nearest first."""
    before, after = tolerance(num_steps), response(num_steps)
    free = {t.event: (int(t.step), int(getattr(t, "first_step", t.step))) for t in transitions.itertuples()} \
        if len(transitions) else {}
    rows = []
    for s in switches.itertuples():
        near = sorted((abs(step - s.step), ev) for ev, (step, first) in free.items()
                      if step - s.step >= -before and first - s.step <= after)
        ev = near[0][1] if near else None
        step = free.pop(ev)[0] if ev is not None else None
        rows.append({"switch": s.event, "switch_step": int(s.step), "phase": s.phase, "trigger": s.trigger,
                     "transition": ev or "", "transition_step": step if step is not None else np.nan,
                     "lag": (step - int(s.step)) if step is not None else np.nan,
                     "coincide": "yes" if ev is not None else "no"})
    if len(switches):  # transitions no switch explains: the run's own changes
        rows += [{"switch": "", "switch_step": np.nan, "phase": "", "trigger": "", "transition": ev,
                  "transition_step": step, "lag": np.nan, "coincide": "no"}
                 for ev, (step, _) in sorted(free.items(), key=lambda kv: kv[1][0])]
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def chance_of_coincidence(transitions: pd.DataFrame, num_steps: int) -> float:
    """Share of steps in the run's middle 80 % at which a switch *without* effect would still be matched by one of
    ``transitions`` (the switch slid over the run, `switches_vs_transitions`'s window): how often a coincidence
    alone gives a match in this run. NaN for a run too short to slide over.

    A match says the timing fits, not that the switch caused the transition; with a handful of transitions in a
    run of a few hundred steps this rate is 0.2–0.45 (benchmarks/results/phase_match.md), so a match is evidence
    only when the rate is small or the lag is near 0 for several switches.
    """
    margin = -(-num_steps // 10)
    lo, hi = margin, num_steps - margin
    if hi < lo or len(transitions) == 0:
        return 0.0 if hi >= lo else math.nan
    before, after = tolerance(num_steps), response(num_steps)
    spans = [(int(t.step), int(getattr(t, "first_step", t.step))) for t in transitions.itertuples()]
    hits = sum(any(step - s >= -before and first - s <= after for step, first in spans) for s in range(lo, hi + 1))
    return hits / (hi - lo + 1)
