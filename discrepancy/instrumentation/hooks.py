"""The hook contract between the GRPO step and the instruments: what a step hands over, and when.

The step (`discrepancy.trainers.recipe`) reads top to bottom: sample → score → advantages → μ inner iterations ×
micro-batches (forward/backward) → optimizer step → measure → record. An instrument attaches at three points of that
loop and returns plain numbers, so a reader sees the loop and the measurements apart:

* ``on_micro_backward(ctx, k)``: after micro-batch ``k``'s backward. ``.grad`` holds the gradient accumulated over
  micro-batches ``0..k``: ``Σ_{j≤k} ctx.batch.micro_weights[j] · ∇ loss_j``, so micro-batch ``k``'s own (unweighted)
  gradient is ``(grad_k − grad_{k−1}) / micro_weights[k]``.
* ``on_before_optimizer(ctx)``: full-batch gradient ``g_t`` in ``.grad`` (after clipping, so it is the gradient the
  optimizer uses), parameters still ``θ_t``; ``ctx.logp`` / ``ctx.entropy`` hold the training forward's values.
* ``on_after_optimizer(ctx)``: parameters ``θ_{t+1}``; ``.grad`` still holds ``g_t``.

Each hook returns ``dict[str, float | np.ndarray] | None``: floats go to the declared series, 1-D arrays to the
declared arrays, merged into the step's metrics row (later instruments overwrite earlier values of the same name).
With μ > 1 inner iterations the hooks run once per iteration (``ctx.iteration``); the last iteration's values stay.

Work several instruments share (a copy of θ_t, the loss at θ_t, the one post-step forward) is not done by whichever
instrument asks first: an instrument declares it in ``needs``, and the provider (`discrepancy.instrumentation.shared`)
runs before it and puts the result in ``ctx.shared``. `HookRunner` refuses a list whose needs no earlier instrument
provides. The loss before the step and the post-step forward cover the same rows, ``ctx.shared.sub_batch`` (by
default one micro-batch per step, rotating; the whole batch when the provider sets none), and an instrument that
compares them with the batch takes those rows of it (`PostStep.of`).

Under ``torchrun`` every rank runs its instruments on its own rollouts: ``on_micro_backward`` sees the rank's own
micro-batch gradients, ``on_before_optimizer`` the gradient averaged over ranks; only rank 0's values are recorded.
A failing instrument never stops training: `HookRunner` writes NaN for every series it declared and warns once.
On a step without post-step measurements (``instruments.discrepancy_every`` > 1, ``ctx.shared.measured`` false) the
runner skips every instrument that reads the loss before the step or the post-step forward (`MEASURED_ONLY`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from discrepancy.runfile.schema import ArraySpec

Metrics = dict[str, "float | np.ndarray"]


class BatchLoss(Protocol):
    """The step's full-batch training loss for given completion log-probs ``[N, T]``, exactly as training normalises
    it (no grad). The trainer supplies it; instruments compare losses before and after the step with it.

    A loss that also has ``micro(logp_k, rows_k) -> (loss_k, stats)``, micro-batch k's loss for its own log-probs
    ``[n_k, T]`` with full = Σ_k micro_weights[k] · loss_k (the trainer's `GRPOBatchLoss` has it), lets the shared
    measurements run on a sub-batch (`SubBatch`); without it they measure the whole batch."""

    def __call__(self, logp: torch.Tensor) -> float: ...


@dataclass(frozen=True)
class StepBatch:
    """The step's rollouts as the update sees them, on the training device; never modify the tensors in place.

    N = prompts × G completions, P = padded prompt length, T = padded completion length. Rows come group by group:
    rows ``g*G .. g*G+G-1`` are the completions of prompt ``g``. Micro-batches are whole groups.
    """

    input_ids: torch.Tensor  # [N, P+T] prompt (left-padded) + completion (right-padded)
    attention_mask: torch.Tensor  # [N, P+T]
    completion_mask: torch.Tensor  # [N, T] the tokens the loss counts (1 up to and including the first EOS)
    old_logp: torch.Tensor  # [N, T] log π_old of the sampled tokens (with μ = 1 filled in by the first forward)
    ref_logp: torch.Tensor | None  # [N, T] log π_ref (adapter disabled); None when β = 0
    advantages: torch.Tensor  # [N]
    group_size: int  # G
    micro_batches: list[list[int]]  # row indices of each micro-batch
    micro_weights: list[float]  # full-batch loss = Σ_k micro_weights[k] · loss(micro-batch k)
    completions: list[str] = field(default_factory=list)  # decoded completions, N of them
    reward_components: dict[str, np.ndarray] = field(default_factory=dict)  # name → [N], unweighted

    @property
    def prompt_len(self) -> int:
        """P: the prompt columns of `input_ids`."""
        return self.input_ids.shape[1] - self.completion_mask.shape[1]


@dataclass(frozen=True)
class SubBatch:
    """The rows the step's post-step measurements read: whole micro-batches of the step (docs/definitions.md §2).

    ``scale`` = K/m for m of the K micro-batches, so that the sub-batch loss L_S = scale · Σ_{k∈S} w_k · loss_k is
    an unbiased estimate of the batch loss L_B = Σ_k w_k · loss_k when every micro-batch is measured equally often
    (the rotation), for every loss normalisation; its gradient is scale · Σ_{k∈S} (w_k ∇loss_k), read off the
    accumulating ``.grad``. ``whole``: S is the batch (m = K), measured exactly as the full batch always was.
    """

    micro: tuple[int, ...]  # indices of the step's micro-batches in S
    rows: list[int]  # their rows, micro-batch by micro-batch
    scale: float  # K / m
    whole: bool

    def local(self, batch: "StepBatch") -> list[tuple[list[int], list[int], float]]:
        """(rows in S's own order, rows in the batch, weight w_k) of each micro-batch in S."""
        out, start = [], 0
        for k in self.micro:
            rows = batch.micro_batches[k]
            out.append((list(range(start, start + len(rows))), rows, batch.micro_weights[k]))
            start += len(rows)
        return out


@dataclass(frozen=True)
class PostStep:
    """The policy after the optimizer step, on the step's own rollout tokens (the rows of ``rows``)."""

    logp: torch.Tensor  # [n_S, T] log π_{θ_{t+1}} of the sampled tokens of the rows `rows`
    entropy: torch.Tensor  # [n_S, T] token entropies at θ_{t+1}
    loss: float  # L_S(θ_{t+1}) (`SubBatch`), L_{B_t}(θ_{t+1}) for the whole batch; the training normalisation
    rows: list[int] | None = None  # the batch rows measured, in order; None = all N rows

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """The measured rows of a per-row tensor of the batch (``x`` [N, ...] → [n_S, ...])."""
        return x if self.rows is None else x[self.rows]


@dataclass
class Shared:
    """Measurements several instruments read, filled by their provider in the current inner iteration."""

    theta_before: dict[str, torch.Tensor] | None = None  # copy of θ_t (trainable parameters), at on_before_optimizer
    loss_before: float | None = None  # L_S(θ_t) on `sub_batch` (L_{B_t}(θ_t) for the whole batch)
    post_step: PostStep | None = None  # the post-step forward, at on_after_optimizer
    sub_batch: SubBatch | None = None  # the rows measured, at the first on_micro_backward; None = the whole batch
    measured: bool = True  # whether this step takes the post-step measurements (instruments.discrepancy_every)

    def get(self, name: str) -> Any:
        """The named measurement; a missing one means its provider failed this iteration (the caller records NaN)."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"the shared measurement {name} is unavailable this step (its provider failed)")
        return value


SHARED_NAMES = ("theta_before", "loss_before", "post_step", "sub_batch")
#: The shared measurements a step without post-step measurements lacks; an instrument that reads one sits that step out.
MEASURED_ONLY = frozenset({"loss_before", "post_step"})


@dataclass
class StepContext:
    """What an instrument may read about the current GRPO step: plain data, plus the loss function."""

    step: int  # 1-based step number (the row this step writes)
    iteration: int  # inner iteration 0..μ-1 against the same rollouts
    model: torch.nn.Module  # the trained model (peft-wrapped); train/eval mode is restored by the caller
    params: dict[str, torch.nn.Parameter]  # trainable named parameters (the LoRA tensors), peft names
    batch: StepBatch
    loss: BatchLoss
    share_prompts: bool = True  # the run's choice for its own forwards (`grouped_token_logprobs(share=...)`)
    logp: torch.Tensor | None = None  # [N, T] this iteration's training forward at θ_t (detached)
    entropy: torch.Tensor | None = None  # [N, T] its token entropies
    shared: Shared = field(default_factory=Shared)


class Instrument(Protocol):
    """Every hook an instrument may implement. Instruments subclass it explicitly and override what they use; the
    defaults do nothing, so the step calls every hook of every instrument without asking which it has."""

    needs: tuple[str, ...] = ()  # shared measurements read from ctx.shared (names in SHARED_NAMES)
    provides: tuple[str, ...] = ()  # shared measurements this instrument writes into ctx.shared

    def series(self) -> dict[str, str]:
        """Per-step series this instrument writes: name → one-line description. Declared before step 1, because
        the run file cannot add datasets later."""
        return {}

    def arrays(self) -> dict[str, ArraySpec]:
        """Per-step vector series (name → columns and description)."""
        return {}

    def on_micro_backward(self, ctx: StepContext, k: int) -> Metrics | None:
        """After micro-batch ``k``'s backward (see the module docstring)."""
        return None

    def on_before_optimizer(self, ctx: StepContext) -> Metrics | None:
        """Gradient ready and clipped, parameters still θ_t."""
        return None

    def on_after_optimizer(self, ctx: StepContext) -> Metrics | None:
        """Parameters θ_{t+1}."""
        return None

    def state_dict(self) -> Any:
        """State kept across steps, for checkpoints (None when the instrument keeps none)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restore a `state_dict`."""
        return None


def check_order(instruments: list[Instrument]) -> None:
    """Raise ValueError unless every declared need is provided by an earlier instrument (a wiring bug)."""
    provided: set[str] = set()
    for inst in instruments:
        missing = [n for n in inst.needs if n not in provided]
        if missing:
            raise ValueError(f"instrument {instrument_name(inst)} needs {', '.join(missing)}, which no earlier "
                             "instrument provides (put a SharedMeasurements first: instrumentation.with_shared)")
        provided.update(inst.provides)


@dataclass
class HookRunner:
    """Calls every instrument at a hook point and merges what they return; failures become NaN + one warning."""

    instruments: list[Instrument] = field(default_factory=list)
    _warned: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        check_order(self.instruments)

    def declared_series(self) -> dict[str, str]:
        """Union of the series every instrument declares (name → description)."""
        return {name: text for inst in self.instruments for name, text in inst.series().items()}

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Union of the array specs every instrument declares."""
        return {name: spec for inst in self.instruments for name, spec in inst.arrays().items()}

    def state_dict(self) -> list[tuple[str, Any]]:
        """(name, state) of every instrument, for checkpoints; state is None for stateless ones."""
        return [(instrument_name(inst), inst.state_dict()) for inst in self.instruments]

    def load_state_dict(self, states: list[tuple[str, Any]]) -> None:
        """Restore instrument states saved by `state_dict`, matched by name (in order among equal names).

        A resumed run may attach other instruments than the original: those without a saved state start fresh,
        with one warning, instead of silently receiving another instrument's state.
        """
        saved: dict[str, list[Any]] = {}
        for name, state in states:
            saved.setdefault(name, []).append(state)
        fresh = []
        for inst in self.instruments:
            queue = saved.get(instrument_name(inst))
            if not queue:
                if inst.state_dict() is not None:
                    fresh.append(instrument_name(inst))
                continue
            state = queue.pop(0)
            if state is not None:
                inst.load_state_dict(state)
        if fresh:
            warnings.warn(f"resumed without saved state for {', '.join(fresh)}: their running averages restart",
                          RuntimeWarning, stacklevel=2)

    def on_micro_backward(self, ctx: StepContext, k: int) -> Metrics:
        """Every instrument's `on_micro_backward`, merged."""
        return self._merge(ctx, lambda inst: inst.on_micro_backward(ctx, k), "on_micro_backward")

    def on_before_optimizer(self, ctx: StepContext) -> Metrics:
        """Every instrument's `on_before_optimizer`, merged."""
        return self._merge(ctx, lambda inst: inst.on_before_optimizer(ctx), "on_before_optimizer")

    def on_after_optimizer(self, ctx: StepContext) -> Metrics:
        """Every instrument's `on_after_optimizer`, merged."""
        return self._merge(ctx, lambda inst: inst.on_after_optimizer(ctx), "on_after_optimizer")

    def _merge(self, ctx: StepContext, call: Any, hook: str) -> Metrics:
        merged: Metrics = {}
        for inst in self.instruments:
            if not ctx.shared.measured and MEASURED_ONLY & set(inst.needs):
                continue  # a step between post-step measurements: its series stay NaN, its time is not spent
            try:
                result = call(inst)
            except Exception as exc:  # noqa: BLE001 - a measurement must never stop training
                result = self._failed(inst, hook, exc)
            if result:
                merged.update(result)
        return merged

    def _failed(self, inst: Instrument, hook: str, exc: Exception) -> Metrics:
        """NaN for every declared series of a failing instrument; warn once per instrument."""
        if id(inst) not in self._warned:
            self._warned.add(id(inst))
            warnings.warn(
                f"instrument {type(inst).__name__}.{hook} failed ({type(exc).__name__}: {exc}); "
                "its series are recorded as NaN from now on when it fails",
                RuntimeWarning,
                stacklevel=3,
            )
        return {name: math.nan for name in inst.series()}


def instrument_name(inst: Instrument) -> str:
    """An instrument's name: its key when timed, else its class."""
    return str(getattr(inst, "key", type(inst).__name__))
