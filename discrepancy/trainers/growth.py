"""Dynamic LoRA: a rank-growth schedule and an α schedule applied between GRPO steps (``[lora.growth]``, off by
default).

``rank_schedule = [[0, 4], [100, 8]]`` trains ranks 0..3 of an adapter allocated at ``lora.rank`` = 8 from step 1
and activates ranks 4..7 just before step 100, preserving the model's function exactly at that moment
(`discrepancy.modeling.lora_growth`: new rows of A random, new columns of B and their Adam moments zero). The value
of an entry holds from its step on, so the update of step t and the snapshot after it see the rank of step t; the
snapshot of step 0 (before the first update) and the cold start see the rank of step 0. ``alpha_schedule =
[[0, 16], [200, 8]]`` sets α the same way; the scale is s = α / ``lora.rank`` (peft's α/r with the allocated rank),
so a growth never changes it and α alone does. Each step records ``lora_active_rank`` and ``lora_scale``; the run's
meta records both schedules, from which readers (`modeling.from_run`) know every snapshot's rank and scale.

This module imports no torch at load: the config checks it holds run whenever a config is read (``--help`` too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from discrepancy.config import helped
from discrepancy.errors import ConfigError

GROWTH_SERIES = {
    "lora_active_rank": "dynamic LoRA: active rank of the adapter at this step (lora.growth.rank_schedule); rows and "
                        "columns of A and B beyond it are zero",
    "lora_scale": "dynamic LoRA: the adapter's scale s = α/lora.rank at this step (ΔW = s·B·A; "
                  "lora.growth.alpha_schedule)",
}


def _pairs(raw: list[list[Any]], key: str) -> list[tuple[int, float]]:
    """[[step, value], ...] checked: pairs, integral steps ≥ 0 strictly increasing, finite values."""
    out = []
    for item in raw:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ConfigError(f"config key '{key}' must be a list of [step, value] pairs, got {raw!r}")
        step, value = item
        if isinstance(step, bool) or float(step) != int(step) or not math.isfinite(float(value)):
            raise ConfigError(f"config key '{key}' must hold [integer step, finite value] pairs, got {item!r}")
        out.append((int(step), float(value)))
    steps = [s for s, _ in out]
    if any(s < 0 for s in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"config key '{key}': steps must be ≥ 0 and strictly increasing, got {steps}")
    return out


@dataclass
class LoraGrowthConfig:
    """Rank growth and α schedule of the LoRA adapter (``LoraConfig.growth``: keys ``lora.growth.<name>``)."""

    rank_schedule: list[list[int]] = field(default_factory=list, **helped(
        "dynamic LoRA: [[step, rank], ...], the active rank from each step on, starting at step 0, never shrinking, "
        "at most lora.rank (the adapter is allocated at lora.rank; growth preserves the function); empty = "
        "lora.rank throughout"))
    alpha_schedule: list[list[float]] = field(default_factory=list, **helped(
        "dynamic LoRA: [[step, α], ...], α from each step on (scale α/lora.rank); empty = lora.alpha throughout"))

    def __post_init__(self) -> None:
        ranks = _pairs(self.rank_schedule, "lora.growth.rank_schedule")
        if ranks and ranks[0][0] != 0:
            raise ConfigError(f"config key 'lora.growth.rank_schedule' must start at step 0 (the rank the adapter "
                              f"starts with), got {self.rank_schedule!r}")
        values = [r for _, r in ranks]
        if any(r < 1 or r != int(r) for r in values):
            raise ConfigError(f"config key 'lora.growth.rank_schedule': ranks must be integers ≥ 1, got {values}")
        shrink = next((i for i in range(1, len(values)) if values[i] < values[i - 1]), None)
        if shrink is not None:
            raise ConfigError(f"config key 'lora.growth.rank_schedule': rank {int(values[shrink - 1])} → "
                              f"{int(values[shrink])} at step {ranks[shrink][0]} is a shrink; the adapter only grows")
        alphas = _pairs(self.alpha_schedule, "lora.growth.alpha_schedule")
        if any(a <= 0 for _, a in alphas):
            raise ConfigError(f"config key 'lora.growth.alpha_schedule': α must be > 0, got {[a for _, a in alphas]}")

    @property
    def enabled(self) -> bool:
        return bool(self.rank_schedule or self.alpha_schedule)

    def check_rank(self, rank: int) -> None:
        """Refuse a schedule rank above the allocated ``lora.rank``."""
        top = max((int(r) for _, r in self.rank_schedule), default=rank)
        if top > rank:
            raise ConfigError(f"config key 'lora.growth.rank_schedule' reaches rank {top} but lora.rank is {rank}: "
                              "lora.rank is the rank the adapter is allocated at, the largest of the schedule")


class LoraGrowth:
    """The schedules at run time: masks the adapter to its starting rank, grows it and sets its scale between
    steps; its state (the active rank) goes into the checkpoint, so a resumed run grows at the same steps."""

    def __init__(self, cfg: LoraGrowthConfig, rank: int, alpha: float, seed: int = 0) -> None:
        from discrepancy.modeling.lora_growth import StepSchedule  # on use: this module is loaded by config checks

        cfg.check_rank(rank)
        self.cfg, self.allocated, self.alpha, self.seed = cfg, int(rank), float(alpha), int(seed)
        self._ranks = StepSchedule.parse(cfg.rank_schedule, "lora.growth.rank_schedule")
        self._alphas = StepSchedule.parse(cfg.alpha_schedule, "lora.growth.alpha_schedule")
        self.rank = self.rank_at(0)

    @classmethod
    def from_config(cls, train_cfg: Any) -> LoraGrowth | None:
        """The growth of a train config (``lora.growth``), or None when neither schedule is set."""
        lora = train_cfg.lora
        growth = getattr(lora, "growth", None)
        if growth is None or not growth.enabled:
            return None
        return cls(growth, lora.rank, lora.alpha, train_cfg.run.seed)

    def rank_at(self, step: int) -> int:
        """The active rank of ``step``'s update and of the snapshot after it."""
        return int(self._ranks.at(step, self.allocated))

    def scale_at(self, step: int) -> float:
        """s = α_step / lora.rank."""
        return self._alphas.at(step, self.alpha) / self.allocated

    def attach(self, model: Any) -> None:
        """Mask a freshly attached adapter to the rank of step 0 and set its scale (before the cold start)."""
        from discrepancy.modeling import lora_growth as ops  # on use: this module is loaded by config checks

        self.rank = self.rank_at(0)
        ops.mask_inactive(model, self.rank)
        ops.set_scale(model, self.scale_at(0))

    def before_step(self, model: Any, optimizer: Any, step: int) -> dict[str, float]:
        """Grow to the rank of ``step`` (function preserved) and set its scale; returns the step's series."""
        import torch

        from discrepancy.modeling import lora_growth as ops

        target = self.rank_at(step)
        if target != self.rank:
            # a generator of its own, seeded by the run's seed and the step: the new rows are the same on every
            # rank and after a resume, and drawing them moves none of the training RNGs
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            ops.grow_rank(model, optimizer, self.rank, target, gen)
            self.rank = target
        scale = self.scale_at(step)
        ops.set_scale(model, scale)
        return {"lora_active_rank": float(self.rank), "lora_scale": scale}

    def meta(self) -> dict[str, str]:
        """What the run's meta records so that readers know each snapshot's rank and scale."""
        from discrepancy.modeling.lora_growth import ALPHA_SCHEDULE_META, RANK_SCHEDULE_META

        return {RANK_SCHEDULE_META: self._ranks.to_json(), ALPHA_SCHEDULE_META: self._alphas.to_json()}

    def state_dict(self) -> dict[str, int]:
        return {"rank": self.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rank = int(state["rank"])

