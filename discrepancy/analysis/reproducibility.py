"""Do a run's events recur across seeds? Events of N runs (rows of the events table, ``runfile.results.EVENT_DOCS``)
are matched within a step tolerance, and each group says in how many runs it recurs, where, and how likely that
many coincidences would be by chance.

Matching rules:
- events match only within one key: the kind, the series (empty for phase transitions and episodes, whose series
  differ from run to run) and, for jumps, the direction (a rise and a fall of a series are different events);
- a group holds at most one event per run and spans at most ``tolerance`` steps (complete linkage, built greedily in
  step order: an event joins the open group when it is within ``tolerance`` of the group's first step and its run is
  not in the group yet, otherwise it opens a new group);
- transients are left out by default: they are excursions that return, dozens per run, and chance alone makes many
  of them coincide.

Chance (``p_chance``): with run r holding n_r events of the key spread uniformly over T steps, an event of run r
falls within ±tolerance of a given step with probability q_r = 1 − (1 − min(1, (2·tol + 1)/T))^n_r. For a group
anchored on one run, ``p_chance`` is the probability that at least k − 1 of the other N − 1 runs have such an
event (a Poisson-binomial tail, computed exactly): small when the recurrence is evidence, near 1 when a series has
so many events that they coincide anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RECURRENCE_COLUMNS = ["group", "kind", "signal", "direction", "runs_with", "runs", "step_median", "step_min",
                      "step_max", "spread", "p_chance", "members"]
DEFAULT_KINDS = ("phase_transition", "episode", "jump", "plateau", "converged", "llc_stage", "emergence",
                 "forgetting")


def default_tolerance(num_steps: int) -> int:
    """Steps within which two runs' events are the same event: 5 % of the run, at least 3 steps."""
    return max(3, int(round(0.05 * num_steps)))


def match_events(events: Sequence[pd.DataFrame], num_steps: int, tolerance: int | None = None,
                 kinds: Sequence[str] = DEFAULT_KINDS) -> pd.DataFrame:
    """Group the events of N runs (one events table per run, in run order) into recurring events.

    ``num_steps``: the runs' common length T in steps (for the chance model). Returns one row per group
    (``RECURRENCE_COLUMNS``): the groups found in most runs first, then by kind (phase transitions before single
    series' events, in ``DEFAULT_KINDS`` order), least likely by chance first; ``members`` lists "run:step"."""
    tol = default_tolerance(num_steps) if tolerance is None else int(tolerance)
    if tol < 0:
        raise ValueError(f"tolerance must be ≥ 0 steps, not {tol}")
    pooled = _pool(events, kinds)
    rows = []
    for key, part in pooled.groupby(["kind", "signal", "direction"], sort=True):
        counts = part.groupby("run").size().reindex(range(len(events)), fill_value=0).to_numpy()
        for members in _groups(part.sort_values(["step", "run"]), tol):
            steps = np.array([s for _, s in members])
            k = len(members)
            rows.append({"kind": key[0], "signal": key[1], "direction": key[2], "runs_with": k,
                         "runs": len(events), "step_median": float(np.median(steps)), "step_min": int(steps.min()),
                         "step_max": int(steps.max()), "spread": int(steps.max() - steps.min()),
                         "p_chance": _p_chance(counts, [r for r, _ in members], tol, num_steps),
                         "members": ", ".join(f"{r}:{s}" for r, s in members)})
    out = pd.DataFrame(rows, columns=[c for c in RECURRENCE_COLUMNS if c != "group"])
    rank = out["kind"].map({k: i for i, k in enumerate(DEFAULT_KINDS)}).fillna(len(DEFAULT_KINDS))
    out = out.assign(_rank=rank).sort_values(["runs_with", "_rank", "p_chance", "step_median"],
                                             ascending=[False, True, True, True], kind="stable").drop(columns="_rank")
    out.insert(0, "group", [f"R{i + 1}" for i in range(len(out))])
    return out.reset_index(drop=True)


def _pool(events: Sequence[pd.DataFrame], kinds: Sequence[str]) -> pd.DataFrame:
    parts = []
    for run, ev in enumerate(events):
        ev = ev[ev["kind"].isin(kinds)]
        grouped = ev["kind"].isin(["phase_transition", "episode"])
        size = pd.to_numeric(ev.get("size", pd.Series(np.nan, index=ev.index)), errors="coerce")
        direction = np.where(ev["kind"].eq("jump") & size.notna(), np.where(size > 0, "up", "down"), "")
        parts.append(pd.DataFrame({"run": run, "kind": ev["kind"].astype(str),
                                   "signal": np.where(grouped, "", ev["signal"].fillna("").astype(str)),
                                   "direction": direction, "step": ev["step"].astype("int64")}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["run", "kind", "signal", "direction", "step"])


def _groups(part: pd.DataFrame, tol: int) -> list[list[tuple[int, int]]]:
    """Complete-linkage groups in step order, one event per run each (see the module's rules)."""
    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for run, step in zip(part["run"].astype(int), part["step"].astype(int)):
        if current and step - current[0][1] <= tol and run not in {r for r, _ in current}:
            current.append((run, step))
            continue
        if current:
            groups.append(current)
        current = [(run, step)]
    if current:
        groups.append(current)
    return groups


def _p_chance(counts: np.ndarray, members: list[int], tol: int, num_steps: int) -> float:
    """P(at least k − 1 of the other runs have an event of the key within ±tol of the anchor) by chance."""
    k, n = len(members), len(counts)
    if n < 2:
        return float("nan")
    window = min(1.0, (2 * tol + 1) / max(num_steps, 1))
    anchor = members[0]
    q = [1.0 - (1.0 - window) ** int(counts[r]) for r in range(n) if r != anchor]
    dist = np.zeros(len(q) + 1)  # Poisson-binomial distribution of how many other runs coincide
    dist[0] = 1.0
    for p in q:
        dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
        dist[0] *= 1 - p
    return float(min(1.0, dist[k - 1:].sum()))
