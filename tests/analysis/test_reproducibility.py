"""Event matching across runs on synthetic event sets with a known recurrence, and its chance model against a
simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.reproducibility import default_tolerance, match_events
from discrepancy.runfile.results import EVENT_COLUMNS


def _events(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"kind": k, "signal": s, "step": st, "size": size} for k, s, st, size in rows]) \
        .reindex(columns=EVENT_COLUMNS)


def test_planted_recurrence_is_found_with_its_spread() -> None:
    """A jump of reward in all three runs (steps 100, 104, 97), a plateau in two, a one-off, and a fall of reward
    at step 101 in one run (a rise and a fall are different events)."""
    runs = [_events([("jump", "reward", 100, 0.3), ("plateau", "loss", 40, np.nan), ("jump", "kl", 250, 1.0)]),
            _events([("jump", "reward", 104, 0.2), ("plateau", "loss", 45, np.nan), ("jump", "reward", 101, -0.1)]),
            _events([("jump", "reward", 97, 0.4)])]
    rec = match_events(runs, num_steps=300, tolerance=10)
    top = rec.iloc[0]
    assert (top["kind"], top["signal"], top["direction"], top["runs_with"]) == ("jump", "reward", "up", 3)
    assert (top["step_min"], top["step_max"], top["spread"], top["step_median"]) == (97, 104, 7, 100.0)
    plateau = rec[rec["kind"] == "plateau"].iloc[0]
    assert plateau["runs_with"] == 2 and plateau["members"] == "0:40, 1:45"
    assert set(rec[rec["runs_with"] == 1]["signal"]) == {"kl", "reward"}
    assert rec[(rec["signal"] == "reward") & (rec["direction"] == "down")]["runs_with"].tolist() == [1]
    assert list(rec["group"]) == [f"R{i + 1}" for i in range(len(rec))]


def test_a_group_spans_at_most_the_tolerance_and_holds_one_event_per_run() -> None:
    runs = [_events([("jump", "x", 10, 1.0), ("jump", "x", 14, 1.0)]), _events([("jump", "x", 30, 1.0)])]
    rec = match_events(runs, num_steps=100, tolerance=5)
    assert sorted(rec["runs_with"]) == [1, 1, 1]  # 10 and 14 are one run's two events; 30 is too far
    assert match_events(runs, num_steps=100, tolerance=25)["runs_with"].max() == 2


def test_transitions_match_whatever_their_series() -> None:
    a = _events([("phase_transition", "", 50, np.nan)]).assign(signals="reward,kl")
    b = _events([("phase_transition", "", 53, np.nan)]).assign(signals="entropy")
    rec = match_events([a, b], num_steps=200, tolerance=5)
    assert rec.iloc[0]["runs_with"] == 2 and rec.iloc[0]["kind"] == "phase_transition"


def test_chance_model_matches_a_simulation() -> None:
    """p_chance for a 3-of-3 group against the frequency of such coincidences among uniformly placed events."""
    rng = np.random.default_rng(0)
    T, tol, n_events = 500, 5, [4, 6, 3]
    rec = match_events([_events([("jump", "x", s, 1.0)]) for s in (100, 102, 98)], num_steps=T, tolerance=tol)
    hits, trials = 0, 4000
    for _ in range(trials):  # the anchor at a fixed step; do both other runs have an event within ±tol?
        others = [rng.integers(0, T, size=n) for n in n_events[1:]]
        hits += all(np.any(np.abs(o - 250) <= tol) for o in others)
    counts_runs = [_events([("jump", "x", int(s), 1.0) for s in rng.integers(0, T, size=n)]) for n in n_events]
    counts_runs[0].loc[0, "step"] = 250
    counts_runs[1].loc[0, "step"], counts_runs[2].loc[0, "step"] = 252, 248
    rec = match_events(counts_runs, num_steps=T, tolerance=tol)
    p = rec[rec["runs_with"] == 3]["p_chance"].iloc[0]
    assert p == pytest.approx(hits / trials, abs=0.02)
    assert 0 < p < 0.05  # a 3-of-3 recurrence of rare events is evidence


def test_tolerance_default_and_bad_value() -> None:
    assert default_tolerance(300) == 15 and default_tolerance(20) == 3
    with pytest.raises(ValueError, match="tolerance"):
        match_events([_events([])], num_steps=10, tolerance=-1)
