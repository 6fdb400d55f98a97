"""Instruments that read the policy after the step: realised KL, entropy change, ratios, KL to the start.

Both read the one shared post-step forward (``ctx.shared.post_step``), so they add no forward of their own but the
KL to the start's reference forward when β = 0, and both measure its rows: the sub-batch S of
``instruments.discrepancy_groups`` (one micro-batch by default), the whole batch with "all".
"""

from __future__ import annotations

import math
from typing import Any

import torch

from discrepancy.instrumentation.drift import (
    RATIO_QUANTILES,
    entropy_change_pred,
    kl_to_start,
    masked_mean,
    ratio_quantiles,
    realised_kl,
)
from discrepancy.instrumentation.hooks import Instrument, StepContext, SubBatch
from discrepancy.instrumentation.lora_norms import find_lora_modules, lora_delta_norms
from discrepancy.instrumentation.shared import measurement_forward
from discrepancy.modeling.lora_fold import bypassed_lora


class PolicyShift(Instrument):
    """How far this step moved the policy on its own rollout tokens (docs/definitions.md §2, 'for free' part): the
    rows of the shared post-step forward (the measured sub-batch S)."""

    needs = ("post_step",)

    def series(self) -> dict[str, str]:
        """Realised KL, entropy change observed vs predicted, and importance-ratio quantiles."""
        out = {
            "kl_realised": "KL(π_old‖π_new) on the rollout tokens of S (k3), recorded whatever β is",
            "entropy_post": "token-mean policy entropy on the rollout tokens of S at θ_{t+1}",
            "entropy_change_obs": "ΔH_obs: token-mean entropy on S at θ_{t+1} minus at θ_t",
            "entropy_change_pred": "ΔH_pred = −Cov_tokens(log π, Â) on S at θ_t (Cui et al.; per unit step size)",
        }
        for q in RATIO_QUANTILES:
            out[f"ratio_q{round(q * 100):02d}"] = f"{q:.0%} quantile of π_new/π_old over the rollout tokens of S"
        return out

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """Compare the shared post-step forward with the sampling policy and the θ_t forward, on its rows."""
        post, b = ctx.shared.get("post_step"), ctx.batch
        mask, old = post.of(b.completion_mask), post.of(b.old_logp)  # [n_S, T]: the measured rows
        h_post = masked_mean(post.entropy, mask)
        h_pre = masked_mean(post.of(ctx.entropy), mask) if ctx.entropy is not None else math.nan
        logp_t = post.of(ctx.logp if ctx.logp is not None else b.old_logp)  # [n_S, T] log π at θ_t
        return {
            "kl_realised": realised_kl(post.logp, old, mask),
            "entropy_post": h_post,
            "entropy_change_obs": h_post - h_pre,
            "entropy_change_pred": entropy_change_pred(logp_t, post.of(b.advantages), mask),
            **ratio_quantiles(post.logp, old, mask),
        }


class StartPolicyKL(Instrument):
    """KL(π_{θ_{t+1}}‖π_start) on the rollout tokens, measured after the step so it is not 0 at step 1.

    When every LoRA update ΔW is zero at the first step (peft's B = 0 initialisation), the starting policy *is*
    the reference (adapter disabled): the step's `ref_logp` is reused when β > 0, and one adapter-disabled forward
    is made when β = 0 (there is no `ref_logp` then, and recording 0 would hide all drift). Otherwise (an adapter
    that starts non-zero, or no LoRA at all) θ_0 is kept and swapped in for one forward. ``shared_prompts`` and
    ``fold_lora`` shape that forward as in `measurement_forward`.
    """

    needs = ("post_step",)

    def __init__(self, shared_prompts: bool | None = None, fold_lora: bool = True) -> None:
        self.shared_prompts = shared_prompts
        self.fold_lora = fold_lora
        self._theta0: dict[str, torch.Tensor] | None = None
        self._start_is_reference: bool | None = None

    def series(self) -> dict[str, str]:
        """One series."""
        return {"kl_start": "KL(π_new‖π_start) on the rollout tokens of S (k3), π_start = the policy at step 1"}

    def state_dict(self) -> dict[str, Any]:
        """What the starting policy is: a resumed run measures drift from the same start, not from the resume."""
        theta0 = None if self._theta0 is None else {n: t.detach().cpu() for n, t in self._theta0.items()}
        return {"start_is_reference": self._start_is_reference, "theta0": theta0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (θ_0 moves to the parameters' device at its first use)."""
        self._start_is_reference = state["start_is_reference"]
        self._theta0 = state["theta0"]

    def on_before_optimizer(self, ctx: StepContext) -> None:
        """At the first step, decide what the starting policy is (parameters are still θ_0 here)."""
        if self._start_is_reference is not None:
            return
        modules = find_lora_modules(ctx.model)
        zero = bool(modules) and bool((lora_delta_norms(modules) == 0.0).all())
        self._start_is_reference = zero and hasattr(ctx.model, "disable_adapter")
        if not self._start_is_reference:
            self._theta0 = {n: p.detach().clone() for n, p in ctx.params.items()}

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """k3 of the shared post-step log-probs against the starting policy's, on the post-step forward's rows."""
        post = ctx.shared.get("post_step")
        sub = ctx.shared.sub_batch if post.rows is not None else None
        return {"kl_start": kl_to_start(post.logp, self._start_logp(ctx, sub), post.of(ctx.batch.completion_mask))}

    def _start_logp(self, ctx: StepContext, sub: SubBatch | None) -> torch.Tensor:
        """log π_start of the rollout tokens [n, T] of the rows of ``sub`` (all N rows when None)."""
        if self._start_is_reference:
            if ctx.batch.ref_logp is not None:
                return ctx.batch.ref_logp if sub is None else ctx.batch.ref_logp[sub.rows]
            return self._reference_forward(ctx, sub)
        assert self._theta0 is not None
        if any(t.device != ctx.params[n].device for n, t in self._theta0.items()):  # restored from a checkpoint
            self._theta0 = {n: t.to(ctx.params[n].device) for n, t in self._theta0.items()}
        return _forward_at(ctx, self._theta0, self.shared_prompts, self.fold_lora, sub)

    def _reference_forward(self, ctx: StepContext, sub: SubBatch | None) -> torch.Tensor:
        """log π of the base model [n, T]: LoRA bypassed by flag when `fold_lora` allows, else `disable_adapter`."""
        if self.fold_lora:
            with bypassed_lora(ctx.model) as bypassed:
                if bypassed:
                    return measurement_forward(ctx, self.shared_prompts, False, sub)[0]
        with ctx.model.disable_adapter():
            return measurement_forward(ctx, self.shared_prompts, self.fold_lora, sub)[0]


@torch.no_grad()
def _forward_at(ctx: StepContext, theta: dict[str, torch.Tensor], shared_prompts: bool | None,
                fold_lora: bool, sub: SubBatch | None) -> torch.Tensor:
    """log-probs [n, T] with the trainable parameters temporarily set to `theta`, restored even on error.

    Swapping values in place (rather than `functional_call`) because the measurement forward runs the live peft
    model (folded LoRA included); the finally-block guarantees training resumes from the right weights.
    """
    saved = {n: p.detach().clone() for n, p in ctx.params.items()}
    try:
        for n, p in ctx.params.items():
            p.copy_(theta[n])
        return measurement_forward(ctx, shared_prompts, fold_lora, sub)[0]
    finally:
        for n, p in ctx.params.items():
            p.copy_(saved[n])
