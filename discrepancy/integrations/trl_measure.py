"""The shared measurements of a TRL step (θ_t, L_pre, the post-step forward), made with TRL's own loss.

D_t compares the loss a step expected with the loss it got *on its own batch and objective*, so L_pre and L_post
are TRL's loss (`GRPOTrainer._compute_loss`, whatever its loss type, clipping, KL, entropy bonus or masks), never a
second implementation of it:

- L_pre = Σ_k ℓ_k, the values TRL backpropagated for the K micro-batches at θ_t (each already divided by K), so
  `.grad` after the last backward is exactly ∇L_pre. With active dropout that value is random; then L_pre is
  evaluated again without dropout, as `instrumentation.shared.loss_at_theta_t` does for `discrepancy train`.
- L_post = Σ_k ℓ_k at θ_{t+1}: TRL's loss on the same micro-batches, no grad, no dropout, with π_old fixed to the
  θ_t log-probs. (TRL leaves π_old out when μ = 1 and uses its own detached log-probs, a ratio of exactly 1; at
  θ_{t+1} that would make ΔL_obs = 0 by construction, so the θ_t log-probs are handed in explicitly.)

Evaluating TRL's loss has side effects TRL means for training only (it appends to the metrics it logs and advances
the adaptive entropy controller): they are saved and restored around each evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from discrepancy.instrumentation.hooks import Instrument, PostStep, StepContext
from discrepancy.integrations.trl_batch import MicroBatch, StepRecord, pad_cat
from discrepancy.modeling.modes import has_active_dropout

#: TRL attributes its loss changes as a side effect (the adaptive entropy controller's state).
_CONTROLLER = ("_entropy_window_stats", "entropy_coef", "_last_world_entropy")

#: (micro-batches, π_old log-probs per micro-batch or None for TRL's own) → (L, log π [N, T], entropy [N, T]).
LossEvaluator = Callable[[list[MicroBatch], "list[torch.Tensor] | None"], tuple[float, torch.Tensor, torch.Tensor]]


@contextmanager
def quiet_trl(trainer: Any) -> Iterator[None]:
    """Within the block TRL's loss may run without leaving a trace in its logged metrics or entropy controller."""
    metrics = {mode: {k: list(v) for k, v in values.items()} for mode, values in trainer._metrics.items()}
    controller = {a: copy.copy(getattr(trainer, a)) for a in _CONTROLLER if hasattr(trainer, a)}
    try:
        yield
    finally:
        for mode, values in metrics.items():
            trainer._metrics[mode].clear()
            trainer._metrics[mode].update(values)
        for name, value in controller.items():
            setattr(trainer, name, value)


@contextmanager
def dropout_off_train_loss(model: torch.nn.Module) -> Iterator[None]:
    """No dropout within the block, while ``model.training`` stays True: TRL normalises its loss by the accumulation
    steps only in train mode, read from the top module's flag, so the submodules go to eval mode and the top does
    not. A model without active dropout is left alone (its train-mode forward is already deterministic)."""
    if not (model.training and has_active_dropout(model)):
        yield
        return
    model.eval()
    model.training = True  # the top flag TRL reads; every submodule stays in eval mode
    try:
        yield
    finally:
        model.train()


def evaluate_trl_loss(trainer: Any, micro: list[MicroBatch],
                      olds: list[torch.Tensor] | None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """TRL's full-batch loss Σ_k ℓ_k on ``micro`` at the current weights, with its log-probs and entropies.

    ``olds``: π_old log-probs per micro-batch for micro-batches where TRL left them out (None: TRL's own rule).
    """
    total, logps, entropies = 0.0, [], []
    with torch.no_grad(), quiet_trl(trainer), dropout_off_train_loss(trainer.model):
        for k, m in enumerate(micro):
            inputs = m.inputs
            if olds is not None and inputs.get("old_per_token_logps") is None:
                inputs = {**inputs, "old_per_token_logps": olds[k]}
            with trainer.capturing_logps() as seen, trainer.compute_loss_context_manager():
                total += float(trainer.trl_loss(trainer.model, inputs))
            logps.append(seen[0][0])
            entropies.append(seen[0][1])
    return total, pad_cat(logps, left=False), pad_cat(entropies, left=False)


class TRLSharedMeasurements(Instrument):
    """Provides θ_t, L_pre and the post-step forward from TRL's loss (module docstring), every step.

    ``step_record`` returns the current step's record (its micro-batches, and the order the `StepBatch` put their
    rows in); ``evaluate`` is `evaluate_trl_loss` bound to the trainer; ``dropout`` says whether the training
    forward was random (then L_pre is evaluated again).
    """

    provides = ("theta_before", "loss_before", "post_step")

    def __init__(self, step_record: Callable[[], StepRecord], evaluate: LossEvaluator, dropout: bool) -> None:
        self._record = step_record
        self._evaluate = evaluate
        self._dropout = dropout
        self._olds: list[torch.Tensor] | None = None

    def on_before_optimizer(self, ctx: StepContext) -> None:
        """Copy θ_t and fix L_pre (and the θ_t log-probs L_post compares against)."""
        shared = ctx.shared
        shared.theta_before = shared.loss_before = shared.post_step = None
        shared.theta_before = {n: p.detach().clone() for n, p in ctx.params.items()}
        micro = self._record().micro
        if self._dropout:
            loss, logp, _ = self._evaluate(micro, None)
            sizes = [m.logp.shape for m in micro]
            self._olds = [logp[sum(s[0] for s in sizes[:k]):][: s[0], : s[1]] for k, s in enumerate(sizes)]
            shared.loss_before = loss
        else:
            self._olds = [m.logp for m in micro]
            shared.loss_before = sum(m.loss for m in micro)

    def on_after_optimizer(self, ctx: StepContext) -> None:
        """The post-step forward: TRL's loss on the step's micro-batches at θ_{t+1}."""
        ctx.shared.post_step = None
        record = self._record()
        loss, logp, entropy = self._evaluate(record.micro, self._olds)
        if record.order is not None:  # the StepBatch's rows are in generation order
            index = torch.as_tensor(record.order, device=logp.device)
            logp, entropy = logp[index], entropy[index]
        ctx.shared.post_step = PostStep(logp=logp, entropy=entropy, loss=loss)
