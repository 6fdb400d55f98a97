"""A series computed from a smoothed series is drawn but not searched (analysis.selection.FROM_SMOOTHED)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import analyze_series


def _noise_frame(n: int = 150, spike: int = 100) -> pd.DataFrame:
    """Gradient-noise series as instrumentation.grad_noise records them: one grad_sq spike at ``spike`` (×30),
    b_simple_ewma its EWMA-smoothed ratio, noise_snr = 8 groups / b_simple_ewma; ``snr_copy`` the same values under
    a name no rule covers (the control: searched, it shows the spike made a level change)."""
    rng = np.random.default_rng(3)
    grad_sq = 1.0 + 0.05 * rng.standard_normal(n)
    grad_sq[spike] *= 30.0
    trace = 4.0 + 0.2 * rng.standard_normal(n)
    s = pd.Series(trace).ewm(alpha=0.05).mean().to_numpy()
    g2 = pd.Series(grad_sq).ewm(alpha=0.05).mean().to_numpy()
    snr = 8.0 / (s / g2)
    return pd.DataFrame({"grad_sq": grad_sq, "noise_trace": trace, "b_simple": trace / grad_sq,
                         "b_simple_ewma": s / g2, "noise_snr": snr, "snr_copy": snr},
                        index=pd.Index(np.arange(1, n + 1), name="step"))


def test_a_series_computed_from_a_smoothed_one_is_drawn_not_searched():
    res = analyze_series(_noise_frame())
    assert (res.jumps["signal"] == "snr_copy").any()  # the planted spike does read as a level change when searched
    assert not (res.jumps["signal"] == "noise_snr").any() and not (res.plateaus["signal"] == "noise_snr").any()
    row = res.signals.set_index("signal").loc["noise_snr"]
    assert np.isnan(row["jump_fraction"])  # drawn (a summary row), never searched
    note = next(n for n in res.notes if n.startswith("2 smoothed series"))
    assert "b_simple_ewma, noise_snr" in note and "noise_snr from b_simple_ewma" in note
    assert "smoothing turns one spike into a level change" in note
