"""Which measurements a run takes: `InstrumentationConfig` (one switch each) and `build_instruments`.

The trainer builds the list once, before step 1 (the run file's schema is declared from it), and hands it to its
`HookRunner`. The provider of the measurements the chosen instruments share comes first (`shared.with_shared`), the
timing summary last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from discrepancy.errors import ConfigError
from discrepancy.instrumentation.discrepancy_operator import DiscrepancyOperator
from discrepancy.instrumentation.grad_noise import GradNoise
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.instrumentation.linearisation import Linearisation
from discrepancy.instrumentation.lora_norms import LoraNorms
from discrepancy.instrumentation.policy_shift import PolicyShift, StartPolicyKL
from discrepancy.instrumentation.rollout_stats import RolloutStats
from discrepancy.instrumentation.shared import SharedMeasurements, needed
from discrepancy.instrumentation.timing import InstrumentTime, StepClock, Timed


def _help(text: str, **kw: Any) -> dict[str, Any]:
    return {"metadata": {"help": text}, **kw}


@dataclass
class InstrumentationConfig:
    """Per-step measurements (SPEC §2–3); each can be switched off."""

    shared_prompt_forward: bool = field(default=True, **_help(
        "measurement forwards encode each prompt once per group (KV cache); false = the trainer's plain forward"))
    fold_lora: bool = field(default=True, **_help(
        "measurement forwards fold float32 LoRA updates into the base weights (restored exactly afterwards)"))
    discrepancy: bool = field(default=True, **_help(
        "D_t, ρ_t, ‖Δθ‖, cos(g, −Δθ), κ_t from one extra no-grad forward after the optimizer step"))
    policy_shift: bool = field(default=True, **_help(
        "realised KL(π_old‖π_new), ΔH observed vs predicted, ratio quantiles (same post-step forward)"))
    kl_start: bool = field(default=True, **_help(
        "KL to the starting policy after each step (one extra forward per step when β = 0)"))
    grad_noise: bool = field(default=True, **_help(
        "gradient noise scale Ŝ, |G|², B_simple from the micro-batches (needs ≥ 2 micro-batches per step)"))
    ewma_beta: float = field(default=0.95, **_help("β of the bias-corrected EWMA of Ŝ and |G|²"))
    lora_norms: bool = field(default=True, **_help("per LoRA module ‖(α/r)BA‖_F and gradient norm"))
    rollout_stats: bool = field(default=True, **_help(
        "advantage statistics, length of correct/incorrect completions, reflective-word rate"))
    correct_reward: str = field(default="correctness", **_help(
        "reward component that marks a completion correct (for the length split)"))
    correct_threshold: float = field(default=0.5, **_help("a completion is correct when that component exceeds this"))
    linearisation_every: int = field(default=0, **_help(
        "linearisation error N_t on a fixed probe batch every K steps (0 = off; ≈ 3 forwards each time)"))
    linearisation_probe: int = field(default=8, **_help("completions in the linearisation probe batch"))
    timing: bool = field(default=True, **_help("record the seconds each instrument takes (time_<name> series)"))

    def __post_init__(self) -> None:
        if not 0.0 < self.ewma_beta < 1.0:
            raise ConfigError(f"config key 'instruments.ewma_beta' must be in (0, 1), got {self.ewma_beta!r}")
        if self.linearisation_every < 0:
            raise ConfigError(
                f"config key 'instruments.linearisation_every' must be ≥ 0, got {self.linearisation_every!r}")
        if self.linearisation_probe < 1:
            raise ConfigError(
                f"config key 'instruments.linearisation_probe' must be ≥ 1, got {self.linearisation_probe!r}")


def build_instruments(cfg: InstrumentationConfig, model: nn.Module, *, share_prompts: bool | None = None,
                      timer: Callable[[], float] = time.perf_counter) -> list[Instrument]:
    """The enabled instruments for `model` (the peft-wrapped model to be trained), in hook order.

    ``share_prompts``: the run's decision for measurement forwards (`instruments.shared_prompt_forward` and the
    device policy; None: the device policy alone). `timer` clocks the `time_<name>` series (wall time by default).
    """
    share = False if not cfg.shared_prompt_forward else share_prompts
    chosen: list[tuple[str, Instrument]] = []
    if cfg.discrepancy:
        chosen.append(("discrepancy", DiscrepancyOperator()))
    if cfg.policy_shift:
        chosen.append(("policy_shift", PolicyShift()))
    if cfg.kl_start:
        chosen.append(("kl_start", StartPolicyKL(share, cfg.fold_lora)))
    if cfg.grad_noise:
        chosen.append(("grad_noise", GradNoise(beta=cfg.ewma_beta)))
    if cfg.lora_norms:
        norms = LoraNorms(model)
        if norms.labels:  # a model without LoRA layers has nothing to report here
            chosen.append(("lora_norms", norms))
    if cfg.rollout_stats:
        chosen.append(("rollout_stats", RolloutStats(cfg.correct_reward, cfg.correct_threshold)))
    if cfg.linearisation_every > 0:
        chosen.append(("linearisation", Linearisation(cfg.linearisation_every, cfg.linearisation_probe)))
    need = needed(inst for _, inst in chosen)
    if need:  # the provider of what the chosen instruments share runs before them
        chosen.insert(0, ("shared", SharedMeasurements(need, share, cfg.fold_lora)))
    if not cfg.timing:
        return [inst for _, inst in chosen]
    clock = StepClock(timer)
    return [*(Timed(key, inst, clock) for key, inst in chosen), InstrumentTime(clock)]
