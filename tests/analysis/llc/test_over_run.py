"""LLC over a run's LoRA snapshots: frozen settings, resumability, outputs, stage boundaries (CLI: tests/cli)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from discrepancy.analysis.llc.over_run import llc_over_run
from discrepancy.analysis.llc.stages import llc_stage_events, range_threshold, stage_boundaries

from sample_runs import PAIRS, STEPS
from sample_runs import tiny_snapshot_run as _tiny_run


def test_stage_boundaries_are_turns_beyond_the_error_bars() -> None:
    """A turn counts when both of its legs exceed z combined standard errors (z = 3.16 for 10 estimates); the same
    curve with error bars that cover the turn has none (the rule changed from critical points of the smoothed curve,
    which ignored the bars)."""
    steps = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    rise_fall = [1, 2, 3, 4, 5, 6, 5, 4, 3, 2]  # maximum at step 100
    assert stage_boundaries(steps, rise_fall, [0.1] * 10) == [100]
    assert stage_boundaries(steps, rise_fall, [1.0] * 10) == []  # the rise 6 − 1 = 5 > 4.5, the fall 6 − 2 = 4 < 4.5
    assert stage_boundaries(steps, list(range(10)), [0.1] * 10) == []  # monotone: no stage boundary
    dip = [5, 4, 3, 2, 1, 2, 3, 4, 5, 6]  # minimum at step 30
    assert stage_boundaries(steps, dip, [0.1] * 10) == [30]
    assert stage_boundaries(steps, [1, 5, 1, 5, 1, 5, 1, 5, 1, 5], [0.1] * 10) == [1, 3, 10, 30, 100, 300, 1000, 3000]
    # one estimate with huge error bars cannot make a turn on its own
    assert stage_boundaries(steps, [1, 1, 1, 1, 9, 1, 1, 1, 1, 1], [0.1] * 4 + [5.0] + [0.1] * 5) == []
    events = llc_stage_events(pd.DataFrame({"step": steps, "llc_mean": [float(v) for v in dip], "llc_se": 0.1}))
    assert list(events["step"]) == [30] and events["kind"].iloc[0] == "llc_stage" and events["level"].iloc[0] == 1.0
    assert events["event"].iloc[0] == "L1" and pd.isna(events["score"].iloc[0])


def test_stage_boundaries_false_alarms_and_power_on_noisy_curves() -> None:
    """Estimates = truth + Gaussian noise of their standard error (10 snapshots, 400 curves each). A flat truth
    yields a boundary in at most 5 % of curves (the stated level); a rise and fall of 6 s.e. per leg is found (at the
    peak ± 1 snapshot) in at least 80 %."""
    rng = np.random.default_rng(3)
    steps, se = list(range(10)), np.full(10, 1.0)
    flat = sum(bool(stage_boundaries(steps, rng.normal(50.0, se), se)) for _ in range(400)) / 400
    peak = 50 + 6 * np.minimum(np.arange(10), 9 - np.arange(10)) / 4.5  # +6 s.e. from the ends to the middle
    found = [stage_boundaries(steps, peak + rng.normal(0.0, se), se) for _ in range(400)]
    hit = sum(any(abs(b - 4.5) <= 1.5 for b in f) for f in found) / 400
    print(f"flat: {flat:.1%} with a boundary; planted turn found in {hit:.1%}")
    assert flat <= 0.05 and hit >= 0.80
    assert range_threshold(10) == pytest.approx(3.164, abs=0.01)  # scipy's studentized range, df → ∞


@pytest.mark.slow
def test_llc_over_run_is_frozen_resumable_and_written(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = _tiny_run(tmp_path)
    out = tmp_path / "out"
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = llc_over_run(run, out, num_chains=2, num_draws=10, num_burnin=4,
                             on_snapshot=lambda d, t, s: seen.append((d, t, s)))
    assert list(table["step"]) == list(STEPS) and seen[-1] == (3, 3, 20)
    assert np.isfinite(table["llc_mean"]).all()
    settings = json.loads((out / "llc_settings.json").read_text())
    # nβ = n/log n with n the number of completion tokens: one answer digit + EOS per pair
    assert settings["probe_tokens"] == 2 * len(PAIRS)
    assert settings["nbeta"] == pytest.approx(8 / np.log(8))
    assert (out / "llc.png").stat().st_size > 0 and (out / "llc_stages.csv").exists()
    # Resume: drop the last row; only that snapshot is recomputed, the others are kept verbatim.
    csv = out / "llc.csv"
    full = pd.read_csv(csv)
    full.iloc[:2].to_csv(csv, index=False)
    seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = llc_over_run(run, out, num_chains=2, num_draws=10, num_burnin=4,
                             on_snapshot=lambda d, t, s: seen.append((d, t, s)))
    assert seen == [(3, 3, 20)]
    pd.testing.assert_frame_equal(again.iloc[:2], full.iloc[:2], check_dtype=False)
    # Same frozen settings and seed → the recomputed snapshot gives the same number.
    assert again["llc_mean"].iloc[2] == pytest.approx(full["llc_mean"].iloc[2], rel=1e-6)
