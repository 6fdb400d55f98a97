"""Policy-drift and rollout statistics against exact distributions, numpy, and hand counts."""

from __future__ import annotations

import math

import numpy as np
import torch

from discrepancy.instrumentation.drift import entropy_change_pred, kl_to_start, ratio_quantiles, realised_kl
from discrepancy.grading import count_reflective
from discrepancy.instrumentation.rollout_stats import (
    advantage_stats,
    length_by_correctness,
    reflective_rate,
)


def test_realised_kl_estimates_exact_kl_on_sampled_tokens() -> None:
    # Tokens drawn from π_old at each of 4 positions; the k3 mean must match Σ_pos KL(π_old‖π_new)/4.
    gen = torch.Generator().manual_seed(0)
    old_logits = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    new_logits = old_logits + 0.3 * torch.randn(4, 6, generator=gen, dtype=torch.float64)
    p_old = torch.distributions.Categorical(logits=old_logits)
    p_new = torch.distributions.Categorical(logits=new_logits)
    exact = float(torch.distributions.kl_divergence(p_old, p_new).mean())
    tokens = p_old.sample((20000,))  # [S, 4], rows play the role of completions
    old_lp, new_lp = p_old.log_prob(tokens), p_new.log_prob(tokens)  # [S, 4]
    mask = torch.ones_like(old_lp)
    assert math.isclose(realised_kl(new_lp, old_lp, mask), exact, rel_tol=0.05)
    # Same distributions, roles swapped: KL(π_new‖π_start) on samples of the current policy.
    new_tokens = p_new.sample((20000,))
    exact_rev = float(torch.distributions.kl_divergence(p_new, p_old).mean())
    got = kl_to_start(p_new.log_prob(new_tokens), p_old.log_prob(new_tokens), mask)
    assert math.isclose(got, exact_rev, rel_tol=0.05)


def test_kl_ignores_padding_even_when_it_overflows() -> None:
    new = torch.tensor([[-1.0, 500.0]], dtype=torch.float64)
    old = torch.tensor([[-1.2, -500.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0]])
    x = 0.2
    assert math.isclose(realised_kl(new, old, mask), math.exp(x) - x - 1, rel_tol=1e-9)


def test_entropy_change_pred_is_minus_token_covariance() -> None:
    logp = torch.tensor([[-0.5, -1.0, -9.0], [-2.0, -0.1, -0.3]], dtype=torch.float64)
    adv = torch.tensor([1.5, -0.5])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    lp = np.array([-0.5, -1.0, -2.0, -0.1, -0.3])
    a = np.array([1.5, 1.5, -0.5, -0.5, -0.5])
    expected = -np.cov(lp, a, bias=True)[0, 1]
    assert math.isclose(entropy_change_pred(logp, adv, mask), expected, rel_tol=1e-9)


def test_ratio_quantiles_match_numpy() -> None:
    gen = torch.Generator().manual_seed(0)
    new = torch.randn(5, 7, generator=gen) * 0.1
    old = torch.randn(5, 7, generator=gen) * 0.1
    mask = (torch.rand(5, 7, generator=gen) > 0.3).int()
    ratios = np.exp((new.double() - old.double())[mask.bool()].numpy())
    got = ratio_quantiles(new, old, mask)
    for name, q in (("ratio_q05", 0.05), ("ratio_q50", 0.5), ("ratio_q99", 0.99)):
        assert math.isclose(got[name], float(np.quantile(ratios, q)), rel_tol=1e-9)


def test_rollout_statistics_by_hand() -> None:
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0])
    stats = advantage_stats(adv)
    assert stats["adv_mean"] == 0.0 and stats["adv_frac_zero"] == 0.5
    assert math.isclose(stats["adv_std"], math.sqrt(0.5)) and stats["adv_max"] == 1.0
    lens = length_by_correctness(torch.tensor([10, 20, 30, 5]), torch.tensor([1, 0, 1, 0]))
    assert lens == {"len_correct": 20.0, "len_incorrect": 12.5}
    assert math.isnan(length_by_correctness(torch.tensor([3]), torch.tensor([0]))["len_correct"])


def test_reflective_words_counted_at_word_starts() -> None:
    text = "Wait, let me check. Checked: 3+4=7. Hmm, I verified it; no mistakes. A checkpoint? await."
    # wait, check, Checked, Hmm, verified, mistakes -> 6 (`discrepancy.grading`); 'checkpoint', 'await' are not.
    assert count_reflective(text) == 6
    assert math.isclose(reflective_rate([text, "7"], n_tokens=500), 12.0)
    assert math.isnan(reflective_rate([], n_tokens=0))
    # The batch is counted in one pass: completions meeting at word or hyphen edges count as they do one by one.
    edges = ["so wait", "check-", "-verify", "Hmm", "recheck"]
    assert reflective_rate(edges, n_tokens=1000) == sum(count_reflective(c) for c in edges) == 3
