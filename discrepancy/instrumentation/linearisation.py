"""Linearisation error of a step on fixed rows of the first step's rollouts (docs/definitions.md §2; optional, every
K steps).

N_t = ‖Δf_obs − J_f Δθ‖ / ‖Δf_obs‖, with f the completion-token log-probabilities of those rows as a function
of the trainable parameters, Δf_obs = f(θ_{t+1}) − f(θ_t) and J_f Δθ from one forward-mode product
(`torch.func.jvp`, which also returns f(θ_t)). N ≈ 0: the network is locally linear along the step (lazy regime);
N ≈ 1: the step left the linear model. Costs one jvp (≈ 2–3 forwards) and one forward on due steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from discrepancy.instrumentation.hooks import Instrument, StepContext
from discrepancy.modeling.logprobs import token_logprobs


@dataclass(frozen=True)
class FixedRows:
    """The fixed rows the error is measured on (taken from the first step's rollouts)."""

    input_ids: torch.Tensor  # [n, P+T]
    attention_mask: torch.Tensor  # [n, P+T]
    completion_mask: torch.Tensor  # [n, T]


class _RowsLogp(nn.Module):
    """f(θ): completion log-probs of the fixed rows, as a module so `functional_call` can substitute θ."""

    def __init__(self, model: nn.Module, rows: FixedRows) -> None:
        super().__init__()
        self.model = model
        self.rows = rows

    def forward(self) -> torch.Tensor:
        p = self.rows
        prompt_len = p.input_ids.shape[1] - p.completion_mask.shape[1]
        return token_logprobs(self.model, p.input_ids, p.attention_mask, prompt_len, lean=False)[0]  # [n, T] (jvp)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch a transformers model to eager attention for the duration.

    Why: torch has no forward-mode derivative for the fused CPU scaled-dot-product kernels (NotImplementedError
    inside `jvp`); eager attention is the same function written with matmuls and softmax.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "set_attn_implementation"):
        yield
        return
    previous = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


def linearisation_error(
    model: nn.Module, rows: FixedRows, theta_t: dict[str, torch.Tensor], theta_next: dict[str, torch.Tensor]
) -> float:
    """N_t for parameters moving from `theta_t` to `theta_next` (dicts over the model's trainable names)."""
    from torch.func import functional_call, jvp

    f = _RowsLogp(model, rows)
    names = list(theta_t)
    tangent = {f"model.{n}": (theta_next[n] - theta_t[n]).detach() for n in names}
    primal = {f"model.{n}": theta_t[n].detach() for n in names}
    mask = rows.completion_mask.to(torch.float64)  # [n, T]
    with eager_attention(model):
        f_t, jdelta = jvp(lambda p: functional_call(f, p, ()), (primal,), (tangent,))  # [n, T], [n, T]
        with torch.no_grad():
            f_next = functional_call(f, {f"model.{n}": theta_next[n].detach() for n in names}, ())  # [n, T]
    d_obs = (f_next.double() - f_t.double()) * mask  # [n, T]
    resid = d_obs - jdelta.double() * mask  # [n, T]
    denom = float(d_obs.norm())
    return float(resid.norm()) / denom if denom > 0 else math.nan


class Linearisation(Instrument):
    """Records `lin_error` every `every` steps on the first `size` rollouts of step 1 (NaN in between)."""

    needs = ("theta_before",)

    def __init__(self, every: int, size: int = 8) -> None:
        self.every = every
        self.size = size
        self._rows: FixedRows | None = None

    def state_dict(self) -> dict[str, Any]:
        """The fixed rows: a resumed run keeps measuring on the same ones."""
        r = self._rows
        return {"rows": None if r is None else [t.detach().cpu() for t in (r.input_ids, r.attention_mask,
                                                                             r.completion_mask)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (the rows move to the model's device at their first use)."""
        rows = state["rows"] if "rows" in state else state["probe"]  # "probe": checkpoints of earlier versions
        self._rows = None if rows is None else FixedRows(*rows)

    def series(self) -> dict[str, str]:
        """One series, written on due steps only."""
        return {"lin_error": "N_t = ‖Δf_obs − JΔθ‖/‖Δf_obs‖ on fixed rows of step 1 (log-probs), every K steps"}

    def _due(self, ctx: StepContext) -> bool:
        return ctx.step % self.every == 0 and ctx.iteration == 0

    def on_before_optimizer(self, ctx: StepContext) -> None:
        """Fix the rows at the first call."""
        b, n = ctx.batch, self.size
        if self._rows is None:
            self._rows = FixedRows(b.input_ids[:n], b.attention_mask[:n], b.completion_mask[:n])
        elif self._rows.input_ids.device != b.input_ids.device:  # restored from a checkpoint, on the CPU
            self._rows = FixedRows(*(t.to(b.input_ids.device) for t in (
                self._rows.input_ids, self._rows.attention_mask, self._rows.completion_mask)))

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float] | None:
        """N_t between the θ_t copy and the current weights, in eval mode."""
        if not self._due(ctx) or self._rows is None:
            return None
        theta_t = ctx.shared.get("theta_before")
        theta_next = {n: p.detach() for n, p in ctx.params.items()}
        was_training = ctx.model.training
        ctx.model.eval()  # dropout off: a measurement, not a training forward
        try:
            return {"lin_error": linearisation_error(ctx.model, self._rows, theta_t, theta_next)}
        finally:
            ctx.model.train(was_training)
