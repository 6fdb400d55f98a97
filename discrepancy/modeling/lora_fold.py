"""Fold the LoRA update into the base weights for the length of a no-grad block, and restore them bit for bit.

An unmerged peft LoRA layer runs three matmuls plus a scale and an add per call; on small models those ops and their
Python overhead are a large share of a forward. Folding W ← W + s·B·A and marking the layer as merged (peft's own
`merged_adapters` flag, which makes its forward call the base layer alone) removes them. Sampling
(`merged_adapter`) and the instruments' measurement forwards both use it.

Why not peft's `merge_adapter`/`unmerge_adapter`: they walk every submodule and compute the delta twice (as much as
they save on the tiny recipe, measured in benchmarks/results/instrumentation.md), and the unmerge subtracts the delta
again, which in bf16 does not give W back (W + ΔW − ΔW is rounded twice; the frozen base is also the KL reference).
Here the fold is one in-place update per layer and the restore a copy of the saved base weights.

``exact=True`` (measurements) folds only float32 base and adapter weights: in bf16 the folded forward would differ
from the unmerged one by bf16 rounding, which a measurement must not add. ``exact=False`` (sampling) folds any
floating dtype, rounding W + ΔW once as peft's merge does. Other layouts (DoRA and other variants, several active
adapters, conv layers, a disabled or already merged adapter) are not folded.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _foldable(module: nn.Module, exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, str] | None:
    """(base weight, B, A, scaling, adapter name) of a plain LoRA linear layer (float32 when ``exact``), else None."""
    lora_a = getattr(module, "lora_A", None)
    if not isinstance(lora_a, nn.ModuleDict) or not hasattr(module, "get_base_layer"):
        return None
    active = list(getattr(module, "active_adapters", []))
    if len(active) != 1 or active[0] not in lora_a or getattr(module, "lora_variant", {}).get(active[0]):
        return None
    name = active[0]
    base = module.get_base_layer()
    a, b = lora_a[name], module.lora_B[name]
    if not (isinstance(base, nn.Linear) and isinstance(a, nn.Linear) and isinstance(b, nn.Linear)):
        return None
    if getattr(module, "fan_in_fan_out", False) or getattr(module, "lora_bias", {}).get(name, False):
        return None
    weights = (base.weight, a.weight, b.weight)
    if exact and any(w.dtype != torch.float32 for w in weights):
        return None
    if not all(w.dtype.is_floating_point for w in weights):  # quantised layers are not folded
        return None
    return base.weight, b.weight, a.weight, float(module.scaling[name]), name


_LORA_LAYERS: weakref.WeakKeyDictionary[nn.Module, list[nn.Module]] = weakref.WeakKeyDictionary()


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` that carry LoRA adapters, found once per model.

    Cached because walking every submodule each step cost as much as the fold itself; the adapter layout of a
    model does not change during training (their state and dtypes are checked again on every call).
    """
    if model not in _LORA_LAYERS:
        _LORA_LAYERS[model] = [m for m in model.modules() if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)]
    return _LORA_LAYERS[model]


def fold_plan(model: nn.Module, exact: bool = True) -> list[tuple[nn.Module, tuple]] | None:
    """The LoRA layers to fold, or None when folding does not apply (no LoRA, or any layer not foldable/idle)."""
    plan = []
    for module in _lora_layers(model):
        # A disabled adapter computes the base model (folding would change that), a merged one is already folded.
        if getattr(module, "disable_adapters", False) or getattr(module, "merged", False):
            return None
        parts = _foldable(module, exact)
        if parts is None:
            return None
        plan.append((module, parts))
    return plan or None


@contextmanager
def folded_lora(model: nn.Module, exact: bool = True) -> Iterator[bool]:
    """Within the block the model's LoRA layers run folded (yields True) or, when not applicable, unchanged (False).

    On exit, even on error, every base weight is restored bit for bit from a copy and the merged flag is cleared.
    For no-grad forwards only: the folded weight is not the trained parametrisation.
    """
    plan = fold_plan(model, exact)
    if plan is None:
        yield False
        return
    saved: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module, (weight, b, a, scaling, name) in plan:
                saved.append((module, weight, weight.clone()))
                if weight.dtype == b.dtype == a.dtype:
                    weight.addmm_(b, a, alpha=scaling)  # W [out, in] += s · B [out, r] @ A [r, in]
                else:  # e.g. bf16 base, fp32 adapter: ΔW in the adapter's precision, rounded once into W
                    weight.add_((scaling * (b @ a)).to(weight.dtype))
                module.merged_adapters.append(name)  # peft's forward now calls the base layer alone
        with base_forwards([module for module, _ in plan]):
            yield True
    finally:
        with torch.no_grad():
            for module, weight, copy in saved:
                weight.copy_(copy)  # exact: the fold's rounding never reaches the frozen base (the KL reference)
                module.merged_adapters.clear()


def _merged_forward(self: nn.Module, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    """A merged LoRA layer: its base layer, as peft's forward computes it; peft's forward itself if the adapter
    was disabled meanwhile (peft then unmerges) or the call carries extra arguments."""
    if args or kwargs or self.disable_adapters:
        return type(self).forward(self, x, *args, **kwargs)
    return self.base_layer(x)


@contextmanager
def base_forwards(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block each of these LoRA layers, merged or bypassed, runs `_merged_forward`.

    That is what peft's forward computes for a merged layer, without its per-call argument checks and dispatch: on
    the tiny recipe they were a tenth of the sampling loop's Python time (350 layer calls a step). Any forward an
    instance already had comes back on exit.
    """
    saved = [(module, module.__dict__.get("forward")) for module in modules]
    try:
        for module, _ in saved:
            module.forward = types.MethodType(_merged_forward, module)
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous


@contextmanager
def bypassed_lora(model: nn.Module) -> Iterator[bool]:
    """Within the block the LoRA layers compute the base model (yields True), like peft's `disable_adapter`.

    Marks each layer merged without touching a weight, so peft's forward calls the base layer alone: the same
    computation as under `disable_adapter`, without its walk over every submodule and its model-status report
    (about 9 ms a step on the tiny recipe, 4 % of the step). Any dtype: no weight changes. Yields False and changes
    nothing where `fold_plan` does not apply.
    """
    plan = fold_plan(model, exact=False)
    if plan is None:
        yield False
        return
    try:
        for module, parts in plan:
            module.merged_adapters.append(parts[-1])
        with base_forwards([module for module, _ in plan]):
            yield True
    finally:
        for module, _ in plan:
            module.merged_adapters.clear()


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The base model within the block (the KL reference): `bypassed_lora` where it applies, else peft's
    `disable_adapter`. A model without an adapter passes through."""
    with bypassed_lora(model) as bypassed:
        if bypassed or not hasattr(model, "disable_adapter"):
            yield model
            return
    with model.disable_adapter():
        yield model
