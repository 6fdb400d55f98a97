"""Component locking: which LoRA modules train during a phase.

A locked module's LoRA tensors get ``requires_grad = False``: no gradient is computed, so AdamW (which skips
parameters without a gradient, weight decay included) leaves the weights bit-identical and keeps their moments and
step counts as they were; unlocking later resumes them from that state. Every LoRA tensor stays in the optimizer
from the start (it is built before the first lock), so a checkpoint always holds every module's state.

A module is chosen by a part of its name: ``"mlp"``, ``"q_proj"``, ``"layers.1"`` match every LoRA module whose
dotted name contains that part between dots.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from discrepancy.errors import ConfigError

_LORA_TAGS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


def _matches(name: str, part: str) -> bool:
    """Whether ``part`` (one or more dotted components) occurs in the dotted ``name`` on component boundaries."""
    return f".{part}." in f".{name}."


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The adapter's tensors by name (those of peft's LoRA layers)."""
    return {n: p for n, p in model.named_parameters() if any(f".{tag}." in n for tag in _LORA_TAGS)}


def apply_lock(model: torch.nn.Module, train_modules: Sequence[str]) -> list[str]:
    """Let only the LoRA tensors matching ``train_modules`` train (every one when empty); returns the locked names."""
    locked = []
    for name, p in lora_parameters(model).items():
        trains = not train_modules or any(_matches(name, part) for part in train_modules)
        p.requires_grad_(trains)
        if not trains:
            locked.append(name)
    return locked


def check_train_modules(model: torch.nn.Module, target_modules: Sequence[str], phases: Sequence[object]) -> None:
    """Refuse in one line a phase's ``train_modules`` part that names no module LoRA will adapt in ``model``.

    Called on the base model before the adapter exists (and before the cold start): the adapted modules are the
    linear layers named by ``lora.target_modules`` (every linear layer but the output layer for ``all-linear``).
    """
    from transformers.pytorch_utils import Conv1D

    from discrepancy.modeling.lora import ALL_LINEAR

    def _adaptable(mod: torch.nn.Module) -> bool:  # what peft adapts here: linear layers, GPT-2's Conv1D
        return isinstance(mod, (torch.nn.Linear, Conv1D))

    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    adapted = [name for name, mod in model.named_modules() if _adaptable(mod) and mod is not out_layer
               and (ALL_LINEAR in target_modules or name.rsplit(".", 1)[-1] in target_modules)]
    for phase in phases:
        for part in getattr(phase, "train_modules", []):
            if not any(_matches(name, part) for name in adapted):
                short = sorted({n.rsplit(".", 1)[-1] for n in adapted})
                raise ConfigError(f"config key 'curriculum.phases[{getattr(phase, 'name', '?')}].train_modules': "
                                  f"{part!r} names no LoRA module of this model (its adapted layers: "
                                  f"{', '.join(short)}; parts like 'mlp' or 'layers.0' work too)")
