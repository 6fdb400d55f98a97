"""How far a step moved the policy, measured on the rollout tokens it trained on (docs/definitions.md §2).

All functions take per-token tensors [N, T] with a completion mask [N, T] and return plain floats:
- realised KL(π_old‖π_new) with Schulman's k3 estimator on tokens sampled from π_old;
- KL to the starting policy (k3 with the current policy as the sampler, as in the GRPO loss);
- the observed entropy change next to its first-order prediction ΔH_pred = −Cov_tokens(log π, Â) (Cui et al.
  2505.22617, eq. for natural policy gradient, without the step size);
- quantiles of the importance ratio π_new/π_old.
"""

from __future__ import annotations

import math

import torch

RATIO_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of `x` over the positions where `mask` is set; NaN for an empty mask."""
    w = mask.to(torch.float64)  # [N, T]
    n = float(w.sum())
    return float((x.double() * w).sum()) / n if n > 0 else math.nan


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = e^x − x − 1 of x = log(p/q); unbiased for KL(q‖p) on samples of q, and never negative."""
    return torch.expm1(log_ratio) - log_ratio


def realised_kl(new_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(π_old‖π_new) on tokens sampled from π_old: token mean of k3(log π_new − log π_old)."""
    keep = mask.bool()
    # Zero the difference at padding before exp: padding may hold arbitrary log-probs that would overflow.
    log_ratio = torch.where(keep, new_logp.double() - old_logp.double(), 0.0)  # [N, T]
    return masked_mean(k3(log_ratio), keep)


def kl_to_start(new_logp: torch.Tensor, start_logp: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(π_new‖π_start) as the GRPO loss estimates it: token mean of k3(log π_start − log π_new)."""
    keep = mask.bool()
    log_ratio = torch.where(keep, start_logp.double() - new_logp.double(), 0.0)  # [N, T]
    return masked_mean(k3(log_ratio), keep)


def entropy_change_pred(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> float:
    """ΔH_pred = −Cov_tokens(log π, Â) over the masked rollout tokens (Â broadcast to each completion's tokens)."""
    w = mask.to(torch.float64)  # [N, T]
    n = float(w.sum())
    if n < 2:
        return math.nan
    lp = logp.double()  # [N, T]
    adv = advantages.double().unsqueeze(1).expand_as(lp)  # [N] -> [N, T]
    lp_bar = float((lp * w).sum()) / n
    adv_bar = float((adv * w).sum()) / n
    cov = float(((lp - lp_bar) * (adv - adv_bar) * w).sum()) / n
    return -cov


def ratio_quantiles(
    new_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, qs: tuple[float, ...] = RATIO_QUANTILES
) -> dict[str, float]:
    """Quantiles of π_new/π_old over masked tokens, named `ratio_q01`, `ratio_q50`, ..."""
    keep = mask.bool()
    log_ratio = (new_logp.double() - old_logp.double())[keep]  # [n_tokens]
    names = [f"ratio_q{round(q * 100):02d}" for q in qs]
    if log_ratio.numel() == 0:
        return {name: math.nan for name in names}
    # float64: a ratio overflows only for |log ratio| > 709, where inf is the honest value of that tail anyway.
    values = torch.quantile(log_ratio.exp(), torch.tensor(qs, dtype=torch.float64, device=log_ratio.device)).tolist()
    return dict(zip(names, values, strict=True))
