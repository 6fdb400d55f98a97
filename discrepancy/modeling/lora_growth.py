"""LoRA rank growth that preserves the function, and the adapter's scale, on an adapter allocated at its largest rank.

The adapter of a growing run is allocated once at the largest rank r_max of its schedule (peft's ``r``); at active
rank r the rows r..r_max of every A and the columns r..r_max of every B are zero. Growth to r' draws rows r..r' of A
at random (peft's own initialisation, uniform in ±1/√d_in) and leaves the matching columns of B at zero, so
ΔW = s·B·A, and with it every logit, is unchanged at the moment of growth: the new terms are exact zeros. The new
directions train from the next step: ∂L/∂B[:, r:r'] = s·g·(A[r:r'] x)ᵀ is non-zero at once, A's new rows follow.

Why allocated at r_max and masked, rather than new, larger tensors at each growth:

- an inactive row of A and column of B that are both zero are a stationary point of every loss (each one's
  gradient is a product with the other), so they stay exactly zero under Adam, weight decay and clipping, and
  Adam's moments there stay zero: the mask costs nothing and the optimizer state is "extended with zeros" by
  construction (`grow_rank` zeroes those moments again, and checks the rows it activates are still zero);
- the parameter objects never change, so the optimizer, the instruments' parameter lists and running states, the
  fused / folded / compiled forwards and any captured CUDA graph stay valid;
- every snapshot has the one shape the run file declared before step 1 (HDF5 SWMR cannot add a dataset later), so
  snapshots before and after a growth compare directly: readers see zeros where the adapter was not yet active.

The scale s = α_t / r_max (peft's α/r with the allocated r) is left unchanged by growth; an α schedule alone moves
it (`set_scale`). Plain LoRA linear layers only (one adapter, no DoRA or other variant).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from discrepancy.errors import DiscrepancyError

#: Run meta keys of a growing adapter (JSON lists of [step, value]); absent: rank and α fixed for the whole run.
RANK_SCHEDULE_META = "lora_rank_schedule"
ALPHA_SCHEDULE_META = "lora_alpha_schedule"


class GrowthError(DiscrepancyError):
    """A rank change the adapter cannot make (a shrink, beyond the allocated rank, a layer that is not plain LoRA)."""


@dataclass(frozen=True)
class StepSchedule:
    """A piecewise-constant schedule: ``points`` = ((step, value), ...) with increasing steps; the value of the last
    point at or before a step holds from that step on (``default`` before the first point)."""

    points: tuple[tuple[int, float], ...]

    @classmethod
    def parse(cls, raw: Any, what: str) -> StepSchedule:
        """From ``[[step, value], ...]`` (a config list or the JSON text a run records); `GrowthError` names ``what``."""
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
            points = tuple((int(s), float(v)) for s, v in (items or []))
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"{what} must be a list of [step, value] pairs, got {raw!r} ({exc})") from None
        steps = [s for s, _ in points]
        if any(s < 0 for s in steps) or steps != sorted(set(steps)):
            raise GrowthError(f"{what}: steps must be ≥ 0 and strictly increasing, got {steps}")
        if not all(math.isfinite(v) for _, v in points):
            raise GrowthError(f"{what}: values must be finite, got {[v for _, v in points]}")
        return cls(points)

    def at(self, step: int, default: float) -> float:
        """The value in force at ``step``."""
        value = default
        for start, v in self.points:
            if start > step:
                break
            value = v
        return value

    def to_json(self) -> str:
        return json.dumps([[s, v] for s, v in self.points])


def lora_layers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(layer, adapter name) of every LoRA layer; `GrowthError` for a layout growth cannot keep exact."""
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict) or not len(lora_a):
            continue
        active = list(getattr(module, "active_adapters", []))
        if len(active) != 1 or getattr(module, "lora_variant", {}).get(active[0]):
            raise GrowthError(f"{name}: rank growth needs one plain LoRA adapter per layer (no DoRA or variant)")
        a, b = lora_a[active[0]], module.lora_B[active[0]]
        if not (isinstance(a, nn.Linear) and isinstance(b, nn.Linear)):
            raise GrowthError(f"{name}: rank growth needs linear LoRA factors, got {type(a).__name__}")
        out.append((module, active[0]))
    if not out:
        raise GrowthError("the model has no LoRA adapter to grow")
    return out


def _factors(module: nn.Module, name: str) -> tuple[nn.Parameter, nn.Parameter]:
    """(A [r_max, d_in], B [d_out, r_max]) of one layer."""
    return module.lora_A[name].weight, module.lora_B[name].weight


def allocated_rank(model: nn.Module) -> int:
    """r_max: the rank the adapter was allocated at (rows of A)."""
    return int(_factors(*lora_layers(model)[0])[0].shape[0])


def active_rank(model: nn.Module) -> int:
    """The largest r such that some layer has a non-zero row r−1 of A or column r−1 of B (0 for a zero adapter)."""
    r = 0
    for module, name in lora_layers(model):
        a, b = _factors(module, name)
        used = (a.detach().abs().sum(1) + b.detach().abs().sum(0)).nonzero()  # [k, 1] non-zero rank indices
        r = max(r, int(used.max()) + 1 if used.numel() else 0)
    return r


@torch.no_grad()
def mask_inactive(model: nn.Module, rank: int) -> None:
    """Zero rows ``rank``.. of every A and columns ``rank``.. of every B (the adapter at active rank ``rank``)."""
    for module, name in lora_layers(model):
        a, b = _factors(module, name)
        a[rank:].zero_()
        b[:, rank:].zero_()


@torch.no_grad()
def grow_rank(model: nn.Module, optimizer: torch.optim.Optimizer | None, old: int, new: int,
              generator: torch.Generator) -> None:
    """Activate ranks ``old``..``new``: rows of A drawn as peft draws them, columns of B zero, the optimizer's
    per-element state of those rows and columns (Adam's exp_avg, exp_avg_sq) zero. The model's function is unchanged.

    Refuses a shrink, a rank beyond the allocation, and rows that are not zero (they were already trained).
    """
    r_max = allocated_rank(model)
    if new < old:
        raise GrowthError(f"LoRA rank {old} → {new}: an adapter only grows (a shrink would change the function)")
    if new > r_max:
        raise GrowthError(f"LoRA rank {new} exceeds the allocated rank {r_max} (lora.rank is the largest rank)")
    for module, name in lora_layers(model):
        a, b = _factors(module, name)
        if a[old:new].any() or b[:, old:new].any():
            raise GrowthError(f"LoRA ranks {old}..{new} are not inactive (non-zero); the adapter was not masked")
        # peft's init of A: kaiming_uniform_(a=√5) = uniform in ±1/√fan_in (fan_in = d_in for every row); drawn on
        # the CPU from the run's own generator so that a growth does not depend on, nor move, the training RNGs
        bound = 1.0 / math.sqrt(a.shape[1])
        rows = torch.empty(new - old, a.shape[1], dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        a[old:new] = rows.to(a.device, a.dtype)
        b[:, old:new] = 0.0
        if optimizer is not None:
            _zero_state(optimizer, a, (slice(old, new),))
            _zero_state(optimizer, b, (slice(None), slice(old, new)))


def _zero_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: tuple[slice, ...]) -> None:
    """Zero the slice ``index`` of every per-element state tensor the optimizer keeps for ``param`` (Adam's moments,
    AMSGrad's max); scalar state (the step count) is per tensor and stays."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value[index] = 0.0


def set_scale(model: nn.Module, scale: float) -> None:
    """Set s in ΔW = s·B·A on every layer (peft's ``scaling``, read on every forward, fold and fused call)."""
    for module, name in lora_layers(model):
        module.scaling[name] = float(scale)


def snapshot_layout(meta: dict[str, Any], step: int) -> tuple[int, float]:
    """(active rank, scale s) of a run's adapter at ``step``, from its meta: a run without growth keys has its
    ``lora_rank`` and α/r throughout."""
    r_max, alpha = int(meta["lora_rank"]), float(meta["lora_alpha"])
    ranks = StepSchedule.parse(meta.get(RANK_SCHEDULE_META, "[]"), RANK_SCHEDULE_META)
    alphas = StepSchedule.parse(meta.get(ALPHA_SCHEDULE_META, "[]"), ALPHA_SCHEDULE_META)
    return int(ranks.at(step, r_max)), alphas.at(step, alpha) / r_max
