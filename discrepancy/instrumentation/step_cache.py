"""What several instruments of one step share, computed once and kept in `StepContext.cache`.

- the loss at θ_t (from the training forward's log-probs, no extra forward);
- a copy of θ_t, taken at `on_before_optimizer`, so Δθ = θ_{t+1} − θ_t can be formed after the step;
- the one post-step forward at θ_{t+1} (log-probs, entropies, loss) that D_t, the realised KL, ΔH and the ratio
  quantiles all read. Whichever instrument asks first pays for it; the others reuse it.

Entries are keyed by the inner iteration too, so μ > 1 passes over the same rollouts never read a stale value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from discrepancy.modeling.lora_fold import folded_lora
from discrepancy.instrumentation.post_forward import batch_logprobs, groups_share_prompts
from discrepancy.modeling.modes import has_active_dropout

if TYPE_CHECKING:  # the trainer imports the instrumentation, never the other way round at run time
    from discrepancy.trainers.hooks import StepContext


T = TypeVar("T")

_PREFIX = "instrumentation."


@dataclass(frozen=True)
class PostStep:
    """The policy after the optimizer step, on the step's own rollout tokens."""

    logp: torch.Tensor  # [N, T] log π_{θ_{t+1}} of the sampled tokens
    entropy: torch.Tensor  # [N, T] token entropies at θ_{t+1}
    loss: float  # L_{B_t}(θ_{t+1}), same normalisation as training


def _memo(ctx: StepContext, key: str, make: Callable[[], T]) -> T:
    """Compute `make()` once per (step context, inner iteration) and keep it in ctx.cache."""
    hit = ctx.cache.get(_PREFIX + key)
    if hit is not None and hit[0] == ctx.iteration:
        return hit[1]
    value = make()
    ctx.cache[_PREFIX + key] = (ctx.iteration, value)
    return value


def loss_before_step(ctx: StepContext) -> float:
    """L_{B_t}(θ_t): from the training forward's log-probs when the step kept them, else one no-grad forward.

    The training forward runs in train mode; with active dropout its loss is not the deterministic L_pre that L_post
    is compared with, so then the eval-mode forward is paid for. Valid only before the optimizer step.
    """

    def compute() -> float:
        if ctx.logp is not None and not has_active_dropout(ctx.model):
            return float(ctx.loss_from_logp(ctx.logp))
        return float(ctx.batch_loss())

    return _memo(ctx, "loss_pre", compute)



def remember_params(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Copy θ_t of the trainable parameters (call at `on_before_optimizer`; later calls reuse the copy)."""
    return _memo(ctx, "theta_t", lambda: {n: p.detach().clone() for n, p in ctx.params.items()})


def params_before_step(ctx: StepContext) -> dict[str, torch.Tensor]:
    """The θ_t copy taken by `remember_params` in this iteration; a missing copy is a wiring bug, not user error."""
    hit: Any = ctx.cache.get(_PREFIX + "theta_t")
    if hit is None or hit[0] != ctx.iteration:
        raise RuntimeError("θ_t was not copied at on_before_optimizer (remember_params was not called)")
    return hit[1]


def post_step(ctx: StepContext, shared_prompts: bool = True, fold_lora: bool = True) -> PostStep:
    """The single post-step forward at θ_{t+1} (call at `on_after_optimizer`).

    With `shared_prompts`, each prompt is encoded once per group when the batch allows it (`post_forward`);
    otherwise the trainer's own `forward_batch` runs. With `fold_lora`, float32 LoRA layers run folded (`lora_fold`).
    """

    def run() -> PostStep:
        logp, entropy = measurement_forward(ctx, shared_prompts, fold_lora)  # [N, T], [N, T]; no grad, eval mode
        return PostStep(logp=logp.detach(), entropy=entropy.detach(), loss=float(ctx.loss_from_logp(logp)))

    return _memo(ctx, "post_step", run)


def measurement_forward(ctx: StepContext, shared_prompts: bool = True,
                        fold_lora: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π [N, T], entropy [N, T]) of the rollout tokens at the current weights, no grad, eval mode.

    `fold_lora` folds float32 LoRA updates into the base weights for the forward (same values to float32 rounding,
    base weights restored bit for bit); it changes nothing where it does not apply (`lora_fold.fold_plan`).
    """
    if fold_lora:
        with folded_lora(ctx.model):
            return _measurement_forward(ctx, shared_prompts)
    return _measurement_forward(ctx, shared_prompts)


def _measurement_forward(ctx: StepContext, shared_prompts: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = ctx.group_size
    plen = ctx.input_ids.shape[1] - ctx.completion_mask.shape[1]
    # Shared prompts only on the CPU, as in the trainer's forwards (`grouped_token_logprobs`): a GPU running a small
    # model is bound by kernel launches, and sharing in logits-bounded chunks made 8 calls of the H100 benchmark's
    # batch instead of 1 (0.73 s against ~0.07 s per step).
    if (not shared_prompts or ctx.input_ids.device.type != "cpu" or ctx.completion_mask.shape[1] < 2
            or not groups_share_prompts(ctx.input_ids, ctx.attention_mask, plen, g)):
        return ctx.forward_batch()
    return batch_logprobs(ctx.model, ctx.input_ids, ctx.attention_mask, plen, g)


def last_micro_batch(ctx: StepContext, k: int) -> bool:
    """True at the backward of the step's last micro-batch, where `.grad` is the full, still unclipped gradient."""
    return k == len(ctx.micro_batches) - 1
