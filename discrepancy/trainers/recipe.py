"""One GRPO step, readable top to bottom: sample → score → advantages → old/ref log-probs → μ × micro-batches of
forward/backward → clip → optimizer step → measure.

`grpo_step` returns what the step measured; the loop around it (`discrepancy.trainers.run`) records it. Instruments
attach through `discrepancy.instrumentation.hooks` at the micro-batch backward and around the optimizer step. How the
step is made fast (sampler, compiled layers, fused LoRA, shared prompts) is the run's `SpeedPlan`, decided once.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.instrumentation.hooks import HookRunner, StepBatch, StepContext
from discrepancy.modeling.logprobs import batch_logprobs, grouped_token_logprobs
from discrepancy.modeling.lora_fold import adapter_disabled
from discrepancy.trainers.config import GRPOConfig, TrainConfig
from discrepancy.trainers.grpo import grpo_loss
from discrepancy.trainers.control import CONTROL_SERIES, Controller
from discrepancy.trainers.critique import critique_calibration
from discrepancy.trainers.curriculum_sampling import Draw, ScoredRollouts, sample_and_score
from discrepancy.trainers.curriculum_step import (
    NUM_PROMPTS_SERIES, Orchestration, StepPlan, StepSettings, reward_context, step_settings,
)
from discrepancy.trainers.growth import GROWTH_SERIES, LoraGrowth
from discrepancy.trainers.rewards import RewardSpec, score_completions
from discrepancy.trainers.speed import SpeedPlan
from discrepancy.trainers.step_metrics import (
    CRITIQUE_SERIES, loss_stats, reward_metrics, rollout_metrics, sample_column,
)
from discrepancy.trainers.tasks import Example

# Series every step writes (name → description); reward components add ``reward_<name>``.
STEP_SERIES: dict[str, str] = {
    "loss": "GRPO loss L_pre of the step's batch at θ_t (last inner iteration)",
    "policy_loss": "the loss without the β·KL term",
    "kl": "token-mean KL term (k3) to the reference (adapter disabled); NaN when β = 0",
    "entropy": "token-mean entropy of the policy on the sampled completions",
    "reward_mean": "mean weighted total reward",
    "reward_std": "std of the weighted total reward over the batch",
    "frac_reward_zero_std": "share of prompt groups whose rewards all tie (no learning signal)",
    "advantage_abs_mean": "mean |advantage|",
    "completion_length_mean": "mean completion length in tokens (up to and including EOS)",
    "completion_length_min": "shortest completion in tokens",
    "completion_length_max": "longest completion in tokens",
    "truncated_frac": "share of completions without EOS within max_completion_length",
    "clip_ratio_low": "share of tokens clipped below (ρ < 1−ε_low, Â < 0)",
    "clip_ratio_high": "share of tokens clipped above (ρ > 1+ε_high, Â > 0)",
    "clip_ratio_region": "share of tokens clipped either way",
    "ratio_mean": "token-mean importance ratio π_θ/π_old",
    "lr": "learning rate of the step",
    "temperature": "sampling temperature of the step",
    "beta": "KL weight β of the step",
    "grad_norm": "gradient norm before clipping",
    "skipped": "1 when the update was skipped: the loss was NaN/inf, or no completion had a usable reward",
    "reward_unusable_frac": "share of completions without a usable total reward (every component NaN/±inf, or a "
                            "total beyond float32's range): advantage 0",
    "sample_time": "seconds spent sampling (generation)",
    "score_time": "seconds spent scoring completions (rewards and advantages)",
    "train_time": "seconds in the policy update (forwards, backwards, optimizer), instruments included",
    "step_time": "seconds for the whole step (sampling, scoring, update, instruments)",
}


@dataclass
class TrainState:
    """Everything the step needs and changes. ``step`` is the last completed step (0 before training)."""

    cfg: TrainConfig
    model: torch.nn.Module  # peft-wrapped
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    examples: list[Example]
    rewards: list[RewardSpec]
    plan: SpeedPlan  # how the step is made fast on this device (`trainers.speed`)
    hooks: HookRunner = field(default_factory=HookRunner)
    prompt_rng: random.Random = field(default_factory=random.Random)
    step: int = 0
    bad_steps: int = 0  # consecutive skipped steps (non-finite loss, or no usable reward)
    bad_reason: str = ""  # why the last skipped step was skipped
    total_steps: int = 1
    control: Controller | None = None  # closed-loop control (`trainers.control`); None when every controller is off
    growth: LoraGrowth | None = None  # dynamic LoRA (`trainers.growth`), applied between steps; None when off
    orchestration: Orchestration | None = None  # curriculum, ledger, sampling, fusion; None when all are off

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        """Trainable named parameters (the LoRA tensors)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}


@dataclass
class StepResult:
    """What one step measured: the metrics row, per-instrument arrays, and the samples to record."""

    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]
    prompt_ids: list[str]
    prompts: list[str]
    completions: list[str]
    sample_fields: dict[str, np.ndarray]  # [N] each


def micro_batches(num_groups: int, group_size: int, groups_per_micro: int) -> list[list[int]]:
    """Row indices of each micro-batch: whole prompt groups, since completions of one prompt are correlated."""
    out = []
    for g0 in range(0, num_groups, groups_per_micro):
        g1 = min(num_groups, g0 + groups_per_micro)
        out.append(list(range(g0 * group_size, g1 * group_size)))
    return out


def micro_weights(mask: torch.Tensor, batches: list[list[int]], loss_type: str) -> list[float]:
    """Weights w_k with full-batch loss = Σ_k w_k · loss(micro-batch k), exactly, for each loss type.

    grpo and dr_grpo average over sequences (w_k = n_k / N); bnpo averages over the batch's tokens
    (w_k = tokens_k / tokens); dapo already divides by the whole batch's token count (w_k = 1).
    """
    n = mask.size(0)
    if loss_type == "dapo":
        return [1.0] * len(batches)
    if loss_type == "bnpo":
        tokens = mask.sum().clamp(min=1).item()
        return [mask[rows].sum().item() / tokens for rows in batches]
    return [len(rows) / n for rows in batches]


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class GRPOBatchLoss:
    """The step's GRPO loss, micro-batch by micro-batch or over the whole batch with exactly the training
    normalisation (`micro_weights`). The instruments receive it as their `BatchLoss`."""

    grpo: GRPOConfig
    batch: StepBatch
    beta: float
    num_items: float  # completion tokens in the whole generation batch (the dapo normaliser)

    def micro(self, logp: torch.Tensor, rows: list[int], on_policy: bool = False) -> tuple[torch.Tensor, Any]:
        """The loss of micro-batch ``rows`` for its log-probs ``[n_k, T]`` (its own normalisation) and its stats;
        ``on_policy``: π_old is this very forward (μ = 1), so the ratio is 1 and its gradient the policy gradient."""
        g, b = self.grpo, self.batch
        old = None if on_policy else b.old_logp[rows]
        ref = None if b.ref_logp is None else b.ref_logp[rows]
        return grpo_loss(logp, old, ref, b.advantages[rows], b.completion_mask[rows], loss_type=g.loss_type,
                         eps_low=g.eps_low, eps_high=g.eps_high, beta=self.beta,
                         kl_ratio_correction=g.kl_ratio_correction, max_completion_length=g.max_completion_length,
                         num_items=self.num_items)

    def __call__(self, logp: torch.Tensor) -> float:
        """Full-batch training loss for log-probs ``[N, T]`` (no grad)."""
        b = self.batch
        return sum(w * float(self.micro(logp[rows], rows)[0]) for rows, w in zip(b.micro_batches, b.micro_weights))


@dataclass(frozen=True)
class Update:
    """How the step's update runs: the loss, and whether π_old was fixed before it (μ > 1)."""

    loss: GRPOBatchLoss
    fixed_old: bool


def step_context(state: TrainState, scored: ScoredRollouts, step: int, beta: float) -> tuple[StepContext, Update]:
    """What the update and the instruments share: the batch with its masks, micro-batches, π_old / reference
    log-probs, and the loss exactly as training normalises it."""
    g, model, roll, plan = state.cfg.grpo, state.model, scored.roll, state.plan
    input_ids, attn = roll.input_ids, roll.attention_mask  # [N, P+T]
    plen = roll.prompt_ids.size(1)
    loss_mask = roll.completion_mask.clone()  # [N, T]
    if g.mask_truncated:
        loss_mask = loss_mask * (~roll.truncated).long().unsqueeze(1)  # [N, T]
    micro = micro_batches(len(scored.prompt_ids) // g.group_size, g.group_size, g.micro_batch_groups)

    def forward() -> torch.Tensor:  # [N, T] no grad, eval mode, micro-batch by micro-batch
        return batch_logprobs(model, input_ids, attn, plen, g.group_size, chunks=micro, share=plan.share_prompts,
                              with_entropy=False)[0]

    # π_old of every row: fixed before the update when μ > 1; with μ = 1 the training forward fills it in.
    fixed_old = g.inner_iterations > 1
    old_logp = forward() if fixed_old else torch.zeros_like(loss_mask, dtype=torch.float32)  # [N, T]
    ref_logp = None
    if beta > 0:
        with adapter_disabled(model):  # the reference is the base model: same weights, adapter off
            ref_logp = forward()  # [N, T]
    batch = StepBatch(input_ids=input_ids, attention_mask=attn, completion_mask=loss_mask, old_logp=old_logp,
                      ref_logp=ref_logp, advantages=scored.advantages, group_size=g.group_size, micro_batches=micro,
                      micro_weights=micro_weights(loss_mask, micro, g.loss_type), completions=roll.completions,
                      reward_components=scored.components)
    loss = GRPOBatchLoss(g, batch, beta, num_items=float(loss_mask.sum()))
    ctx = StepContext(step=step, iteration=0, model=model, params=state.params, batch=batch, loss=loss,
                      share_prompts=plan.share_prompts)
    return ctx, Update(loss, fixed_old)


def grpo_step(state: TrainState) -> StepResult:
    """Run one GRPO step on ``state`` (advances ``state.step``) and return its measurements."""
    orch = state.orchestration
    step = state.step + 1
    t_start = time.perf_counter()
    plan = orch.begin(state.model) if orch is not None else None  # the phase: its locks, weights and settings
    at = step_settings(state, step, plan)
    _set_lr(state.optimizer, at.lr)

    scored = _sample(state, step, at.temperature, at.num_prompts, plan)  # sample from π_old, rewards, group advantages
    metrics: dict[str, Any] = {}
    ctx = None
    t0 = time.perf_counter()
    if not scored.total.size:
        # Dynamic sampling kept no group: every group drawn tied, so there is nothing to learn from. Not a bad
        # step (a solved task ties everywhere): no update, and it does not count towards grpo.max_bad_steps.
        metrics["skipped"] = 1.0
    elif not np.isfinite(scored.total).any():
        # Nothing to learn from: every completion's reward is NaN or infinite. Updating would follow the KL term
        # alone; the step is skipped and counted towards grpo.max_bad_steps instead.
        metrics["skipped"] = 1.0
        state.bad_reason = "no completion got a usable reward (every reward NaN or infinite); check the rewards"
    else:
        with state.plan.training_forwards(state.model):  # compiled layers or fused LoRA (no-grad forwards: eager)
            ctx, update = step_context(state, scored, step, at.beta)  # π_old / reference log-probs, the loss

            # ---- policy update: μ inner iterations × micro-batches, gradient accumulation ----------------------
            _policy_update(state, ctx, update, metrics)
    train_time = time.perf_counter() - t0
    state.step = step
    state.bad_steps = state.bad_steps + 1 if metrics.get("skipped") and scored.total.size else 0
    metrics.update(sample_time=scored.sample_time, score_time=scored.score_time, train_time=train_time)
    return _measure(state, scored, ctx, at, plan, metrics, t_start)


def _measure(state: TrainState, scored: ScoredRollouts, ctx: StepContext | None, at: StepSettings,
             plan: StepPlan | None, metrics: dict[str, Any], t_start: float) -> StepResult:
    """The step's row (rollout statistics, settings, timings, the instruments' values already in ``metrics``), its
    arrays and samples; the curriculum, ledger, fusion and controllers see the row before it is returned."""
    g, orch, roll = state.cfg.grpo, state.orchestration, scored.roll
    entropy, loss_mask = (ctx.entropy, ctx.batch.completion_mask) if ctx is not None else (None, None)
    if scored.total.size:
        metrics.update(rollout_metrics(roll.completion_mask, roll.truncated, scored.rewards, scored.advantages,
                                        scored.components, entropy, loss_mask, g.group_size))
    if scored.drawn_total is not None:  # dynamic sampling: rewards of every completion drawn, dropped ones included
        metrics.update(reward_metrics(scored.drawn_total, scored.drawn_components))
    if has_critique(state.rewards):  # how well the self-assessments match the verifier
        metrics.update(critique_calibration(scored.prompts, roll.completions, scored.answers))
    metrics.update(lr=at.lr, temperature=at.temperature, beta=at.beta, skipped=metrics.get("skipped", 0.0),
                   step_time=time.perf_counter() - t_start)
    arrays = {k: np.asarray(v) for k, v in metrics.items() if isinstance(v, np.ndarray)}
    scalars = {k: float(v) for k, v in metrics.items() if not isinstance(v, np.ndarray)}
    if orch is not None or state.control is not None:
        scalars["num_prompts"] = float(at.num_prompts)
    if orch is not None and plan is not None:  # ledger, fusion and curriculum see the step; its phase row
        scalars.update(plan.row)
        orch.end(scored, scalars, arrays)
    if state.control is not None:  # what was applied, and what this step's measurements decide for the next
        scalars.update(at.applied, ctl_action=float(state.control.observe(scalars)))
    fields = {"reward": scored.total, "advantage": scored.advantages.cpu().numpy(),
              "length": roll.completion_mask.sum(1).cpu().numpy().astype(float),
              **{sample_column(k): v for k, v in scored.components.items()}}
    return StepResult(scalars, arrays, scored.prompt_ids, scored.prompts, roll.completions, fields)


def step_series(state: TrainState) -> dict[str, str]:
    """Every series the step writes (name → description), for the run file's schema; the instruments add theirs."""
    series = dict(STEP_SERIES) | (CONTROL_SERIES | NUM_PROMPTS_SERIES if state.control is not None else {})
    series.update({f"reward_{s.name}": f"mean of reward component {s.name} (unweighted)" for s in state.rewards})
    series.update(CRITIQUE_SERIES if has_critique(state.rewards) else {})
    series.update(GROWTH_SERIES if state.growth is not None else {})  # dynamic LoRA: active rank and scale
    if state.orchestration is not None:  # curriculum, ledger, dynamic sampling, reward weights
        series.update(state.orchestration.series([s.name for s in state.rewards]))
    return series


def has_critique(rewards: list[RewardSpec]) -> bool:
    """Whether a critique reward is among ``rewards`` (the run then records `CRITIQUE_SERIES`)."""
    return any(getattr(spec.fn, "critique_section", False) for spec in rewards)


def _sample(state: TrainState, step: int, temperature: float, num_prompts: int,
            plan: StepPlan | None) -> ScoredRollouts:
    """The step's scored rollouts: prompts drawn by the run's sampler (the task uniformly without one), rewards
    with this step's context and weights (`trainers.curriculum_sampling`)."""
    orch = state.orchestration
    run_progress = (step - 1) / max(1, state.total_steps - 1)
    draw = orch.draw(num_prompts, plan, run_progress) if orch is not None and plan is not None else Draw(num_prompts)

    def score(prompts: list[str], completions: list[str], answers: list[str], ids: list[str]):  # noqa: ANN202
        extra: dict[str, Any] = {}  # only what some reward reads: a flat run scores exactly as it always did
        if any(spec.takes_context for spec in state.rewards):
            extra["context"] = reward_context(state, step, plan, ids)
        if plan is not None and plan.weights is not None:
            extra["weights"] = plan.weights
        return score_completions(state.rewards, prompts, completions, answers, **extra)

    return sample_and_score(state, temperature, draw, orch.sampler if orch is not None else None, score)


def _policy_update(state: TrainState, ctx: StepContext, update: Update, metrics: dict[str, Any]) -> None:
    """μ optimizer steps on the step's rollouts, each accumulating the gradient over the micro-batches.

    ``update.fixed_old``: π_old's log-probs were computed before the update (μ > 1); otherwise the first forward is
    π_old itself and fills ``batch.old_logp``. Metrics (loss stats, grad norm, instruments') go to ``metrics``.
    """
    cfg, model, b = state.cfg, state.model, ctx.batch
    params = list(ctx.params.values())
    if not model.training:  # the call walks every submodule: only when needed
        model.train()
    for it in range(cfg.grpo.inner_iterations):
        ctx.iteration = it
        state.optimizer.zero_grad(set_to_none=True)
        logp_all = torch.zeros_like(b.completion_mask, dtype=torch.float32)  # [N, T]
        ent_all = torch.zeros_like(logp_all)  # [N, T]
        loss_pre, stats_rows = 0.0, []
        for k, (rows, w) in enumerate(zip(b.micro_batches, b.micro_weights)):
            # Each prompt once per group, its keys/values shared by the G completions (exact; gradients included).
            logp, ent = grouped_token_logprobs(model, b.input_ids[rows], b.attention_mask[rows], b.prompt_len,
                                               b.group_size, with_entropy=True, share=ctx.share_prompts)  # [n_k, T]
            loss_k, stats = update.loss.micro(logp, rows, on_policy=not update.fixed_old)
            (w * loss_k).backward()
            logp_all[rows], ent_all[rows] = logp.detach(), ent
            if not update.fixed_old:
                b.old_logp[rows] = logp.detach()  # μ = 1: π_old is the policy of this very forward
            loss_pre += w * float(loss_k.detach())  # device sync per micro-batch; the loss is logged anyway
            stats_rows.append((len(rows), stats.as_dict()))
            metrics.update(state.hooks.on_micro_backward(ctx, k))
        ctx.logp, ctx.entropy = logp_all, ent_all
        metrics.update(loss_stats(stats_rows, loss_pre))
        if not _all_ranks_finite(loss_pre, b.input_ids.device):
            # Numerical guard: a NaN/inf loss would poison the adapter and Adam's moments; skip the update.
            state.optimizer.zero_grad(set_to_none=True)
            metrics["skipped"] = 1.0
            state.bad_reason = "the loss was non-finite (NaN or inf); lower optim.lr or check the rewards"
            return
        _average_gradients_across_ranks(params)
        clip = cfg.grpo.grad_clip if cfg.grpo.grad_clip > 0 else math.inf
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
        metrics.update(state.hooks.on_before_optimizer(ctx))
        state.optimizer.step()
        metrics.update(state.hooks.on_after_optimizer(ctx))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_ranks_finite(loss: float, device: torch.device) -> bool:
    """True when the loss is finite on every rank: all ranks must skip a bad update together or none does."""
    if not _distributed():
        return math.isfinite(loss)
    flag = torch.tensor([0.0 if math.isfinite(loss) else 1.0], device=device)
    torch.distributed.all_reduce(flag)  # sync point: one scalar per step
    return float(flag) == 0.0


def _average_gradients_across_ranks(params: list[torch.nn.Parameter]) -> None:
    """Several processes: average the accumulated LoRA gradients (each rank sampled its own prompts).

    Done by hand after the micro-batch loop instead of wrapping the model in DDP: the instruments see each rank's
    own micro-batch gradients in ``on_micro_backward`` (what the gradient-noise estimate needs), the peft model
    stays unwrapped for ``generate`` / ``disable_adapter``, and the adapter is small, so one all-reduce per
    parameter costs little. Every rank then takes the same optimizer step from the same weights.
    """
    if not _distributed():
        return
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)  # sum over ranks (a sync point)
        p.grad.div_(world)
