"""Phase transitions: jumps that several signals make at about the same step, grouped into one event.

Jumps sorted by step join the current group while they lie within max(``tolerance``, ``relative``·s₀) steps of the
group's first step s₀ (anchored, so a run with many jumps cannot chain them into one long "event"). "About the same
step" is relative, as on a log-step axis: 5 steps apart is one moment at step 500, 1,000 steps apart at step 200,000.
A group is a phase transition when its jumps come from at least ``min_families`` signal families, or from at least
``min_signals`` distinct signals of any family: with dozens of logged series, two related series of one family
(a loss and its EWMA) jumping together is a coincidence of bookkeeping, not a change of the whole run. Written out
(a dozen lines) because scipy's hierarchical clustering would need an O(k²) distance matrix and has no anchored rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRANSITION_COLUMNS = ["event", "step", "first_step", "last_step", "n_signals", "signals", "max_abs_z", "n_families"]


def group_transitions(
    jumps: pd.DataFrame, tolerance: int = 5, relative: float = 0.005, min_signals: int = 3, min_families: int = 2
) -> pd.DataFrame:
    """Phase transitions from a jump table (columns signal, step, z, optional family), strongest first, their ids
    in step order (``step_order_ids``).

    Strongest: most signals, then largest |z|. Without a ``family`` column every signal counts as its own family.
    Jumps group while they are within ``max(tolerance, relative·step)`` steps of the group's first jump, or one step
    after the group's last jump.

    ``step`` of an event is the median step of its jumps; ``signals`` a comma-separated list, strongest first.
    """
    if jumps.empty:
        return pd.DataFrame(columns=TRANSITION_COLUMNS)
    ordered = jumps.sort_values("step", kind="stable").reset_index(drop=True)
    steps = ordered["step"].to_numpy()
    group = np.zeros(steps.size, dtype=np.int64)  # [k]
    first = steps[0]
    for i in range(1, steps.size):
        # a group spans at most the tolerance from its first jump, unless the jumps go on at consecutive steps (or
        # at one step): a run of jumps without a gap is one event, not two transitions a step apart
        new = steps[i] - first > max(tolerance, relative * abs(first)) and steps[i] - steps[i - 1] > 1
        group[i] = group[i - 1] + int(new)
        first = steps[i] if new else first
    rows = []
    for _, part in ordered.groupby(group, sort=True):
        signals = part.assign(az=part["z"].abs()).sort_values("az", ascending=False)["signal"].drop_duplicates()
        families = part["family"].nunique() if "family" in part else len(signals)
        if not (len(signals) >= min_signals or (families >= min_families and len(signals) >= 2)):
            continue  # one signal's jumps, or a few signals of too few families: a coincidence, not a transition
        rows.append(
            dict(step=int(np.median(part["step"])), first_step=int(part["step"].min()), last_step=int(part["step"].max()),
                 n_signals=len(signals), signals=",".join(signals), max_abs_z=float(part["z"].abs().max()),
                 n_families=int(families))
        )
    out = pd.DataFrame(rows, columns=TRANSITION_COLUMNS[1:])
    out = out.sort_values(["n_signals", "max_abs_z"], ascending=False, kind="stable").reset_index(drop=True)
    out.insert(0, "event", step_order_ids("T", out["step"]))
    return out


def step_order_ids(prefix: str, steps: pd.Series) -> list[str]:
    """Ids numbered in step order (``T1`` the earliest), for a table listed strongest first: on every figure the
    labels then read T1, T2, … from left to right, as the jumps' and plateaus' ids do."""
    rank = steps.rank(method="first").astype(int) if len(steps) else steps
    return [f"{prefix}{int(r)}" for r in rank]
