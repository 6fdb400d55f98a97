"""Which measurements a run takes: `build_instruments` from the switches of `InstrumentationConfig`.

The trainer builds the list once, before step 1 (the run file's schema is declared from it), and hands it to its
`HookRunner`. The provider of the measurements the chosen instruments share comes first (`shared.with_shared`), the
timing summary last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch import nn

from discrepancy.instrumentation.discrepancy_operator import DiscrepancyOperator
from discrepancy.instrumentation.diversity import Diversity
from discrepancy.instrumentation.config import InstrumentationConfig
from discrepancy.instrumentation.grad_noise import GradNoise
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.instrumentation.linearisation import Linearisation
from discrepancy.instrumentation.lora_norms import LoraNorms
from discrepancy.instrumentation.policy_shift import PolicyShift, StartPolicyKL
from discrepancy.instrumentation.rollout_stats import RolloutStats
from discrepancy.instrumentation.shared import SharedMeasurements, needed, theta_needed_between
from discrepancy.instrumentation.timing import InstrumentTime, StepClock, Timed


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
    if cfg.diversity:
        chosen.append(("diversity", Diversity(cfg.diversity_pairs)))
    if cfg.linearisation_every > 0:
        chosen.append(("linearisation", Linearisation(cfg.linearisation_every, cfg.linearisation_probe)))
    need = needed(inst for _, inst in chosen)
    if need:  # the provider of what the chosen instruments share runs before them
        between = theta_needed_between(inst for _, inst in chosen)
        chosen.insert(0, ("shared", SharedMeasurements(need, share, cfg.fold_lora, cfg.discrepancy_groups,
                                                       cfg.discrepancy_every, between)))
    if not cfg.timing:
        return [inst for _, inst in chosen]
    clock = StepClock(timer)
    return [*(Timed(key, inst, clock) for key, inst in chosen), InstrumentTime(clock)]
