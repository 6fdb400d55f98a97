"""Gradient noise scale from the micro-batches of one step (docs/definitions.md §3; McCandlish et al. 1812.06162,
App. A).

With K micro-batch gradients g_1..g_K of b examples each, all at θ_t, and Ḡ = mean g_k:
    Ŝ   = b/(K−1) · Σ_k ‖g_k − Ḡ‖²      (unbiased for tr Σ, the per-example gradient covariance)
    |G|² = ‖Ḡ‖² − Ŝ/(K b)                (unbiased for the squared norm of the true gradient)
    B_simple = Ŝ / |G|²
These are McCandlish's two-batch-size estimators with B_small = b and B_big = K b. For GRPO an "example" is a
prompt group, because the completions of one group are correlated.

The trainer accumulates `.grad` over micro-batches, so each g_k is recovered as the difference of the accumulated
gradient before and after micro-batch k, divided by that micro-batch's weight in the full-batch loss. This needs
two copies of the trainable parameters (previous accumulation and running sum), never K.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from discrepancy.instrumentation.ewma import BiasCorrectedEWMA
from discrepancy.instrumentation.hooks import Instrument, StepContext



@dataclass(frozen=True)
class NoiseStats:
    """Raw per-step gradient-noise estimates (NaN when undefined, e.g. K = 1)."""

    noise_trace: float  # Ŝ
    grad_sq: float  # |G|²
    b_simple: float  # Ŝ / |G|²


def noise_from_moments(sum_sq: float, mean_sq: float, k: int, b: float) -> NoiseStats:
    """Ŝ, |G|², B_simple from Σ_k ‖g_k‖² and ‖Ḡ‖² of K micro-batches of b examples each.

    Uses Σ_k ‖g_k − Ḡ‖² = Σ_k ‖g_k‖² − K‖Ḡ‖² so that only two scalars per step are needed.
    """
    if k < 2 or b <= 0:
        return NoiseStats(math.nan, math.nan, math.nan)
    scatter = sum_sq - k * mean_sq  # Σ_k ‖g_k − Ḡ‖²
    s = b / (k - 1) * scatter
    g2 = mean_sq - s / (k * b)
    return NoiseStats(s, g2, s / g2 if g2 != 0.0 else math.nan)


def noise_from_micro_grads(grads: torch.Tensor, b: float) -> NoiseStats:
    """Reference form on an explicit stack of flattened micro-batch gradients `grads` [K, P]."""
    g = grads.double()  # [K, P]
    g_bar = g.mean(0)  # [P]
    k = g.shape[0]
    if k < 2:
        return NoiseStats(math.nan, math.nan, math.nan)
    s = b / (k - 1) * float(((g - g_bar) ** 2).sum())
    g2 = float(g_bar @ g_bar) - s / (k * b)
    return NoiseStats(s, g2, s / g2 if g2 != 0.0 else math.nan)


def mccandlish_two_batch(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> NoiseStats:
    """McCandlish et al. (App. A.1): unbiased |G|² and S from squared gradient norms at two batch sizes."""
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    s = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return NoiseStats(s, g2, s / g2 if g2 != 0.0 else math.nan)


class MicroGradAccumulator:
    """Streams Σ_k ‖g_k‖² and Ḡ from an accumulating `.grad` without storing K gradient copies.

    The gradients are flattened into one vector per micro-batch: a handful of large ops instead of a few per
    parameter tensor (the tensors are small and many on a LoRA model, so per-op overhead dominated).
    """

    def __init__(self) -> None:
        self._prev: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._sum_sq = 0.0
        self._k = 0

    def reset(self) -> None:
        """Forget the previous step (call before micro-batch 0)."""
        self._prev, self._sum, self._sum_sq, self._k = None, None, 0.0, 0

    def add(self, params: Sequence[torch.Tensor], weight: float) -> None:
        """Record micro-batch k after its backward; `weight` is its weight in the full-batch loss."""
        acc = torch.cat([_grad_or_zeros(p).reshape(-1) for p in params])  # [P] accumulated .grad
        # float64: Σ‖g_k‖² − K‖Ḡ‖² cancels when the noise is small next to the mean.
        g_k = (acc.double() if self._prev is None else acc.double() - self._prev) / weight  # [P]
        self._sum_sq += float(g_k @ g_k)
        self._sum = g_k if self._sum is None else self._sum + g_k
        self._prev = acc.double()
        self._k += 1

    @property
    def k(self) -> int:
        """Number of micro-batches recorded since the last reset."""
        return self._k

    def stats(self, b: float) -> NoiseStats:
        """Ŝ, |G|², B_simple of the micro-batches recorded so far (b examples, i.e. groups, each)."""
        if self._sum is None or self._k < 2:
            return NoiseStats(math.nan, math.nan, math.nan)
        mean = self._sum / self._k  # [P] Ḡ
        return noise_from_moments(self._sum_sq, float(mean @ mean), self._k, b)


def _grad_or_zeros(p: torch.Tensor) -> torch.Tensor:
    """The accumulated gradient of `p`, zeros if no backward has reached it yet."""
    return p.grad.detach() if p.grad is not None else torch.zeros_like(p)


SERIES = {
    "noise_trace": "Ŝ: per-group gradient covariance trace from the micro-batches (raw, this step)",
    "grad_sq": "|G|²: unbiased squared norm of the true gradient (raw, this step; may be negative)",
    "b_simple": "B_simple = Ŝ/|G|² (raw, this step)",
    "noise_trace_ewma": "Ŝ, bias-corrected EWMA",
    "grad_sq_ewma": "|G|², bias-corrected EWMA",
    "b_simple_ewma": "B_simple = EWMA(Ŝ)/EWMA(|G|²), in prompt groups",
    "noise_snr": "B/B_simple: prompt groups per step over the smoothed noise scale",
}


class GradNoise(Instrument):
    """Ŝ, |G|², B_simple per step from the gradient-accumulation micro-batches, raw and smoothed
    (docs/definitions.md §3).

    The EWMAs advance once per step (at the first inner iteration), so μ > 1 does not count a step μ times.
    When the last micro-batch holds fewer groups than the others, b is their mean (the formula assumes equal b).
    """

    def __init__(self, beta: float = 0.95) -> None:
        self._acc = MicroGradAccumulator()
        self._s = BiasCorrectedEWMA(beta)
        self._g2 = BiasCorrectedEWMA(beta)
        self._warned = False

    def state_dict(self) -> dict[str, Any]:
        """The two EWMAs: a resumed run continues them instead of restarting the averages."""
        return {"noise_trace": self._s.state_dict(), "grad_sq": self._g2.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict`."""
        self._s.load_state_dict(state["noise_trace"])
        self._g2.load_state_dict(state["grad_sq"])

    def series(self) -> dict[str, str]:
        """Raw and smoothed noise-scale series."""
        return dict(SERIES)

    def on_micro_backward(self, ctx: StepContext, k: int) -> None:
        """Peel micro-batch k's own gradient off the accumulated `.grad`."""
        if k == 0:
            self._acc.reset()
        self._acc.add(list(ctx.params.values()), ctx.batch.micro_weights[k])

    def on_before_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """Estimate from the K micro-batches of this step (b = prompt groups per micro-batch)."""
        k = len(ctx.batch.micro_batches)
        if k < 2 and not self._warned:
            self._warned = True
            warnings.warn(
                "gradient noise scale needs ≥ 2 micro-batches per step; with one it is undefined and recorded as "
                "NaN (lower grpo.micro_batch_groups below grpo.num_prompts to measure it)",
                RuntimeWarning,
                stacklevel=2,
            )
        groups = [len(rows) / ctx.batch.group_size for rows in ctx.batch.micro_batches]
        raw = self._acc.stats(sum(groups) / max(len(groups), 1))
        if ctx.iteration == 0:
            self._s.update(raw.noise_trace)
            self._g2.update(raw.grad_sq)
        s, g2 = self._s.value, self._g2.value
        b_simple = s / g2 if g2 != 0.0 else math.nan
        return {
            "noise_trace": raw.noise_trace,
            "grad_sq": raw.grad_sq,
            "b_simple": raw.b_simple,
            "noise_trace_ewma": s,
            "grad_sq_ewma": g2,
            "b_simple_ewma": b_simple,
            # from the smoothed b_simple_ewma: the analysis draws it but does not search it (a spike of grad_sq
            # moves it for tens of steps; analysis.selection.FROM_SMOOTHED)
            "noise_snr": sum(groups) / b_simple if b_simple != 0.0 else math.nan,
        }
