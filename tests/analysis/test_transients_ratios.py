"""Ratios whose denominator passes near 0 do not lead the transients, and widths are in steps
(analysis.transients.RATIO_SERIES, transient_rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import analyze_series
from discrepancy.analysis.transients import transient_rows


def test_a_ratios_spikes_at_a_near_zero_denominator_are_left_out_and_named():
    """B_simple = Ŝ/|G|²: |G|² drops to 0.002 of its level at steps 100 and 200 (the ratio ×500, nothing learned);
    Ŝ itself jumps ×4 for one step at 150 (a real excursion of the noise scale). Only 150 is a transient."""
    rng = np.random.default_rng(3)
    n = 300
    num = 1.0 + 0.1 * rng.standard_normal(n)
    den = 1.0 + 0.1 * rng.standard_normal(n)
    den[[100, 200]] = 0.002
    num[150] = 4.0
    frame = pd.DataFrame({"noise_trace": num, "grad_sq": den, "b_simple": num / den},
                         index=pd.Index(np.arange(n), name="step"))
    res = analyze_series(frame)
    spikes = res.transients[res.transients["signal"] == "b_simple"]
    assert list(spikes["step"]) == [150] and abs(spikes["size"].iloc[0] - 3.0) < 0.5  # in B_simple's own units
    note = [x for x in res.notes if "denominator was near 0" in x]
    assert len(note) == 1 and "b_simple at 100 (grad_sq 0.002), 200 (grad_sq 0.002)" in note[0]
    top = res.transients.sort_values("z", ascending=False).iloc[0]
    assert (top["signal"], top["step"]) in {("b_simple", 150), ("noise_trace", 150)}  # the real excursion leads


def test_width_is_in_steps():
    """A one-row spike of a series logged every 4th step spans 4 steps; of a long series read as block means of 4
    rows logged every 10th step, 40."""
    rng = np.random.default_rng(5)
    y = rng.standard_normal(300)
    y[150] += 12.0
    rows = transient_rows(y, np.arange(300) * 4)
    assert [(r["step"], r["width"]) for r in rows] == [(600, 4)]
    y = rng.standard_normal(200_000)
    y[123_456] += 400.0
    rows = transient_rows(y, np.arange(200_000) * 10, max_points=50_000)
    assert [(r["step"], r["width"]) for r in rows] == [(1_234_560, 40)]
