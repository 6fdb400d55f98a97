"""The GRPO loss as a pure function of per-token log-probabilities.

Per token (DeepSeekMath 2402.03300, docs/definitions.md §1):

    ρ = exp(logp − old_logp)
    surrogate = min(ρ·Â, clip(ρ, 1 − ε_low, 1 + ε_high)·Â)
    k3 = exp(ref − logp) − (ref − logp) − 1                 (Schulman 2020)
    per_token_loss = −surrogate + β·k3   (k3 multiplied by ρ when ``kl_ratio_correction``)

and the loss type decides how the per-token losses are averaged (names as in TRL 1.16):

    grpo     mean over each sequence's tokens, then mean over sequences
    bnpo     sum over all tokens / number of tokens in this batch
    dr_grpo  sum over all tokens / (B · max_completion_length)        (Dr. GRPO 2503.20783)
    dapo     sum over all tokens / num_items (tokens in the whole generation batch)

The numbers and gradients equal TRL 1.16's ``GRPOTrainer._compute_loss`` on identical tensors with one process and
no gradient accumulation (tested). With gradient accumulation the caller weights each micro-batch's loss to get the
full-batch loss exactly: grpo and dr_grpo by the micro-batch's share of sequences, bnpo by its share of tokens (TRL
divides by the number of micro-batches, which is exact only for equal micro-batches), dapo not at all when
``num_items`` counts the tokens of the whole batch.

Written by hand rather than calling TRL: TRL's loss is a method of a 3,000-line trainer that needs a model, an
accelerator and its config to run; here it is a function of tensors that the step recipe and the instrumentation
(which re-evaluates the loss after the step) both call.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


@dataclass(frozen=True)
class GRPOLossStats:
    """Detached diagnostics of one loss evaluation (plain floats; all token means are over ``mask``).

    - ``kl``: token-mean of the KL term exactly as it enters the loss (k3, times ρ when the ratio correction is on);
      NaN when no ``ref_logp`` was given.
    - ``clip_ratio_low``: fraction of tokens with ρ < 1 − ε_low and Â < 0 (the clip removes their gradient).
    - ``clip_ratio_high``: fraction of tokens with ρ > 1 + ε_high and Â > 0.
    - ``clip_ratio_region``: fraction of tokens in either set (the two are disjoint, so it is their sum).
    - ``ratio_mean``: token-mean of ρ; exactly 1 on-policy.
    - ``policy_loss``: the loss without the β·KL term, aggregated the same way (for logging the two apart).
    - ``num_tokens``: number of tokens in the mask.
    """

    kl: float
    clip_ratio_low: float
    clip_ratio_high: float
    clip_ratio_region: float
    ratio_mean: float
    policy_loss: float
    num_tokens: float

    def as_dict(self) -> dict[str, float]:
        """The stats as a ``{name: float}`` row, ready to merge into a metrics row."""
        return asdict(self)


def _aggregate(
    per_token: Tensor, mask: Tensor, loss_type: str, max_completion_length: int | None, num_items: float | None
) -> Tensor:
    """Reduce a masked per-token tensor ``[B, T]`` to a scalar the way ``loss_type`` prescribes."""
    masked = per_token * mask  # [B, T]
    if loss_type == "grpo":
        # clamp(min=1): a fully masked row contributes 0 instead of 0/0 = NaN (TRL does the same).
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = per_token.size(1) if max_completion_length is None else max_completion_length
        return masked.sum() / (per_token.size(0) * length)
    # dapo: the normaliser spans the whole generation batch, so micro-batches add up to the batch loss.
    denom = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=per_token.dtype, device=mask.device)
    return masked.sum() / denom.clamp(min=1.0)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.04,
    kl_ratio_correction: bool = False,
    max_completion_length: int | None = None,
    num_items: float | Tensor | None = None,
) -> tuple[Tensor, GRPOLossStats]:
    """Clipped-ratio GRPO loss with a k3 KL penalty; returns ``(loss, stats)``.

    Args:
        logp: log π_θ of each completion token ``[B, T]`` (carries the gradient).
        old_logp: log π_old of the same tokens ``[B, T]`` (stored at sampling time, for μ > 1 inner iterations);
            ``None`` means on-policy: ``logp.detach()`` is used, so ρ ≡ 1 but the gradient is the policy gradient.
        ref_logp: log π_ref ``[B, T]`` (the model with the adapter disabled); may be ``None`` only when ``beta == 0``.
        advantages: one advantage per completion ``[B]``, broadcast to its tokens.
        mask: 1 for completion tokens that count, 0 for padding / masked truncations ``[B, T]`` (bool or float).
        loss_type: ``grpo``, ``bnpo``, ``dr_grpo`` or ``dapo`` (see the module docstring).
        eps_low, eps_high: the ratio is clipped to ``[1 − eps_low, 1 + eps_high]``.
        beta: weight of the KL term.
        kl_ratio_correction: multiply k3 by ρ (TRL 1.16's default ``use_bias_correction_kl``): the k3 estimate is
            then importance-weighted from π_old's samples to π_θ's.
        max_completion_length: the dr_grpo normaliser per sequence; ``None`` uses ``T``.
        num_items: number of completion tokens in the whole generation batch (dapo); ``None`` uses ``mask.sum()``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("ref_logp is required when beta != 0")
    if logp.dim() != 2 or mask.shape != logp.shape or advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"expected logp and mask [B, T] and advantages [B]; got {tuple(logp.shape)}, {tuple(mask.shape)}, "
            f"{tuple(advantages.shape)}"
        )
    keep = mask.bool()  # [B, T]
    weight = mask.to(logp.dtype)  # [B, T]
    old = logp.detach() if old_logp is None else old_logp
    # Differences are zeroed outside the mask *before* exp: padding positions may hold arbitrary log-probs, and an
    # overflowing exp there would turn the masked (×0) value and its gradient into NaN.
    log_ratio = torch.where(keep, logp - old, 0.0)  # [B, T]
    ratio = torch.exp(log_ratio)  # [B, T]
    adv = advantages.to(logp.dtype).unsqueeze(1)  # [B, 1]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # [B, T]
    per_token_policy = -torch.min(ratio * adv, clipped * adv)  # [B, T]

    kl = None
    if ref_logp is not None:
        delta = torch.where(keep, ref_logp - logp, 0.0)  # [B, T]
        kl = torch.exp(delta) - delta - 1  # [B, T]
        if kl_ratio_correction:
            kl = kl * ratio
    per_token = per_token_policy + beta * kl if (beta != 0.0 and kl is not None) else per_token_policy

    loss = _aggregate(per_token, weight, loss_type, max_completion_length, num_items)
    policy = _aggregate(per_token_policy.detach(), weight, loss_type, max_completion_length, num_items)
    return loss, _stats(ratio, adv, kl, weight, policy, eps_low=eps_low, eps_high=eps_high)


@torch.no_grad()
def _stats(ratio: Tensor, adv: Tensor, kl: Tensor | None, weight: Tensor, policy: Tensor, *, eps_low: float,
           eps_high: float) -> GRPOLossStats:
    """Token means over the mask of the quantities documented on :class:`GRPOLossStats` (``policy``: the policy loss
    already aggregated as the loss is)."""
    n = weight.sum()
    # One device sync for all stats: stack first, then a single .tolist().
    denom = n.clamp(min=1.0)
    low = ((ratio < 1 - eps_low) & (adv < 0)).to(weight.dtype)  # [B, T]
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(weight.dtype)  # [B, T]
    kl_mean = (kl * weight).sum() / denom if kl is not None else torch.tensor(math.nan, dtype=weight.dtype)
    row = torch.stack([
        kl_mean.to(weight.device),
        (low * weight).sum() / denom,
        (high * weight).sum() / denom,
        (torch.maximum(low, high) * weight).sum() / denom,
        (ratio * weight).sum() / denom,
        policy,
        n,
    ]).tolist()
    return GRPOLossStats(*row)
