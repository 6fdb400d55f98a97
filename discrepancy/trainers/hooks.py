"""Step hooks: where measurements attach to the GRPO step.

The step recipe (`discrepancy.trainers.recipe`) reads top to bottom: sample → score → advantages → μ inner
iterations × micro-batches (forward/backward) → optimizer step → measure → record. Instruments are small objects
that attach at three named points of that loop and return plain numbers, so a reader sees the loop and the
measurements apart.

An instrument is any object with

- ``series() -> dict[str, str]``: the per-step series it writes (name → description). Declared before step 1,
  because the run file cannot add datasets later.
- optionally ``arrays() -> dict[str, ArraySpec]``: per-step vector series (``discrepancy.runfile.ArraySpec``).
- any of the hook methods below, each returning ``dict[str, float | np.ndarray] | None``. Floats go to the
  declared series, 1-D arrays to the declared arrays. Returned names are merged into the step's metrics row
  (later hooks of the same step overwrite earlier values of the same name).

  * ``on_micro_backward(ctx, k)``: after micro-batch ``k``'s backward. ``.grad`` holds the gradient accumulated
    over micro-batches ``0..k``: ``Σ_{j≤k} ctx.micro_weights[j] · ∇ loss_j``, so micro-batch ``k``'s own
    (unweighted) gradient is ``(grad_k − grad_{k−1}) / micro_weights[k]``.
  * ``on_before_optimizer(ctx)``: full-batch gradient ``g_t`` in ``.grad`` (after clipping, so it is the gradient
    the optimizer uses), parameters still ``θ_t``.
  * ``on_after_optimizer(ctx)``: parameters ``θ_{t+1}``; ``.grad`` still holds ``g_t``.

With μ > 1 inner iterations the three hooks run once per inner iteration (``ctx.iteration``); the values of the
last iteration end up in the row.

Under ``torchrun`` (several processes) every rank runs its instruments on its own rollouts: ``on_micro_backward``
sees the rank's own micro-batch gradients, ``on_before_optimizer`` the gradient averaged over ranks; only rank 0's
values are recorded.

A failing instrument never stops training: `HookRunner` catches the exception, writes NaN for every series the
instrument declared and warns once per instrument.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

HOOK_NAMES = ("on_micro_backward", "on_before_optimizer", "on_after_optimizer")


@runtime_checkable
class Instrument(Protocol):
    """What every instrument declares; the hook methods are optional (see the module docstring)."""

    def series(self) -> dict[str, str]:
        """Per-step series this instrument writes: name → one-line description."""
        ...


@dataclass
class StepContext:
    """Everything an instrument may read about the current GRPO step.

    N = number of completions in the step (prompts × G), P = padded prompt length, T = padded completion length.
    Rows are ordered group by group: rows ``g*G .. g*G+G-1`` are the completions of prompt ``g``.
    Tensors live on the training device; never modify them in place.
    """

    step: int  # 1-based step number (the row this step writes)
    iteration: int  # inner iteration 0..μ-1 against the same rollouts
    model: torch.nn.Module  # the trained model (peft-wrapped); train/eval mode is restored by the caller
    params: dict[str, torch.nn.Parameter]  # trainable named parameters (the LoRA tensors), peft names
    input_ids: torch.Tensor  # [N, P+T] prompt (left-padded) + completion (right-padded)
    attention_mask: torch.Tensor  # [N, P+T]
    completion_mask: torch.Tensor  # [N, T] 1 up to and including the first EOS
    old_logp: torch.Tensor  # [N, T] log π_old of the sampled tokens (the sampling policy)
    ref_logp: torch.Tensor | None  # [N, T] log π_ref (adapter disabled); None when β = 0
    advantages: torch.Tensor  # [N]
    rewards: torch.Tensor  # [N] weighted total reward
    group_ids: torch.Tensor  # [N] prompt-group index 0..N/G-1
    group_size: int  # G
    micro_batches: list[list[int]]  # row indices of each micro-batch (whole prompt groups)
    micro_weights: list[float]  # full-batch loss = Σ_k micro_weights[k] · loss(micro-batch k)
    batch_loss: Callable[[], float]  # full-batch GRPO loss at the CURRENT weights, no grad, eval mode
    forward_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # (logp [N, T], entropy [N, T]) now, no grad
    loss_from_logp: Callable[[torch.Tensor], float]  # the training loss for given logp [N, T] (no grad)
    logp: torch.Tensor | None = None  # [N, T] log-probs of this iteration's training forward at θ_t (detached)
    entropy: torch.Tensor | None = None  # [N, T] token entropies of that forward (detached)
    completions: list[str] = field(default_factory=list)  # decoded completions, N of them
    reward_components: dict[str, np.ndarray] = field(default_factory=dict)  # name → [N], unweighted
    metrics: dict[str, float] = field(default_factory=dict)  # the step's metrics so far (read-only by convention)
    optimizer: torch.optim.Optimizer | None = None
    lr: float = math.nan  # learning rate used by this step's optimizer update
    beta: float = 0.0  # KL weight of this step
    num_items: float = math.nan  # completion tokens in the whole generation batch (the dapo normaliser)
    fixed_old: bool = False  # π_old's log-probs were computed before the update (μ > 1)
    cache: dict[str, Any] = field(default_factory=dict)  # shared scratch space between instruments, per step


@dataclass
class HookRunner:
    """Calls every instrument at a hook point and merges what they return; failures become NaN + one warning."""

    instruments: list[Any] = field(default_factory=list)
    _warned: set[int] = field(default_factory=set)

    def declared_series(self) -> dict[str, str]:
        """Union of the series every instrument declares (name → description)."""
        out: dict[str, str] = {}
        for inst in self.instruments:
            out.update(inst.series())
        return out

    def declared_arrays(self) -> dict[str, Any]:
        """Union of the array specs every instrument declares (name → ArraySpec)."""
        out: dict[str, Any] = {}
        for inst in self.instruments:
            if hasattr(inst, "arrays"):
                out.update(inst.arrays())
        return out

    def state_dict(self) -> list[tuple[str, Any]]:
        """(class name, state) of every instrument, for checkpoints; state is None for stateless ones."""
        return [(_name(inst), inst.state_dict() if hasattr(inst, "state_dict") else None)
                for inst in self.instruments]

    def load_state_dict(self, states: list[tuple[str, Any]]) -> None:
        """Restore instrument states saved by `state_dict`, matched by position and class name.

        A resumed run may attach other instruments than the original: those without a saved state start fresh,
        with one warning, instead of silently receiving another instrument's state.
        """
        fresh = []
        for i, inst in enumerate(self.instruments):
            saved = states[i] if i < len(states) else None
            if saved is None or saved[0] != _name(inst):
                if hasattr(inst, "state_dict") and inst.state_dict() is not None:
                    fresh.append(_name(inst))
            elif saved[1] is not None and hasattr(inst, "load_state_dict"):
                inst.load_state_dict(saved[1])
        if fresh:
            warnings.warn(f"resumed without saved state for {', '.join(fresh)}: their running averages restart",
                          RuntimeWarning, stacklevel=2)

    def call(self, hook: str, ctx: StepContext, *args: Any) -> dict[str, Any]:
        """Run ``hook`` on every instrument that implements it; return the merged results."""
        merged: dict[str, Any] = {}
        for inst in self.instruments:
            fn = getattr(inst, hook, None)
            if fn is None:
                continue
            try:
                result = fn(ctx, *args)
            except Exception as exc:  # noqa: BLE001 - a measurement must never stop training
                result = self._failed(inst, hook, exc)
            if result:
                merged.update(result)
        return merged

    def _failed(self, inst: Any, hook: str, exc: Exception) -> dict[str, Any]:
        """NaN for every declared series of a failing instrument; warn once per instrument."""
        if id(inst) not in self._warned:
            self._warned.add(id(inst))
            warnings.warn(
                f"instrument {type(inst).__name__}.{hook} failed ({type(exc).__name__}: {exc}); "
                "its series are recorded as NaN from now on when it fails",
                RuntimeWarning,
                stacklevel=2,
            )
        return {name: math.nan for name in inst.series()}


def _name(inst: Any) -> str:
    """An instrument's name: its key when timed, else its class."""
    return str(getattr(inst, "key", type(inst).__name__))
