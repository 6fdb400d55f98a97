"""The estimator never ends in an exception on a well-posed model: diverging chains make it halve the step size and
say so; only a model that diverges at every step size raises. Its result prints as one line with a health verdict."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from aoyagi import gaussian_nll, gaussian_regression_data, orthonormal_dln  # noqa: E402

from discrepancy.analysis.llc.estimator import MAX_BACKOFFS, LLCError, estimate_llc  # noqa: E402

torch.set_num_threads(1)
QUIET = dict(num_chains=3, num_draws=20, num_burnin=5)


def _estimate(*args, **kw):  # noqa: ANN002, ANN003, ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimate_llc(*args, **kw)


def test_backoff_halves_a_diverging_step_and_records_it() -> None:
    """ε = 10 blows every chain up (ε·a_max ≈ 10⁴ ≫ 4); with back-off the call returns a finite estimate at
    10/2^k, the first k attempts having diverged and the last not."""
    model, teacher = orthonormal_dln([4, 3, 4], 2)
    data = gaussian_regression_data(teacher, 1000, 100)
    res = _estimate(model, gaussian_nll, data, step_size=10.0, backoff=True, **QUIET)
    k = len(res.backoff) - 1
    assert k >= 1 and all(a["diverged"] > 0 for a in res.backoff[:-1]) and res.backoff[-1]["diverged"] == 0
    assert res.settings["step_size"] == pytest.approx(10.0 / 2**k) and res.settings["step_size_first"] == 10.0
    assert [a["step_size"] for a in res.backoff] == pytest.approx([10.0 / 2**i for i in range(k + 1)])
    assert math.isfinite(res.llc_mean) and "halved" in repr(res)
    with pytest.raises(LLCError, match="given"):  # an explicit step size is honoured as given unless asked
        _estimate(model, gaussian_nll, data, step_size=10.0, **QUIET)


class _NowhereFinite(nn.Module):
    """A loss that is finite only exactly at w*: no step size can sample it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum() * 0 + torch.log(-self.w.abs().sum())  # log(0) at w* = 0 is -inf; NaN anywhere else


def test_only_a_model_that_diverges_at_every_step_size_raises() -> None:
    model = _NowhereFinite()
    data = [torch.ones(4, 1) for _ in range(3)]
    with pytest.raises(LLCError, match="every step size tried") as err:
        _estimate(model, lambda m, b: m(b), data, nbeta=10.0, **QUIET)
    assert f"1/{2**MAX_BACKOFFS}" not in str(err.value) and "down to" in str(err.value)


def test_defaults_do_not_raise_where_the_calibrated_step_diverged() -> None:
    """A 4-layer network with a width-2 bottleneck (rank 1), n = 10,000: the default call used to end in 'every chain
    diverged at step size …' (its chains reach stiffer regions than the calibration saw)."""
    model, teacher = orthonormal_dln([8, 8, 2, 8, 8], 1, seed=1)
    data = gaussian_regression_data(teacher, 10_000, 200, seed=1)
    res = _estimate(model, gaussian_nll, data, seed=1)
    assert math.isfinite(res.llc_mean) and res.llc_mean > 0
    assert res.backoff[-1]["diverged"] == 0 and isinstance(res.health, str)


def test_result_prints_as_one_short_line() -> None:
    model, teacher = orthonormal_dln([6, 3, 6], 2)
    data = gaussian_regression_data(teacher, 2000, 200)
    res = _estimate(model, gaussian_nll, data, step_size=1e-4, **QUIET)
    text = repr(res)
    assert "\n" not in text and len(text) < 300 and text == str(res)
    assert "health" in text and "λ̂" in text and "tensor" not in text
    assert res.llc_se == pytest.approx(res.llc_std / math.sqrt(3), rel=1e-6)
    assert res.seconds > 0
