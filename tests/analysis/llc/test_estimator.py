"""LLC estimator against closed-form truths: Gaussian SGLD stationary moments, d/2 for a regular model, Aoyagi's λ for
reduced-rank regression and deep linear networks, LoRA-only sampling on a peft-wrapped linear layer."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from aoyagi import dln_lambda, gaussian_nll, gaussian_regression_data, orthonormal_dln, rrr_lambda  # noqa: E402

from discrepancy.analysis.llc.estimator import LLCError, estimate_llc  # noqa: E402

torch.set_num_threads(1)


# ----- the closed forms themselves ----------------------------------------------------------------------------------


def test_dln_formula_reduces_to_reduced_rank_regression() -> None:
    """Aoyagi 2024 with two layers must equal Aoyagi & Watanabe 2005 in all four of its cases."""
    for n_in in range(1, 8):
        for hidden in range(1, 8):
            for n_out in range(1, 8):
                for r in range(0, min(n_in, hidden, n_out) + 1):
                    assert dln_lambda([n_in, hidden, n_out], r) == pytest.approx(rrr_lambda(n_in, hidden, n_out, r))


def test_closed_forms_hand_values() -> None:
    # Case M+N < H+r: the hidden layer is wide, λ = MN/2 (the regular count of the product matrix).
    assert rrr_lambda(2, 6, 2, 1) == 2.0
    # Case M+H < N+r: λ = (HM − Hr + Nr)/2 = (4 − 2 + 6)/2.
    assert rrr_lambda(6, 2, 2, 1) == 4.0
    # Main case, even parity: (2(H+r)(M+N) − (M−N)² − (H+r)²)/8 = (48 − 0 − 16)/8.
    assert rrr_lambda(3, 3, 3, 1) == 4.0
    # Full rank bottleneck r = H: λ = (H(M+N) − H²)/2, the dimension of rank-H matrices over 2.
    assert rrr_lambda(8, 2, 8, 2) == pytest.approx((2 * 16 - 4) / 2)


# ----- the sampler: exact Gaussian moments --------------------------------------------------------------------------


def _regression(d: int, n: int, scales: list[float], seed: int = 0) -> tuple[nn.Linear, list, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen) * torch.tensor(scales)
    w = torch.randn(1, d, generator=gen)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w)
    h = torch.linalg.eigvalsh(x.T @ x / n).double()  # Hessian eigenvalues of the Gaussian NLL
    return model, [(x, x @ w.T)], h


def test_sgld_matches_gaussian_stationary_moments() -> None:
    """Quadratic loss: the plain estimator converges to Σ nβh/(2a(1 − εa/4)) (SGLD's inflated stationary variance),
    the midpoint-corrected one to Σ nβh/(2a), the exact posterior value, with a = nβh + γ."""
    model, data, h = _regression(4, 2000, [1.0, 0.8, 0.6, 0.5], seed=1)
    nbeta, gamma = 200.0, 5.0
    a = nbeta * h + gamma
    eps = 2.0 / float(a.max())
    res = estimate_llc(model, gaussian_nll, data, num_chains=16, num_draws=1000, num_burnin=50, step_size=eps,
                       localization=gamma, nbeta=nbeta)
    exact = float((nbeta * h / (2 * a)).sum())
    inflated = float((nbeta * h / (2 * a * (1 - eps * a / 4))).sum())
    assert res.llc_mean == pytest.approx(exact, rel=0.03)
    assert res.llc_plain_mean == pytest.approx(inflated, rel=0.03)
    assert inflated > 1.3 * exact  # the two truths are far apart, so the test tells them apart


def test_vectorised_and_sequential_chains_agree() -> None:
    """The vmapped path and the plain per-chain autograd path produce the same trajectories for the same noise."""
    model, teacher = orthonormal_dln([4, 3, 4], 2, seed=3)
    data = gaussian_regression_data(teacher, 400, 100)
    kw = dict(num_chains=3, num_draws=20, num_burnin=5, step_size=1e-3, localization=1.0, seed=7)
    a = estimate_llc(model, gaussian_nll, data, **kw)
    b = estimate_llc(model, gaussian_nll, data, vectorise=False, **kw)
    assert a.settings["vectorised"] and not b.settings["vectorised"]
    torch.testing.assert_close(a.loss_traces, b.loss_traces, rtol=1e-4, atol=1e-6)


# ----- default arguments against the truth --------------------------------------------------------------------------


def _dln_case(widths: list[int], rank: int, n: int, seed: int = 0) -> tuple[float, float]:
    model, teacher = orthonormal_dln(widths, rank, seed=seed)
    data = gaussian_regression_data(teacher, n, 200, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = estimate_llc(model, gaussian_nll, data, seed=seed)
    return res.llc_mean, dln_lambda(widths, rank)


def test_regular_model_gives_half_the_dimension() -> None:
    """A full-rank single linear layer (linear regression, 10 parameters) is regular: λ = d/2."""
    model, teacher = orthonormal_dln([10, 1], 1)
    data = gaussian_regression_data(teacher, 100_000, 200)
    res = estimate_llc(model, gaussian_nll, data)
    assert res.llc_mean == pytest.approx(5.0, rel=0.05)
    assert res.healthy, res.warnings


def test_preconditioned_sampler_gives_half_the_dimension() -> None:
    """RMSProp-preconditioned SGLD samples the same posterior: λ = d/2 on the regular model."""
    model, teacher = orthonormal_dln([10, 1], 1)
    data = gaussian_regression_data(teacher, 100_000, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = estimate_llc(model, gaussian_nll, data, precondition=True)
    assert res.llc_mean == pytest.approx(5.0, rel=0.10)


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("widths", "rank"),
    [  # n = 10⁶ noise-free examples, seed 0 (seeds 1 and 2 are held out: benchmarks/results/llc.md)
        ([8, 2, 8], 2),  # 2 layers, bottleneck: hidden width equals the rank
        ([10, 5, 10], 3),  # 2 layers, rank-deficient (reduced-rank regression)
        ([12, 6, 12], 0),  # 2 layers, zero teacher
        ([5, 4, 3, 5], 2),  # 3 layers, rank-deficient
        pytest.param([10, 8, 8, 10], 0, marks=SLOW),  # 3 layers, zero teacher
        pytest.param([20, 30, 30, 20], 6, marks=SLOW),  # 3 layers, wide (2,100 parameters)
        pytest.param([6, 6, 6, 6], 3, marks=SLOW),  # 3 layers, equal widths
        pytest.param([8, 8, 2, 8, 8], 1, marks=SLOW),  # 4 layers, narrow bottleneck
        pytest.param([10, 10, 10, 10, 10], 4, marks=SLOW),  # 4 layers, width 10
        pytest.param([5, 3, 5, 3, 5, 3], 1, marks=SLOW),  # 5 layers, alternating widths
        pytest.param([10, 10, 10, 10, 10, 10], 5, marks=SLOW),  # 5 layers, width 10
    ],
)
def test_deep_linear_networks_match_aoyagi_within_5_percent(widths: list[int], rank: int) -> None:
    """Default arguments against Aoyagi's closed form, 2 to 5 layers (the former defaults were 6 to 30 % low on the
    deeper ones and raised on a 4-layer bottleneck; the rule changes are in ``calibrate``, rules 2, 4 and 6)."""
    est, true = _dln_case(widths, rank, 1_000_000)
    assert est == pytest.approx(true, rel=0.05)


@pytest.mark.parametrize("seed", [1, 2])
def test_three_layer_network_matches_aoyagi_across_seeds(seed: int) -> None:
    """Teacher, data and sampler seeds all vary: one step per draw gave −9 to −11 % here (slow mixing)."""
    est, true = _dln_case([5, 4, 3, 5], 2, 200_000, seed=seed)
    assert est == pytest.approx(true, rel=0.10)


@pytest.mark.slow
def test_few_thousand_parameter_network_matches_aoyagi() -> None:
    est, true = _dln_case([40, 30, 40], 10, 1_000_000)  # 2,400 parameters, rank-deficient
    assert est == pytest.approx(true, rel=0.05)


def test_lora_only_sampling_on_peft_linear_layer() -> None:
    """LoRA on a linear layer is a two-layer linear network B·A: the weight-refined LLC of the adapter is the
    reduced-rank-regression λ of (d_in, r_lora, d_out) at the rank of the update, whatever the frozen base weight."""
    peft = pytest.importorskip("peft")
    d_in, d_out, r_lora, rank = 8, 8, 4, 2
    net, delta = orthonormal_dln([d_in, r_lora, d_out], rank, seed=5)
    base = nn.Sequential(nn.Linear(d_in, d_out, bias=False))
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        base[0].weight.copy_(torch.randn(d_out, d_in, generator=gen))
    teacher = base[0].weight.detach() + delta
    model = peft.get_peft_model(base, peft.LoraConfig(r=r_lora, lora_alpha=r_lora, target_modules=["0"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_(net[0].weight)
            elif "lora_B" in name:
                p.copy_(net[1].weight)
    data = gaussian_regression_data(teacher, 100_000, 200)
    res = estimate_llc(model, gaussian_nll, data)
    assert res.settings["num_params"] == r_lora * (d_in + d_out)  # only the adapter was sampled
    assert res.llc_mean == pytest.approx(rrr_lambda(d_in, r_lora, d_out, rank), rel=0.10)


# ----- diagnostics --------------------------------------------------------------------------------------------------


def test_divergence_fails_loudly() -> None:
    model, teacher = orthonormal_dln([4, 3, 4], 2)
    data = gaussian_regression_data(teacher, 1000, 100)
    with pytest.raises(LLCError, match="diverged"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate_llc(model, gaussian_nll, data, step_size=10.0, num_draws=50, num_burnin=10)


def test_point_that_is_not_a_minimum_is_flagged() -> None:
    """Far from the minimum the chains slide downhill: the LLC comes out negative and says so."""
    model, teacher = orthonormal_dln([4, 4], 4)
    data = gaussian_regression_data(teacher + 0.5, 5000, 500)
    with pytest.warns(UserWarning, match="negative LLC"):
        res = estimate_llc(model, gaussian_nll, data, step_size=1e-4, localization=0.0, num_draws=40, num_burnin=5)
    assert res.llc_mean < 0 and not res.healthy


def test_bad_inputs_raise_with_fix() -> None:
    model, teacher = orthonormal_dln([3, 3], 3)
    data = gaussian_regression_data(teacher, 100, 50)
    with pytest.raises(LLCError, match="not found"):
        estimate_llc(model, gaussian_nll, data, params=["nope"])
    with pytest.raises(LLCError, match="empty"):
        estimate_llc(model, gaussian_nll, [])
    assert math.isfinite(estimate_llc(model, gaussian_nll, data, step_size=1e-4, num_draws=4, num_burnin=1).llc_mean)
