"""LoRA through peft: attach, move adapter tensors in and out, and merge temporarily for fast sampling."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from discrepancy.errors import ConfigError
from discrepancy.modeling.lora_fold import folded_lora


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA settings a run records in its meta, enough to rebuild the adapter."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    dropout: float = 0.0


#: The default target: every linear layer but the output layer, as peft resolves it per architecture (Qwen2 and
#: Llama: the seven attention and MLP projections; Phi-3: its fused qkv_proj and gate_up_proj too; GPT-2: its
#: Conv1D layers c_attn, c_proj, c_fc).
ALL_LINEAR = "all-linear"


def _adaptable(module: torch.nn.Module) -> bool:
    """Whether LoRA can adapt ``module``: an `nn.Linear`, or transformers' `Conv1D` (GPT-2's linear layers, stored
    transposed; peft adapts them with ``fan_in_fan_out``)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Distinct last name components of the model's linear layers (what ``target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if _adaptable(mod)})


def check_target_modules(model: torch.nn.Module, target_modules: list[str] | tuple[str, ...]) -> None:
    """Raise ConfigError when a LoRA target names no linear layer of ``model`` (cheap: before any training)."""
    available = linear_layer_names(model)
    targets = list(target_modules)
    if ALL_LINEAR in targets:
        if targets != [ALL_LINEAR]:
            raise ConfigError(f"config key 'lora.target_modules': {ALL_LINEAR!r} stands alone (it means every linear "
                              f"layer but the output layer); got {targets}")
        if len(available) < 2:  # the output layer alone is left out by peft's rule
            raise ConfigError(f"config key 'lora.target_modules': this model has no linear layer to adapt besides "
                              f"its output layer (linear layers: {available})")
        return
    missing = [t for t in targets if t not in available]
    if missing:
        raise ConfigError(f"config key 'lora.target_modules': {missing} match no linear layer of this model; "
                          f"its linear layers are {available}")


def attach_lora(
    model: torch.nn.Module,
    rank: int,
    alpha: float,
    target_modules: list[str] | tuple[str, ...],
    dropout: float = 0.0,
) -> torch.nn.Module:
    """Wrap ``model`` in a peft LoRA adapter (B = 0 at init, so the wrapped model starts equal to the base).

    ``autocast_adapter_dtype=True`` keeps the adapter in fp32 even when the base is bf16.
    """
    from peft import LoraConfig, get_peft_model

    from transformers.pytorch_utils import Conv1D

    check_target_modules(model, target_modules)
    # GPT-2-style Conv1D layers store their weight transposed: peft must be told, or it says so on every attach.
    transposed = any(isinstance(m, Conv1D) for m in model.modules())
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=ALL_LINEAR if list(target_modules) == [ALL_LINEAR] else list(target_modules),
        lora_dropout=dropout,
        fan_in_fan_out=transposed,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors by peft state-dict name (``base_model.model....lora_A.weight``), detached, on CPU, fp32."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in get_peft_model_state_dict(model).items()}


def lora_state_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """`lora_state` as float32 numpy arrays (what a run-file snapshot stores)."""
    return {k: v.numpy() for k, v in lora_state(model).items()}


def load_lora_state(model: torch.nn.Module, state: dict[str, np.ndarray | torch.Tensor]) -> None:
    """Move adapter tensors (by peft state-dict name) into ``model``; a missing/unexpected tensor is an error."""
    from peft import set_peft_model_state_dict

    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
    result = set_peft_model_state_dict(model, tensors)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise KeyError(f"adapter tensors not in the model: {unexpected[:3]}")


@contextmanager
def merged_adapter(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily merge the LoRA weights into the base layers (plain matmuls: ~2× faster generation).

    On exit, even when the body raises, the adapter is unmerged and the base weights are restored bit for bit, so
    training always sees the unmerged adapter on the untouched base. A model without an adapter passes through.
    Plain LoRA linear layers are folded by `lora_fold.folded_lora` (any float dtype, restored from a copy); other
    adapter layouts go through peft's `merge_adapter`/`unmerge_adapter`, also restored from a copy, because in bf16
    (W + ΔW) − ΔW ≠ W after rounding (measured: 54 % of the targeted bf16 base weights changed after 100 cycles).
    """
    if not hasattr(model, "merge_adapter"):
        yield model
        return
    with folded_lora(model, exact=False) as folded:
        if folded:
            yield model
            return
    saved = _merge_targets(model)
    try:
        model.merge_adapter()
        yield model
    finally:
        try:
            model.unmerge_adapter()
        finally:
            with torch.no_grad():
                for param, copy in saved:
                    param.data.copy_(copy)  # exact: overwrite the rounding residue of the subtraction


def _merge_targets(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, bit-exact copy) for every base-layer weight and bias that peft's merge may change."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    saved = []
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            base = module.get_base_layer()
            for name in ("weight", "bias"):  # the bias only changes with lora_bias, but it costs little to keep
                param = getattr(base, name, None)
                if isinstance(param, torch.Tensor):
                    saved.append((param, param.detach().clone()))
    return saved
