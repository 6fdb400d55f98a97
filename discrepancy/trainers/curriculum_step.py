"""What the curriculum, the ledger, prompt sampling and reward fusion do around one GRPO step.

`Orchestration` is built once per run when any of them is switched on (`Orchestration.wanted`); the step asks it
before sampling (`begin`: the phase's settings, its LoRA locks and reward weights, the rewards' context) and tells it
after measuring (`end`: the ledger counts the step's completions, fusion sees the component means, the curriculum
sees the step's row and may end the phase). Without it the step runs exactly as a flat run always did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from discrepancy.runfile import ArraySpec
from discrepancy.trainers.curriculum import CURRICULUM_SERIES, Curriculum, PhaseSettings
from discrepancy.trainers.curriculum_sampling import DYNAMIC_SERIES, Draw, PromptSampler, ScoredRollouts
from discrepancy.trainers.fusion import RewardFusion
from discrepancy.trainers.ledger import LEDGER_SERIES, Ledger, solved_flags
from discrepancy.trainers.locking import apply_lock
from discrepancy.trainers.rewards import RewardContext, RewardSpec
from discrepancy.trainers.schedules import beta_at, lr_at, temperature_at
from discrepancy.trainers.tasks import Example

NUM_PROMPTS_SERIES = {"num_prompts": "prompts drawn for this step: grpo.num_prompts × the batch controller's "
                                     "ctl_batch_scale, rounded, at least 1"}


@dataclass
class StepPlan:
    """What the coming step trains with: the phase's overrides, the reward weights and the row it records."""

    phase: PhaseSettings | None
    weights: dict[str, float] | None  # None: the specs' own weights
    history: Mapping[str, tuple[int, int]]
    row: dict[str, float] = field(default_factory=dict)  # phase, phase_trigger, reward_weight_<name>


@dataclass(frozen=True)
class StepSettings:
    """What one step runs with: the schedules' values, a phase's overrides, the controllers' multipliers."""

    temperature: float
    beta: float
    lr: float
    num_prompts: int  # grpo.num_prompts × ctl_batch_scale, rounded, at least 1 (at most the task's examples)
    applied: dict[str, float]  # the controllers' multipliers, as recorded


def step_settings(state: Any, step: int, plan: StepPlan | None) -> StepSettings:
    """The schedules at ``step``; a phase that sets temperature or β replaces their schedule; then the multipliers
    the controllers decided after the last step."""
    cfg, g = state.cfg, state.cfg.grpo
    phase = plan.phase if plan is not None else None
    temperature = temperature_at(step, state.total_steps, cfg.schedule.temperature, cfg.schedule.temperature_end)
    beta = beta_at(step, state.total_steps, g.beta, cfg.schedule.beta_end)
    if phase is not None:
        temperature = temperature if phase.temperature is None else phase.temperature
        beta = beta if phase.beta is None else phase.beta
    lr = lr_at(step, state.total_steps, cfg.optim.lr, warmup=cfg.optim.warmup_steps, decay=cfg.optim.decay,
               min_ratio=cfg.optim.min_lr_ratio)
    applied = state.control.applied() if state.control is not None else {}
    num_prompts = min(len(state.examples), max(1, round(g.num_prompts * applied.get("ctl_batch_scale", 1.0))))
    return StepSettings(temperature * applied.get("ctl_temperature_scale", 1.0),
                        beta * applied.get("ctl_beta_scale", 1.0), lr * applied.get("ctl_lr_scale", 1.0),
                        num_prompts, applied)


class Orchestration:
    """The curriculum, ledger, sampler and fusion of one run (see the module docstring)."""

    def __init__(self, cfg: Any, examples: list[Example], rewards: list[RewardSpec]) -> None:
        self.cfg = cfg
        self.curriculum = Curriculum(cfg.curriculum) if cfg.curriculum.phases else None
        self.ledger = Ledger([ex.prompt_id for ex in examples]) if cfg.sampling.ledger else None
        self.sampler = PromptSampler(cfg.sampling, examples, self.ledger)
        self.base = {s.name: float(s.weight) for s in rewards}
        self.fusion = RewardFusion(cfg.fusion, *self._phase_base())
        self.applied_phase = -1  # the phase whose locks and base weights are in force (-1: none yet)
        self.record_weights = cfg.fusion.rule != "fixed" or self.curriculum is not None

    @staticmethod
    def wanted(cfg: Any) -> bool:
        """Whether ``cfg`` switches on anything this class does (otherwise the step runs without it)."""
        s = cfg.sampling
        return bool(cfg.curriculum.phases) or s.mode != "uniform" or s.ledger or s.dynamic or \
            cfg.fusion.rule != "fixed"

    def _phase_base(self) -> tuple[dict[str, float], set[str]]:
        """The current phase's base weights (its own where it sets them) and locked rewards."""
        if self.curriculum is None:
            return dict(self.base), set()
        p = self.curriculum.phase
        return {k: float(p.reward_weights.get(k, w)) for k, w in self.base.items()}, set(p.locked_rewards)

    def series(self, reward_names: list[str]) -> dict[str, str]:
        """Everything the run records from here: declared in the schema before step 1."""
        return orchestration_series(self.cfg, reward_names)

    def arrays(self) -> dict[str, ArraySpec]:
        return self.ledger.array_specs() if self.ledger is not None and self.cfg.sampling.ledger_arrays else {}

    def begin(self, model: Any) -> StepPlan:
        """The coming step's plan; on entering a phase, its LoRA locks and base reward weights take effect."""
        settings = self.curriculum.settings() if self.curriculum is not None else None
        if settings is not None and settings.index != self.applied_phase:
            apply_lock(model, self.curriculum.phase.train_modules)
            self.fusion.set_base(*self._phase_base())
            self.applied_phase = settings.index
        weights = self.fusion.weights()
        row = self.curriculum.step_series() if self.curriculum is not None else {}
        if self.record_weights:
            row.update({f"reward_weight_{k}": v for k, v in weights.items()})
        history = self.ledger.history() if self.ledger is not None else {}
        return StepPlan(settings, weights, history, row)

    def draw(self, num_prompts: int, plan: StepPlan, run_progress: float) -> Draw:
        """How the step draws its prompts under ``plan``; the ramp follows the phase's progress when it has
        max_steps, else ``run_progress`` (the fraction of the run done before this step)."""
        s = plan.phase
        progress = s.progress if s is not None and s.progress is not None else run_progress
        return Draw(num_prompts, s.difficulty if s is not None else None, progress,
                    self.cfg.sampling.dynamic_rounds if self.cfg.sampling.dynamic else -1)

    def end(self, scored: ScoredRollouts, scalars: dict[str, float], arrays: dict[str, np.ndarray]) -> None:
        """After the step: the ledger counts every graded completion, fusion sees the component means, and the
        curriculum sees the step's row (``scalars`` gains the ledger fractions and dynamic-sampling counts first,
        so a phase rule may read them)."""
        scalars.update(scored.dynamic)
        if self.ledger is not None:
            ids = [pid for pid, _, _ in scored.graded]
            solved = solved_flags([c for _, c, _ in scored.graded], [a for _, _, a in scored.graded])
            self.ledger.update(ids, solved)
            scalars.update(self.ledger.fractions())
            if self.cfg.sampling.ledger_arrays:
                arrays.update(self.ledger.arrays())
        self.fusion.observe({k: scalars.get(f"reward_{k}", math.nan) for k in self.base})
        if self.curriculum is not None:
            self.curriculum.observe(scalars)

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict() if self.curriculum is not None else None,
                "ledger": self.ledger.state_dict() if self.ledger is not None else None,
                "fusion": self.fusion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])
        if self.ledger is not None and state.get("ledger"):
            self.ledger.load_state_dict(state["ledger"])
        if state.get("fusion"):
            self.fusion.load_state_dict(state["fusion"])
        self.applied_phase = -1  # the next step applies the restored phase's locks and base weights again


def orchestration_series(cfg: Any, reward_names: list[str]) -> dict[str, str]:
    """The series a run with ``cfg`` records for its curriculum, ledger, dynamic sampling and reward weights."""
    if not Orchestration.wanted(cfg):
        return {}
    out = dict(NUM_PROMPTS_SERIES)
    if cfg.curriculum.phases:
        out.update(CURRICULUM_SERIES)
    if cfg.sampling.ledger:
        out.update(LEDGER_SERIES)
    if cfg.sampling.dynamic:
        out.update(DYNAMIC_SERIES)
    if cfg.fusion.rule != "fixed" or cfg.curriculum.phases:
        out.update({f"reward_weight_{n}": f"weight of reward {n} at this step (curriculum phase, fusion rule "
                                          f"{cfg.fusion.rule})" for n in reward_names})
    return out


def reward_context(state: Any, step: int, plan: StepPlan | None, prompt_ids: list[str]) -> RewardContext:
    """The context a context-taking reward receives for one batch of completions (``prompt_ids`` [N])."""
    phase = plan.phase if plan is not None else None
    return RewardContext(step=step, total_steps=state.total_steps, phase=phase.name if phase else "",
                         phase_index=phase.index if phase else 0, prompt_ids=tuple(prompt_ids),
                         history=plan.history if plan is not None else {}, config=state.cfg)
