"""The discrepancy operator D_t and the trust-region ratio ρ_t of one optimizer step (docs/definitions.md §2).

The step expected the loss on its own batch to change by ΔL_pred = g_t·Δθ_t (first-order Taylor model) and it
actually changed by ΔL_obs = L_post − L_pre. Their gap D_t = ΔL_obs − ΔL_pred is the curvature along the step
(≈ ½ΔθᵀHΔθ, exact for a quadratic loss); their ratio ρ_t = ΔL_obs/ΔL_pred is the trust-region ratio of
Nocedal & Wright ch. 4. Everything here is plain arithmetic on tensors the trainer already holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
import torch

from discrepancy.instrumentation.hooks import Instrument, StepContext
from discrepancy.instrumentation.shared import last_micro_batch

#: ρ_t is undefined when the predicted change is this small relative to the loss itself (docs/definitions.md §2).
RHO_GUARD = 1e-3
#: ... or this small in absolute terms. The GRPO loss of group-centred advantages is ≈ 0 at every step, which makes
#: the relative guard vacuous; ΔL_obs is the difference of two float32 loss evaluations of order-one token terms,
#: so a predicted change below ~1e-6 is below what ΔL_obs can resolve.
RHO_ABS_GUARD = 1e-6
#: cos(g_S, −Δθ) is undefined when the measured sub-batch's gradient is this small next to the batch's: float32
#: gradients carry about 7 digits, so below 10⁻⁶ it is the rounding of a gradient that is zero in exact arithmetic
#: (a group whose advantages all tie, at a policy equal to its reference: exactly 0 eager, ~10⁻⁹ relative through
#: compiled layers, against ~1 for groups with a signal on the tiny recipe).
GRAD_GUARD = 1e-6


@dataclass(frozen=True)
class StepDiscrepancy:
    """What one step expected of the loss on its batch against what it got."""

    loss_pre: float  # L_{B_t}(θ_t)
    loss_post: float  # L_{B_t}(θ_{t+1})
    dloss_obs: float  # ΔL_obs = L_post − L_pre
    dloss_pred: float  # ΔL_pred = g_t · Δθ_t
    disc: float  # D_t = ΔL_obs − ΔL_pred
    rho: float  # ρ_t = ΔL_obs / ΔL_pred, NaN when |ΔL_pred| is negligible
    step_norm: float  # ‖Δθ_t‖
    cos_grad_step: float  # cos(g_t, −Δθ_t)
    kappa: float  # κ_t = 2 D_t / ‖Δθ_t‖²

    def as_metrics(self) -> dict[str, float]:
        """The fields as a metrics row (series names are the field names)."""
        return asdict(self)


def dot_and_norms(
    grads: Sequence[torch.Tensor], deltas: Sequence[torch.Tensor]
) -> tuple[float, float, float]:
    """Return (g·Δθ, ‖g‖², ‖Δθ‖²) over a list of parameter tensors, accumulated in float64.

    float64 because the dot product of a small step with a gradient sums millions of terms of both signs. The
    tensors are flattened into one vector each: three dot products instead of a few ops per parameter tensor.
    """
    if len(grads) != len(deltas):
        raise ValueError(f"{len(grads)} gradients for {len(deltas)} updates")
    if not grads:
        return 0.0, 0.0, 0.0
    g = torch.cat([t.detach().reshape(-1) for t in grads]).double()  # [P]
    d = torch.cat([t.detach().reshape(-1) for t in deltas]).double()  # [P]
    if g.shape != d.shape:
        raise ValueError(f"gradient and update sizes differ: {g.shape} vs {d.shape}")
    return float(g @ d), float(g @ g), float(d @ d)


def step_discrepancy(
    loss_pre: float,
    loss_post: float,
    grads: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    rho_guard: float = RHO_GUARD,
    rho_abs_guard: float = RHO_ABS_GUARD,
) -> StepDiscrepancy:
    """D_t, ρ_t, ‖Δθ‖, cos(g, −Δθ) and κ_t from the losses around a step, its gradient and the applied update.

    `grads[i]` is ∂L_pre/∂θ_i (the unclipped gradient of the very loss L_pre) and `deltas[i]` is θ_{t+1} − θ_t as
    applied (after clipping, Adam, weight decay). Undefined ratios come back as NaN, never as an error.
    """
    dot, norm_g2, norm_d2 = dot_and_norms(grads, deltas)
    dl_obs = float(loss_post) - float(loss_pre)
    disc = dl_obs - dot
    # Numerical guard: Adam momentum can make g·Δθ tiny or even positive; a ratio over ~0 is noise, not signal.
    negligible = not math.isfinite(dot) or abs(dot) < max(rho_guard * abs(float(loss_pre)), rho_abs_guard)
    rho = math.nan if negligible or dot == 0.0 else dl_obs / dot
    denom = math.sqrt(norm_g2 * norm_d2)
    cos = -dot / denom if denom > 0.0 else math.nan
    kappa = 2.0 * disc / norm_d2 if norm_d2 > 0.0 else math.nan
    return StepDiscrepancy(
        loss_pre=float(loss_pre),
        loss_post=float(loss_post),
        dloss_obs=dl_obs,
        dloss_pred=dot,
        disc=disc,
        rho=rho,
        step_norm=math.sqrt(norm_d2),
        cos_grad_step=cos,
        kappa=kappa,
    )


SERIES = {
    "loss_pre": "L_pre: GRPO loss at θ_t on the measured sub-batch S (discrepancy_rows), scaled to the batch: "
                "K/m·Σ_{k∈S} w_k L_k, unbiased for the batch loss; the batch loss itself with discrepancy_groups=all",
    "loss_post": "L_post: the same loss on the same rows at θ_{t+1} (one extra no-grad forward of S)",
    "dloss_obs": "ΔL_obs = L_post − L_pre",
    "dloss_pred": "ΔL_pred = g_S·Δθ_t, the first-order prediction from S's own unclipped gradient",
    "disc": "D_t = ΔL_obs − ΔL_pred ≈ ½ΔθᵀH_SΔθ, curvature along the step on S (unbiased for the batch's)",
    "rho": "ρ_t = ΔL_obs/ΔL_pred trust-region ratio on S; NaN when |ΔL_pred| < max(1e-3·|L_pre|, 1e-6)",
    "step_norm": "‖Δθ_t‖ over the trainable parameters",
    "cos_grad_step": "cos(g_S, −Δθ_t), g_S the measured sub-batch's gradient; NaN when ‖g_S‖ < 1e-6·‖g_t‖",
    "kappa": "κ_t = 2D_t/‖Δθ_t‖², curvature per unit step length",
}


class DiscrepancyOperator(Instrument):
    """Records D_t, ρ_t and their companions every step (docs/definitions.md §2), on the sub-batch S the shared
    measurements read (``ctx.shared.sub_batch``; the whole batch when there is none).

    ΔL_pred needs ∇L_S itself: the gradient of this process's own loss on S, before clipping rescales it and before
    several processes average it. For the whole batch that is `.grad` right after the last micro-batch's backward,
    copied there (one adapter-sized copy). For a sub-batch of micro-batches it is scale · Σ_{k∈S} (grad_k − grad_{k−1}),
    micro-batch k's own share of the accumulating `.grad`, peeled off as the gradient-noise estimate does: the
    accumulated gradient is kept (flattened, float64) only after a micro-batch that precedes one of S.
    """

    needs = ("theta_before", "loss_before", "post_step")

    def __init__(self) -> None:
        self._grad: dict[str, torch.Tensor] | None = None  # whole batch: the full unclipped gradient
        self._sub_grad: torch.Tensor | None = None  # sub-batch: Σ_{k∈S} (grad_k − grad_{k−1}), flattened [P]
        self._prev: torch.Tensor | None = None  # grad_{k} when micro-batch k+1 is in S, flattened [P]
        self._full_sq = math.nan  # ‖g_B‖², the whole batch's unclipped gradient (sub-batch mode)

    def series(self) -> dict[str, str]:
        """The nine per-step series of docs/definitions.md §2."""
        return dict(SERIES)

    def on_micro_backward(self, ctx: StepContext, k: int) -> None:
        """Keep the gradient of the measured rows: the full one at the last micro-batch, or S's micro-batches' own."""
        sub = ctx.shared.sub_batch
        if sub is None or sub.whole:
            if last_micro_batch(ctx, k):
                self._grad = {n: _grad(p).clone() for n, p in ctx.params.items()}
            return
        if k == 0:
            self._sub_grad, self._prev, self._full_sq = None, None, math.nan
        inside, before, last = k in sub.micro, (k + 1) in sub.micro, last_micro_batch(ctx, k)
        if not (inside or before or last):
            return
        acc = _flat_grad(ctx)  # [P] accumulated .grad after micro-batch k
        if inside:
            own = acc if self._prev is None else acc - self._prev  # w_k ∇loss_k
            self._sub_grad = own if self._sub_grad is None else self._sub_grad + own
        self._prev = acc if before else None
        if last:
            self._full_sq = float(acc @ acc)

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """Form Δθ, read the shared losses before and after the step on the same rows, and compute the row."""
        theta_t = ctx.shared.get("theta_before")
        names = list(theta_t)
        deltas = [ctx.params[n].detach() - theta_t[n] for n in names]
        post, sub = ctx.shared.get("post_step"), ctx.shared.sub_batch
        if sub is not None and not sub.whole:
            if self._sub_grad is None:
                raise RuntimeError("no micro-batch gradient of the measured sub-batch was seen this step")
            g_s = sub.scale * self._sub_grad  # [P] ∇L_S
            delta = torch.cat([d.reshape(-1) for d in deltas])  # [P]
            row = step_discrepancy(ctx.shared.get("loss_before"), post.loss, [g_s], [delta]).as_metrics()
            if not float(g_s @ g_s) > GRAD_GUARD**2 * self._full_sq:  # no gradient of its own: no direction
                row["cos_grad_step"] = math.nan
            self._sub_grad = self._prev = None
            return row
        # Fallback without a micro-batch hook call: the (possibly clipped) gradient still in `.grad`.
        own = self._grad or {}
        grads = [own[n] if n in own else _grad(ctx.params[n]) for n in names]
        self._grad = None
        return step_discrepancy(ctx.shared.get("loss_before"), post.loss, grads, deltas).as_metrics()


def _grad(p: torch.Tensor) -> torch.Tensor:
    return p.grad.detach() if p.grad is not None else torch.zeros_like(p)


def _flat_grad(ctx: StepContext) -> torch.Tensor:
    """The accumulated `.grad` of every trainable parameter as one float64 vector [P] (float64: the difference of
    two accumulations cancels most of their digits)."""
    return torch.cat([_grad(p).reshape(-1) for p in ctx.params.values()]).double()
