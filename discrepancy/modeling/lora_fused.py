"""peft's LoRA linear forward with the adapter's scale and sum fused into one ``addmm``, for the length of a block.

peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``: besides the three matmuls, the scale and the sum
are two more passes over the output (and two more in the backward), each with its own temporary. Here the last
matmul takes both: ``addmm(base(x), lora_A(dropout(x)), Bᵀ, alpha=scaling)``. The same result as peft's to float
rounding (the scale is applied to the product before the sum rather than after it), the same dropout draws in the same
order, fewer passes over memory. Side by side per layer, forward and backward (``benchmarks/results/lora_fused.md``):
faster than peft's forward from the tiny recipe's 96 × 256 layers to a 896 × 4864 one.

Small fp32 layers (at most `FOLD_MAX_ELEMENTS` weights, no active dropout) go further: ``linear(x, W + s·B·A)``, the
adapter folded into a per-call copy of the weight, its gradient reaching A and B through the fold. That trades the
adapter's thin matmuls (inner size r) and their passes over the activations for one more full matmul in the backward
(the weight's gradient): cheaper while the weight is small, dearer once it is large (the same file, two runs: 10–20 %
faster than the fused form for the tiny recipe's layers, either way within noise at 256 × 1024, 20–30 % slower at
512 × 1408).

Written by hand because peft has no fused path for plain LoRA. Only what is plainly LoRA is fused: one active
adapter without a variant (DoRA and others), peft's own `Linear` layer (not a subclass with its own forward) over an
`nn.Linear` base, no LoRA bias, no fan-in/fan-out transpose, and at call time input, base and adapter of one dtype (a
bf16 base with an fp32 adapter keeps peft's casts), adapter neither merged nor disabled, no per-call adapter names,
and no forward hook that calling ``lora_B`` as a module would have run. Anything else runs peft's own forward.

While the block lasts the layers carry a bound method in their instance dict: save the model (``torch.save`` of the
module, not its state dict) or copy it outside the block.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from discrepancy.modeling.lora_fold import _lora_layers


#: Weight elements up to which a layer runs folded (fp32 only: in bf16 the fold would round the adapter's update into
#: the weight's precision). The crossover measured on the 2-core machine lies between 2^16 and 2^18.
FOLD_MAX_ELEMENTS = 2**16


def _plain_lora(module: nn.Module) -> bool:
    """Whether ``module`` is a plain LoRA linear layer that `_fused_forward` computes exactly as peft does."""
    from peft.tuners.lora.layer import Linear

    if type(module).forward is not Linear.forward:
        return False
    active = list(getattr(module, "active_adapters", []))
    if len(active) != 1 or active[0] not in module.lora_A or getattr(module, "lora_variant", {}).get(active[0]):
        return False
    name = active[0]
    if getattr(module, "fan_in_fan_out", False) or getattr(module, "lora_bias", {}).get(name, False):
        return False
    parts = (module.get_base_layer(), module.lora_A[name], module.lora_B[name])
    return all(type(p) is nn.Linear for p in parts) and parts[1].bias is None and parts[2].bias is None


def _fused_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``base(x) + scaling · B(A(dropout(x)))`` as one ``addmm`` after the base layer; peft's forward otherwise."""
    name = self.active_adapters[0]
    base, a, up = self.get_base_layer(), self.lora_A[name].weight, self.lora_B[name]
    if (args or kwargs or self.merged or self.disable_adapters or _has_hooks(up)
            or not x.dtype == base.weight.dtype == a.dtype == up.weight.dtype):
        return type(self).forward(self, x, *args, **kwargs)
    b, down_layer, dropout = up.weight, self.lora_A[name], self.lora_dropout[name]
    if (base.weight.numel() <= FOLD_MAX_ELEMENTS and base.weight.dtype == torch.float32
            and _no_dropout(dropout) and not (_has_hooks(base) or _has_hooks(down_layer))):
        return F.linear(x, torch.addmm(base.weight, b, a, alpha=self.scaling[name]), base.bias)
    out = base(x)  # [..., out]; the base layer and lora_A run as modules, so that their hooks still run
    shape = out.shape
    down = down_layer(dropout(x))  # [..., r]
    return torch.addmm(out.reshape(-1, shape[-1]), down.reshape(-1, down.shape[-1]), b.t(),
                       alpha=self.scaling[name]).view(shape)


def _no_dropout(dropout: nn.Module) -> bool:
    """Whether the adapter's dropout leaves its input unchanged (folding has no place for a dropout mask)."""
    return (isinstance(dropout, nn.Identity) or not dropout.training
            or (isinstance(dropout, nn.Dropout) and dropout.p == 0))


def _has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` would run a hook (its own or a global one, forward or backward) that a path which
    does not call it as a module would skip."""
    from torch.nn.modules import module as torch_module

    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    shared = (torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks,
              torch_module._global_backward_hooks, torch_module._global_backward_pre_hooks)
    return any(bool(h) for h in (*own, *shared))


@contextmanager
def fused_lora(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block the model's plain LoRA linear layers run `_fused_forward`; yields how many do.

    Their own forwards come back on exit, even after an error.
    """
    layers = [m for m in _lora_layers(model) if _plain_lora(m)] if enabled else []
    swapped = [m for m in layers if "forward" not in m.__dict__]  # a forward already swapped in is left alone
    try:
        for module in swapped:
            module.forward = types.MethodType(_fused_forward, module)
        yield len(swapped)
    finally:
        for module in swapped:
            module.__dict__.pop("forward", None)
