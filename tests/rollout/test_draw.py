"""The token draw against the closed form softmax(logits / T), on both of its paths (CPU inverse CDF, GPU race)."""

from __future__ import annotations

import pytest
import torch
from transformers import TopPLogitsWarper

from discrepancy.rollout.draw import SamplingError, _race, draw_tokens


def _logits(v: int = 12, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(v, generator=gen) * 2.0


def _frequencies(draw, logits: torch.Tensor, n: int) -> torch.Tensor:
    tokens = draw(logits.expand(n, -1).clone())
    return torch.bincount(tokens, minlength=logits.numel()).double() / n


def _within_5_se(freq: torch.Tensor, p: torch.Tensor, n: int) -> bool:
    se = (p * (1 - p) / n).sqrt()
    return bool(((freq - p).abs() <= 5 * se + 1e-4).all())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_inverse_cdf_draws_follow_softmax_and_never_draw_forbidden_ids(temperature):
    torch.manual_seed(0)
    logits, n, eos = _logits(), 40_000, 3
    freq = _frequencies(lambda l: draw_tokens(l, temperature, 1.0, eos), logits, n)
    masked = logits.clone()
    masked[eos] = float("-inf")
    p = torch.softmax(masked.double() / temperature, -1)
    assert freq[eos] == 0
    assert _within_5_se(freq, p, n)


def test_the_race_follows_softmax_too():
    """The CUDA path's exponential race, run here on the CPU: argmax p/E with E ~ Exp(1) is a draw from p."""
    torch.manual_seed(1)
    logits, n = _logits(seed=1), 40_000
    freq = _frequencies(lambda l: _race(torch.softmax(l, -1)), logits, n)
    assert _within_5_se(freq, torch.softmax(logits.double(), -1), n)


def test_nucleus_draws_stay_inside_the_nucleus_in_proportion():
    torch.manual_seed(2)
    logits, n, top_p = _logits(seed=2), 40_000, 0.7
    freq = _frequencies(lambda l: draw_tokens(l, 1.0, top_p, None), logits, n)
    kept = TopPLogitsWarper(top_p)(None, logits[None].clone())[0]  # transformers' own nucleus
    p = torch.softmax(kept.double(), -1)
    assert (freq[p == 0] == 0).all() and (p == 0).any()
    assert _within_5_se(freq, p, n)


def test_zero_probability_ids_are_never_drawn_even_at_the_ends(monkeypatch):
    """u at its extremes, 0 and the largest float below 1, with zero-probability ids first and last (one of them
    forbidden): each end must land on an id that carries mass."""
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf"), 1.0, 0.0]] * 2)
    u = torch.tensor([[0.0], [1.0 - 2.0**-24]])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: u.clone())
    assert draw_tokens(logits, 1.0, 1.0, 4).tolist() == [1, 3]
    monkeypatch.undo()
    logits = torch.full((4000, 6), float("-inf"))
    logits[:, 0] = logits[:, 5] = 0.0
    tokens = draw_tokens(logits, 1.0, 1.0, None)
    assert set(tokens.tolist()) == {0, 5}


def test_greedy_takes_the_argmax_of_the_allowed_ids():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 2.0, 1.0]])
    assert draw_tokens(logits.clone(), 1.0, 1.0, None, greedy=True).tolist() == [1, 0]
    assert draw_tokens(logits.clone(), 1.0, 1.0, 1, greedy=True).tolist() == [2, 0]


def test_non_finite_logits_stop_sampling_on_either_path():
    """torch.multinomial refused NaN probabilities; neither draw may quietly return a token instead."""
    logits = torch.zeros(2, 5)
    logits[1, 2] = float("nan")
    with pytest.raises(SamplingError, match="non-finite"):
        draw_tokens(logits.clone(), 1.0, 1.0, None)
    with pytest.raises(RuntimeError, match="non-finite"):
        _race(torch.softmax(logits, -1))
