"""Steps per draw: the autocorrelation time against AR(1)'s closed form, block-mean draws against the one-step
trace of the same chains, and how ``estimate_llc`` takes, records and validates the setting."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from aoyagi import gaussian_nll, gaussian_regression_data, orthonormal_dln  # noqa: E402

from discrepancy.analysis.llc.estimator import LLCError, estimate_llc  # noqa: E402
from discrepancy.analysis.llc.calibrate import MAX_STEPS_PER_DRAW, steps_per_draw_for  # noqa: E402
from discrepancy.analysis.llc.sgld import SGLDSettings, Target, run_chains  # noqa: E402
from discrepancy.analysis.llc.stats import autocorr_time  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_autocorr_time_matches_ar1_closed_form(phi: float) -> None:
    """An AR(1) process x_t = φ·x_{t−1} + e_t has τ = (1 + φ)/(1 − φ) exactly."""
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(8, 4000, generator=gen, dtype=torch.float64)  # [C, T]
    x = torch.zeros_like(e)
    x[:, 0] = e[:, 0] / (1 - phi**2) ** 0.5  # stationary start
    for t in range(1, x.shape[1]):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    assert autocorr_time(x) == pytest.approx((1 + phi) / (1 - phi), rel=0.15)


def test_steps_per_draw_rule_bounds() -> None:
    assert steps_per_draw_for(1.0) == 2  # ⌈2τ⌉
    assert steps_per_draw_for(2.2) == 5
    assert steps_per_draw_for(1e6) == MAX_STEPS_PER_DRAW
    assert steps_per_draw_for(float("inf")) == 1  # a diverged pilot has no usable τ


def test_draws_are_block_means_of_the_same_chains() -> None:
    """k steps per draw runs the very same SGLD trajectory as one step per draw with k times the draws (same noise
    stream, same batch order); each draw is the mean of its k steps."""
    model, teacher = orthonormal_dln([4, 2, 4], 1)
    data = gaussian_regression_data(teacher, 300, 100)  # 3 batches: the cycle does not align with k = 4
    target = Target(model, gaussian_nll, data, [k for k, _ in model.named_parameters()])
    base = dict(step_size=1e-3, localization=1.0, nbeta=50.0, num_chains=3, init_spread=0.05, seed=4)
    one = run_chains(target, SGLDSettings(num_draws=40, num_burnin=8, **base), vectorised=True)
    four = run_chains(target, SGLDSettings(num_draws=10, num_burnin=2, steps_per_draw=4, **base), vectorised=True)
    torch.testing.assert_close(four.deltas, one.deltas.reshape(3, 12, 4).mean(-1))
    torch.testing.assert_close(four.gdots, one.gdots.reshape(3, 12, 4).mean(-1))


def test_estimate_llc_records_and_validates_steps_per_draw() -> None:
    model, teacher = orthonormal_dln([4, 2, 4], 1)
    data = gaussian_regression_data(teacher, 2000, 200)
    kw = dict(num_chains=2, num_draws=10, num_burnin=2, step_size=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert estimate_llc(model, gaussian_nll, data, **kw).settings["steps_per_draw"] == 1  # given ε: unthinned
        res = estimate_llc(model, gaussian_nll, data, steps_per_draw=3, **kw)
        assert res.settings["steps_per_draw"] == 3
        assert res.loss_traces.shape == (2, 10)  # draws, not steps
        auto = estimate_llc(model, gaussian_nll, data, num_draws=40, num_burnin=10)
    chosen = next(p for p in auto.calibration.pilots if p.c == auto.calibration.c)
    assert auto.settings["steps_per_draw"] == steps_per_draw_for(chosen.tau)
    with pytest.raises(LLCError, match="steps_per_draw"):
        estimate_llc(model, gaussian_nll, data, steps_per_draw=0, **kw)
