"""How a run makes its steps fast, decided once at setup: the speed plan the step receives.

Four mechanisms make a step fast, each right on some devices and wrong on others: which sampler draws the
completions (`discrepancy.rollout.samplers`; CUDA-graph decode when compiling on a GPU), compiled decoder layers
for the update's training forwards (`modeling.compiled`, CUDA with ``run.compile``), the fused LoRA forward otherwise
(`modeling.lora_fused`), and forwards that encode each prompt once per group (`modeling.logprobs`, CPU). They used to
be decided separately in each module; `plan_speed` decides them together from ``run.compile``, ``run.sampler``, the
instruments' switches and the device policy (`modeling.devices`), and the plan holds what they keep for the run
(the compiled layer function, the graphed decoders), so nothing is cached on the model itself.

Process-wide changes (the allocator tuning of `trainers.allocator`) are only *decided* here: the command line applies
them, since a library call must not change the process it runs in.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from discrepancy.modeling.compiled import CompiledLayers
from discrepancy.modeling.devices import compiling_pays, freed_memory_tuning_pays, prompt_sharing_pays
from discrepancy.modeling.lora_fused import fused_lora
from discrepancy.rollout.graphs import Decoders
from discrepancy.rollout.rollouts import Rollouts
from discrepancy.rollout.samplers import SAMPLERS, check_sampler, resolve_sampler


@dataclass
class SpeedPlan:
    """The speed decisions of one run and the state they keep (see the module docstring)."""

    sampler: str  # a key of rollout.samplers.SAMPLERS: generate | loop | graphs
    compile_layers: bool  # the update's training forwards run through compiled decoder layers
    share_prompts: bool  # the trainer's own forwards encode each prompt once per group
    measure_share_prompts: bool  # so do the instruments' measurement forwards (instruments.shared_prompt_forward)
    fold_lora: bool  # the instruments' measurement forwards fold LoRA into the weights (instruments.fold_lora)
    tune_allocator: bool  # keep freed memory in the process (applied by the command line only)
    compiled: CompiledLayers | None = None  # made at the first compiled update
    decoders: Decoders = field(default_factory=Decoders)  # the graphed sampler's caches and compiled steps

    def sample(self, model: torch.nn.Module, tokenizer: Any, prompts: list[str], **settings: Any) -> Rollouts:
        """G completions per prompt from the plan's sampler (``settings``: group_size, max_new_tokens, ...)."""
        if self.sampler == "graphs":
            settings["decoders"] = self.decoders
        return SAMPLERS[self.sampler](model, tokenizer, prompts, **settings)

    @contextlib.contextmanager
    def training_forwards(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block the update's forwards and backwards run compiled layers when the plan says so (and the
        model has a layer stack), else with the LoRA scale and sum fused into one matmul (inductor fuses them
        itself when compiling). No-grad forwards stay eager either way."""
        compiled = contextlib.nullcontext(False)
        if self.compile_layers:
            if self.compiled is None:
                self.compiled = CompiledLayers(model)
            compiled = self.compiled.active()
        with compiled as active, fused_lora(model, enabled=not active):
            yield


def plan_speed(run: Any, instruments: Any, model: torch.nn.Module, *, warn: bool = True) -> SpeedPlan:
    """The plan for ``model`` (on its device) under the ``run`` and ``instruments`` config sections.

    Raises `DiscrepancyError` (one line) when ``run.sampler`` cannot serve the model; warns (when ``warn``: rank 0)
    that ``run.compile`` does nothing on a device where compiling does not pay.
    """
    device = next(model.parameters()).device
    check_sampler(run.sampler, model)
    compiling = bool(run.compile) and compiling_pays(device)
    if run.compile and not compiling and warn:
        warnings.warn("run.compile applies to CUDA devices only (graph-captured sampling, compiled layers); on the "
                      f"{device.type.upper()} it is ignored", RuntimeWarning, stacklevel=2)
    share = prompt_sharing_pays(device)
    return SpeedPlan(sampler=resolve_sampler(run.sampler, model, compiling), compile_layers=compiling,
                     share_prompts=share, measure_share_prompts=share and bool(instruments.shared_prompt_forward),
                     fold_lora=bool(instruments.fold_lora), tune_allocator=freed_memory_tuning_pays(device))
