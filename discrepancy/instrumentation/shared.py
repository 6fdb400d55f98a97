"""Measurements several instruments share, made once per step by one provider that runs before them.

- which steps take them (``instruments.discrepancy_every``, default every fourth: `SharedMeasurements.measures`)
  and which rows they read there (`SubBatch`): by default one micro-batch, rotating over the step's micro-batches
  (``instruments.discrepancy_groups``), so that the post-step forward reads 1/K of the batch (the default recipe,
  K = 2: ≈ 10 ms of CPU against ≈ 16 ms for the whole batch, ≈ 3 ms of it the fixed cost of the model calls
  whatever the rows, so only measuring fewer steps brings the instruments near 5 % of a ≈ 90 ms step;
  benchmarks/results/instrumentation.md);
- a copy of θ_t, taken before the optimizer moves the weights, so Δθ = θ_{t+1} − θ_t can be formed after the step;
- the loss at θ_t on those rows (from the training forward's log-probs: no extra forward unless dropout made them
  random);
- the one post-step forward at θ_{t+1} on those rows (log-probs, entropies, loss) that D_t, the realised KL, ΔH, the
  ratio quantiles and the KL to the start all read: the one forward the instruments add to every step.

Instruments say which they read (`Instrument.needs`); `with_shared` puts a provider of exactly those first. Its time is
its own series (``time_shared``), so each instrument's time is what it adds on top.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch

from discrepancy.instrumentation.config import parse_groups
from discrepancy.instrumentation.hooks import (
    MEASURED_ONLY, SHARED_NAMES, Instrument, PostStep, StepBatch, StepContext, SubBatch,
)
from discrepancy.modeling.devices import prompt_sharing_pays
from discrepancy.modeling.logprobs import batch_logprobs
from discrepancy.modeling.lora_fold import folded_lora
from discrepancy.modeling.modes import has_active_dropout


def measurement_forward(ctx: StepContext, share_prompts: bool | None = None, fold_lora: bool = True,
                        sub: SubBatch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π [n, T], entropy [n, T]) of the rollout tokens at the current weights, no grad, eval mode: of every row
    (n = N), or of the rows of ``sub`` in its order (n = its rows).

    ``share_prompts``: encode each prompt once per group, in chunks of whole groups as large as the logits budget
    allows (default: the device policy, `devices.prompt_sharing_pays`); otherwise the forward runs micro-batch by
    micro-batch as the trainer's own no-grad forwards do. ``fold_lora`` folds float32 LoRA updates into the base
    weights for the forward (same values to float32 rounding, base weights restored bit for bit).
    """
    b = ctx.batch
    if share_prompts is None:
        share_prompts = prompt_sharing_pays(b.input_ids.device)
    ids, mask, micro = b.input_ids, b.attention_mask, b.micro_batches
    if sub is not None and not sub.whole:
        ids, mask = ids[sub.rows], mask[sub.rows]  # [n_S, P+T]
        micro = [local for local, _, _ in sub.local(b)]
    chunks = None if share_prompts else micro
    fold = folded_lora(ctx.model) if fold_lora else contextlib.nullcontext()
    with fold:
        logp, entropy = batch_logprobs(ctx.model, ids, mask, b.prompt_len, b.group_size,
                                       chunks=chunks, share=True if share_prompts else ctx.share_prompts)
    assert entropy is not None
    return logp, entropy


def measured_loss(ctx: StepContext, logp: torch.Tensor, sub: SubBatch | None) -> float:
    """The training loss of the measured rows for their log-probs ``logp`` [n, T]: the batch loss for the whole
    batch, else L_S = scale · Σ_{k∈S} w_k · loss_k (`SubBatch`), unbiased for the batch loss over the rotation."""
    if sub is None or sub.whole:
        return float(ctx.loss(logp))
    micro = ctx.loss.micro  # type: ignore[attr-defined]  # present whenever a sub-batch was chosen
    return sub.scale * sum(w * float(micro(logp[local], rows)[0]) for local, rows, w in sub.local(ctx.batch))


def loss_at_theta_t(ctx: StepContext, sub: SubBatch | None = None) -> float:
    """L_S(θ_t) on the measured rows (the batch loss L_{B_t}(θ_t) for the whole batch), before the optimizer step:
    from the training forward's log-probs when the step kept them.

    The training forward runs in train mode; with active dropout its loss is not the deterministic L_pre that L_post
    is compared with, so then an eval-mode forward of the measured rows is paid for.
    """
    whole = sub is None or sub.whole
    if ctx.logp is not None and not has_active_dropout(ctx.model):
        return measured_loss(ctx, ctx.logp if whole else ctx.logp[sub.rows], sub)
    b = ctx.batch
    ids, mask, chunks = b.input_ids, b.attention_mask, b.micro_batches
    if not whole:
        ids, mask, chunks = ids[sub.rows], mask[sub.rows], [local for local, _, _ in sub.local(b)]
    logp, _ = batch_logprobs(ctx.model, ids, mask, b.prompt_len, b.group_size,
                             chunks=chunks, share=ctx.share_prompts, with_entropy=False)
    return measured_loss(ctx, logp, sub)


def choose_sub_batch(batch: StepBatch, step: int, groups: int | None, can_split: bool = True) -> SubBatch:
    """The micro-batches the ``step``-th measured step measures (1-based: every step's own number with
    ``instruments.discrepancy_every`` = 1): m consecutive ones (cyclically) starting at ((step − 1)·m) mod K.

    ``groups``: 0 = one micro-batch, None = all, n = the fewest micro-batches holding n groups (m = ⌈n / groups per
    micro-batch⌉), since ΔL_pred needs the sub-batch's own gradient and the step holds gradients per micro-batch.
    Over K consecutive steps (K/gcd(K, m) starts) every micro-batch is measured equally often, which makes the
    scaled sub-batch loss unbiased for the batch loss. ``can_split`` false (a loss without per-micro-batch form):
    the whole batch.
    """
    k_all = len(batch.micro_batches)
    if groups is None or not can_split or k_all <= 1:
        m = k_all
    elif groups == 0:
        m = 1
    else:
        per_micro = max(1, len(batch.micro_batches[0]) // batch.group_size)
        m = min(k_all, math.ceil(groups / per_micro))
    if m >= k_all:
        return SubBatch(micro=tuple(range(k_all)), rows=[r for rows in batch.micro_batches for r in rows],
                        scale=1.0, whole=True)
    start = ((step - 1) * m) % k_all
    micro = tuple((start + i) % k_all for i in range(m))
    return SubBatch(micro=micro, rows=[r for k in micro for r in batch.micro_batches[k]], scale=k_all / m,
                    whole=False)


SERIES = {
    "discrepancy_rows": "completions in the sub-batch S that L_pre, L_post and the post-step measurements read "
                        "(instruments.discrepancy_groups; all N of the batch with \"all\"); NaN on a step between "
                        "post-step measurements (instruments.discrepancy_every)",
    "discrepancy_micro": "index of the first of the step's micro-batches in S (rotates from one measured step to the "
                         "next); NaN on a step between post-step measurements",
}


class SharedMeasurements(Instrument):
    """Provides the shared measurements named in ``which`` (all by default) in ``ctx.shared``, every iteration.

    ``groups``: the sub-batch the loss before the step and the post-step forward read ("micro": one micro-batch,
    rotating; "all": the whole batch; n: at least n prompt groups, see `choose_sub_batch`). ``every``: take the
    loss before the step and the post-step forward on steps 1, 1 + every, 1 + 2·every, ... only; the other steps
    mark ``ctx.shared.measured`` false and the instruments that read them sit those steps out (`hooks.HookRunner`).
    ``theta_every_step``: copy θ_t on those other steps too (an instrument reads it on its own schedule, as the
    linearisation check does); else only on measured steps (`theta_needed_between`).
    """

    def __init__(self, which: Iterable[str] = SHARED_NAMES, share_prompts: bool | None = None,
                 fold_lora: bool = True, groups: int | str = "micro", every: int = 1,
                 theta_every_step: bool = True) -> None:
        unknown = set(which) - set(SHARED_NAMES)
        if unknown:
            raise ValueError(f"unknown shared measurements {sorted(unknown)}; known: {', '.join(SHARED_NAMES)}")
        self.provides = (*(n for n in SHARED_NAMES if n in set(which) and n != "sub_batch"), "sub_batch")
        self.share_prompts = share_prompts
        self.fold_lora = fold_lora
        self.groups = parse_groups(groups)
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.every = every
        self.theta_every_step = theta_every_step  # some instrument reads θ_t also between measured steps

    def series(self) -> dict[str, str]:
        """The size and position of the measured sub-batch, when there is a loss or a post-step forward to read it."""
        return dict(SERIES) if {"loss_before", "post_step"} & set(self.provides) else {}

    def measures(self, step: int) -> bool:
        """Whether step ``step`` (1-based) takes the loss before the step and the post-step forward."""
        return (step - 1) % self.every == 0

    def _choose(self, ctx: StepContext) -> SubBatch | None:
        """The rows this step measures (a function of the step alone); None on a step between measurements."""
        if not self.measures(ctx.step):
            return None
        # the rotation counts measured steps, so that every micro-batch is measured equally often whatever `every`
        measured = (ctx.step - 1) // self.every + 1
        return choose_sub_batch(ctx.batch, measured, self.groups, can_split=hasattr(ctx.loss, "micro"))

    def _mark(self, ctx: StepContext) -> None:
        ctx.shared.sub_batch = self._choose(ctx)
        ctx.shared.measured = ctx.shared.sub_batch is not None

    def on_micro_backward(self, ctx: StepContext, k: int) -> None:
        """At the first micro-batch, fix the rows this iteration measures (instruments read its gradient from here)."""
        if k == 0:
            self._mark(ctx)

    def on_before_optimizer(self, ctx: StepContext) -> None:
        """Copy θ_t and fix L_pre before the optimizer moves the weights."""
        shared = ctx.shared
        shared.theta_before = shared.loss_before = shared.post_step = None  # nothing stale from another iteration
        self._mark(ctx)  # the same choice (a function of the step), also without micro hooks
        if "theta_before" in self.provides and (shared.measured or self.theta_every_step):
            shared.theta_before = {n: p.detach().clone() for n, p in ctx.params.items()}
        if "loss_before" in self.provides and shared.measured:
            shared.loss_before = loss_at_theta_t(ctx, shared.sub_batch)

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float] | None:
        """The post-step forward at θ_{t+1}, on the measured rows."""
        ctx.shared.post_step = None
        if not ctx.shared.measured:
            return dict.fromkeys(self.series(), math.nan) or None
        sub = ctx.shared.get("sub_batch")
        if "post_step" in self.provides:
            logp, entropy = measurement_forward(ctx, self.share_prompts, self.fold_lora, sub)  # [n_S, T] each
            ctx.shared.post_step = PostStep(logp=logp.detach(), entropy=entropy.detach(),
                                            loss=measured_loss(ctx, logp, sub), rows=None if sub.whole else sub.rows)
        if not self.series():
            return None
        return {"discrepancy_rows": float(len(sub.rows)), "discrepancy_micro": float(sub.micro[0])}


def theta_needed_between(instruments: Iterable[Instrument]) -> bool:
    """Whether an instrument reads θ_t without the post-step measurements, and so also between measured steps."""
    return any("theta_before" in inst.needs and not MEASURED_ONLY & set(inst.needs) for inst in instruments)


def needed(instruments: Iterable[Instrument]) -> set[str]:
    """The shared measurements the instruments read."""
    return {n for inst in instruments for n in inst.needs}


def with_shared(instruments: list[Instrument], share_prompts: bool | None = None, fold_lora: bool = True,
                groups: int | str = "micro", every: int = 1) -> list[Instrument]:
    """``instruments`` with a provider of what they need in front (unchanged when they need nothing, or when the
    list already provides it)."""
    need = needed(instruments) - {n for inst in instruments for n in inst.provides}
    if not need:
        return list(instruments)
    return [SharedMeasurements(need, share_prompts, fold_lora, groups, every, theta_needed_between(instruments)),
            *instruments]


def last_micro_batch(ctx: StepContext, k: int) -> bool:
    """True at the backward of the step's last micro-batch, where `.grad` is the full, still unclipped gradient."""
    return k == len(ctx.batch.micro_batches) - 1
