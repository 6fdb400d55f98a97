"""Linearisation error N_t: forward-mode jvp against a float64 finite difference, and its first-order scaling."""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from discrepancy.instrumentation.linearisation import FixedRows, linearisation_error

from instr_models import make_lora_model


def _probe() -> FixedRows:
    ids = torch.randint(8, 90, (3, 10), generator=torch.Generator().manual_seed(0))
    cmask = torch.ones(3, 6, dtype=torch.long)
    cmask[0, 4:] = 0
    return FixedRows(ids, torch.ones_like(ids), cmask)


def _f(model: torch.nn.Module, probe: FixedRows, theta: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = functional_call(model, theta, (), {"input_ids": probe.input_ids}).logits[:, 3:-1]  # [n, T, V]
    lp = torch.log_softmax(logits, -1).gather(-1, probe.input_ids[:, 4:, None]).squeeze(-1)  # [n, T]
    return lp * probe.completion_mask


def _setup(seed: int, scale: float) -> tuple[torch.nn.Module, FixedRows, dict, dict]:
    """A float64 LoRA model, its probe batch, the trainable parameters θ and a random step Δθ of ``scale``."""
    torch.manual_seed(0)
    model = make_lora_model().double()
    theta = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    gen = torch.Generator().manual_seed(seed)
    delta = {n: scale * torch.randn(t.shape, generator=gen, dtype=t.dtype) for n, t in theta.items()}
    return model, _probe(), theta, delta


def test_matches_finite_difference_in_float64() -> None:
    model, probe, theta, delta = _setup(seed=1, scale=0.05)
    nxt = {n: theta[n] + delta[n] for n in theta}
    # Central difference with a moderate h: parts of the Qwen2 forward (rotary tables) stay float32 even after
    # .double(), so a tiny h drowns in rounding; h = 1e-4 leaves an O(h²) error far below the tolerance.
    h = 1e-4
    with torch.no_grad():
        f0, f1 = _f(model, probe, theta), _f(model, probe, nxt)
        plus = _f(model, probe, {n: theta[n] + h * delta[n] for n in theta})
        minus = _f(model, probe, {n: theta[n] - h * delta[n] for n in theta})
        jd = (plus - minus) / (2 * h)  # J Δθ
    expected = float((f1 - f0 - jd).norm() / (f1 - f0).norm())
    got = linearisation_error(model, probe, theta, nxt)
    assert expected > 1e-3  # a step large enough to leave the linear model measurably
    assert math.isclose(got, expected, rel_tol=1e-2)


def test_error_shrinks_linearly_with_the_step() -> None:
    model, probe, theta, delta = _setup(seed=2, scale=0.002)
    errs = [linearisation_error(model, probe, theta, {n: theta[n] + s * delta[n] for n in theta}) for s in (1, 0.5)]
    # Δf − JΔθ = O(‖Δθ‖²) and Δf = O(‖Δθ‖): halving the step halves N to first order.
    assert math.isclose(errs[1] / errs[0], 0.5, rel_tol=0.1)
    assert model.get_base_model().config._attn_implementation == "sdpa"  # attention implementation restored
