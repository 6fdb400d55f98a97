"""Per-module size of a LoRA update and of its gradient.

The update a LoRA module adds is ΔW = s·B A (s = α/r, or α/√r with rsLoRA; peft stores it as `scaling`). Only ΔW
is gauge-invariant (B A = (B M)(M⁻¹ A) for any invertible M), so A or B alone says nothing. Its Frobenius norm is
computed through r×r products, ‖BA‖_F² = tr((BᵀB)(AAᵀ)), so the d_out×d_in matrix is never formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from discrepancy.instrumentation.hooks import Instrument, StepContext
from discrepancy.instrumentation.shared import last_micro_batch
from discrepancy.runfile import ArraySpec



@dataclass(frozen=True)
class LoraModule:
    """One adapted layer: its short label, the two factors and the scale s of ΔW = s B A."""

    label: str
    lora_a: nn.Parameter  # [r, d_in]
    lora_b: nn.Parameter  # [d_out, r]
    scales: dict[str, float]  # peft's ``scaling`` of the layer, read at each use: an α schedule changes it
    adapter: str = "default"

    @property
    def scaling(self) -> float:
        return float(self.scales[self.adapter])


def lora_delta_norm(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> float:
    """‖s·B A‖_F via r×r Gram matrices, in float64 (no d_out×d_in product is formed)."""
    a = lora_a.detach().double()  # [r, d_in]
    bm = lora_b.detach().double()  # [d_out, r]
    gram_b = bm.T @ bm  # [r, r]
    gram_a = a @ a.T  # [r, r]
    sq = float((gram_b * gram_a).sum())  # tr(BᵀB · AAᵀ); both symmetric, so an elementwise sum
    # Numerical guard: rounding can leave a tiny negative value when ΔW ≈ 0.
    return abs(scaling) * math.sqrt(max(sq, 0.0))


def lora_delta_norms(modules: list[LoraModule]) -> np.ndarray:
    """`lora_delta_norm` of every module at once, in float64: modules of equal shapes are stacked, so a model's
    hundreds of adapted layers cost a few batched products and one copy to the host instead of one sync each."""
    out = np.full(len(modules), np.nan)
    for rows in _same_shapes([(m.lora_a.shape, m.lora_b.shape) for m in modules]).values():
        a = torch.stack([modules[i].lora_a.detach() for i in rows]).double()  # [k, r, d_in]
        bm = torch.stack([modules[i].lora_b.detach() for i in rows]).double()  # [k, d_out, r]
        sq = (torch.bmm(bm.transpose(1, 2), bm) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))  # [k]
        scale = np.array([abs(modules[i].scaling) for i in rows])
        out[rows] = scale * np.sqrt(np.maximum(sq.cpu().numpy(), 0.0))  # guard: rounding below 0 when ΔW ≈ 0
    return out


def lora_grad_norms(modules: list[LoraModule]) -> np.ndarray:
    """√(‖∇A‖² + ‖∇B‖²) per module in float64, NaN where no gradient has been computed; batched by shape."""
    out = np.full(len(modules), np.nan)
    have = [i for i, m in enumerate(modules) if m.lora_a.grad is not None and m.lora_b.grad is not None]
    keys = [(modules[i].lora_a.shape, modules[i].lora_b.shape) for i in have]
    for rows in _same_shapes(keys).values():
        idx = [have[j] for j in rows]
        sq = sum(torch.stack([getattr(modules[i], f).grad.detach() for i in idx]).double().pow(2).flatten(1).sum(1)
                 for f in ("lora_a", "lora_b"))  # [k]
        out[idx] = np.sqrt(sq.cpu().numpy())
    return out


def _same_shapes(keys: list[tuple]) -> dict[tuple, list[int]]:
    """Positions of equal keys (shape pairs), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def find_lora_modules(model: nn.Module, adapter: str = "default") -> list[LoraModule]:
    """Every peft LoRA layer of `model` with adapter `adapter`, labelled by its path without peft's prefixes."""
    found = []
    for name, mod in model.named_modules():
        lora_a = getattr(mod, "lora_A", None)
        lora_b = getattr(mod, "lora_B", None)
        if not isinstance(lora_a, nn.ModuleDict) or adapter not in lora_a:
            continue
        found.append(
            LoraModule(
                label=short_label(name),
                lora_a=lora_a[adapter].weight,
                lora_b=lora_b[adapter].weight,
                scales=mod.scaling,
                adapter=adapter,
            )
        )
    return found


def short_label(name: str) -> str:
    """`base_model.model.model.layers.0.self_attn.q_proj` → `layers.0.self_attn.q_proj`."""
    for prefix in ("base_model.model.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


class LoraNorms(Instrument):
    """Per adapted module, every step: ‖(α/r)BA‖_F at θ_{t+1} and the unclipped gradient norm at θ_t."""

    def __init__(self, model: nn.Module, adapter: str = "default") -> None:
        self._modules = find_lora_modules(model, adapter)
        self._grad = np.full(len(self._modules), np.nan)

    @property
    def labels(self) -> list[str]:
        """Column labels: module paths without peft's prefixes."""
        return [m.label for m in self._modules]

    def series(self) -> dict[str, str]:
        """One scalar summary; the per-module values are arrays."""
        return {"lora_delta_norm_total": "√Σ_modules ‖(α/r)BA‖_F²: size of the whole adapter update"}

    def arrays(self) -> dict[str, ArraySpec]:
        """Per-module update norm and gradient norm."""
        return {
            "lora_delta_norm": ArraySpec(self.labels, "‖(α/r)BA‖_F per LoRA module at θ_{t+1}"),
            "lora_grad_norm": ArraySpec(self.labels, "‖(∇A, ∇B)‖ per LoRA module, before clipping"),
        }

    def on_micro_backward(self, ctx: StepContext, k: int) -> None:
        """At the last micro-batch `.grad` is the full, still unclipped gradient."""
        if last_micro_batch(ctx, k):
            self._grad = lora_grad_norms(self._modules)

    def on_after_optimizer(self, ctx: StepContext) -> dict[str, float | np.ndarray]:
        """Norms of the updated adapter."""
        norms = lora_delta_norms(self._modules)
        grads, self._grad = self._grad, np.full(len(self._modules), np.nan)
        return {
            "lora_delta_norm": norms,
            "lora_grad_norm": grads,
            "lora_delta_norm_total": float(np.sqrt((norms**2).sum())),
        }
