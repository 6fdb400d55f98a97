"""Measurements several instruments share, made once per step by one provider that runs before them.

- a copy of θ_t, taken before the optimizer moves the weights, so Δθ = θ_{t+1} − θ_t can be formed after the step;
- the loss at θ_t (from the training forward's log-probs: no extra forward unless dropout made them random);
- the one post-step forward at θ_{t+1} (log-probs, entropies, loss) that D_t, the realised KL, ΔH, the ratio quantiles
  and the KL to the start all read: the one forward the instruments add to every step.

Instruments say which they read (`Instrument.needs`); `with_shared` puts a provider of exactly those first. Its time is
its own series (``time_shared``), so each instrument's time is what it adds on top.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from discrepancy.instrumentation.hooks import SHARED_NAMES, Instrument, PostStep, StepContext
from discrepancy.modeling.devices import prompt_sharing_pays
from discrepancy.modeling.logprobs import batch_logprobs
from discrepancy.modeling.lora_fold import folded_lora
from discrepancy.modeling.modes import has_active_dropout


def measurement_forward(ctx: StepContext, share_prompts: bool | None = None,
                        fold_lora: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π [N, T], entropy [N, T]) of the rollout tokens at the current weights, no grad, eval mode.

    ``share_prompts``: encode each prompt once per group, in chunks of whole groups as large as the logits budget
    allows (default: the device policy, `devices.prompt_sharing_pays`); otherwise the forward runs micro-batch by
    micro-batch as the trainer's own no-grad forwards do. ``fold_lora`` folds float32 LoRA updates into the base
    weights for the forward (same values to float32 rounding, base weights restored bit for bit).
    """
    b = ctx.batch
    if share_prompts is None:
        share_prompts = prompt_sharing_pays(b.input_ids.device)
    chunks = None if share_prompts else b.micro_batches
    fold = folded_lora(ctx.model) if fold_lora else contextlib.nullcontext()
    with fold:
        logp, entropy = batch_logprobs(ctx.model, b.input_ids, b.attention_mask, b.prompt_len, b.group_size,
                                       chunks=chunks, share=True if share_prompts else ctx.share_prompts)
    assert entropy is not None
    return logp, entropy


def loss_at_theta_t(ctx: StepContext) -> float:
    """L_{B_t}(θ_t), before the optimizer step: from the training forward's log-probs when the step kept them.

    The training forward runs in train mode; with active dropout its loss is not the deterministic L_pre that L_post
    is compared with, so then an eval-mode forward is paid for.
    """
    if ctx.logp is not None and not has_active_dropout(ctx.model):
        return float(ctx.loss(ctx.logp))
    b = ctx.batch
    logp, _ = batch_logprobs(ctx.model, b.input_ids, b.attention_mask, b.prompt_len, b.group_size,
                             chunks=b.micro_batches, share=ctx.share_prompts, with_entropy=False)
    return float(ctx.loss(logp))


class SharedMeasurements(Instrument):
    """Provides the shared measurements named in ``which`` (all by default) in ``ctx.shared``, every iteration."""

    def __init__(self, which: Iterable[str] = SHARED_NAMES, share_prompts: bool | None = None,
                 fold_lora: bool = True) -> None:
        self.provides = tuple(n for n in SHARED_NAMES if n in set(which))
        unknown = set(which) - set(SHARED_NAMES)
        if unknown:
            raise ValueError(f"unknown shared measurements {sorted(unknown)}; known: {', '.join(SHARED_NAMES)}")
        self.share_prompts = share_prompts
        self.fold_lora = fold_lora

    def on_before_optimizer(self, ctx: StepContext) -> None:
        """Copy θ_t and fix L_pre before the optimizer moves the weights."""
        shared = ctx.shared
        shared.theta_before = shared.loss_before = shared.post_step = None  # nothing stale from another iteration
        if "theta_before" in self.provides:
            shared.theta_before = {n: p.detach().clone() for n, p in ctx.params.items()}
        if "loss_before" in self.provides:
            shared.loss_before = loss_at_theta_t(ctx)

    def on_after_optimizer(self, ctx: StepContext) -> None:
        """The post-step forward at θ_{t+1}."""
        ctx.shared.post_step = None
        if "post_step" in self.provides:
            logp, entropy = measurement_forward(ctx, self.share_prompts, self.fold_lora)  # [N, T] each
            ctx.shared.post_step = PostStep(logp=logp.detach(), entropy=entropy.detach(), loss=float(ctx.loss(logp)))


def needed(instruments: Iterable[Instrument]) -> set[str]:
    """The shared measurements the instruments read."""
    return {n for inst in instruments for n in inst.needs}


def with_shared(instruments: list[Instrument], share_prompts: bool | None = None,
                fold_lora: bool = True) -> list[Instrument]:
    """``instruments`` with a provider of what they need in front (unchanged when they need nothing, or when the
    list already provides it)."""
    need = needed(instruments) - {n for inst in instruments for n in inst.provides}
    if not need:
        return list(instruments)
    return [SharedMeasurements(need, share_prompts, fold_lora), *instruments]


def last_micro_batch(ctx: StepContext, k: int) -> bool:
    """True at the backward of the step's last micro-batch, where `.grad` is the full, still unclipped gradient."""
    return k == len(ctx.batch.micro_batches) - 1
