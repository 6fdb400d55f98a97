"""Closed-loop control of a GRPO run from what its instruments measure (`ControlConfig`, off by default).

Each controller turns one measured series into one multiplier applied to the next step, and every decision is
recorded (the ``ctl_*`` series), so a run shows what was done and why:

- **adaptive β** (the adaptive KL controller of PPO for language models, Ziegler et al. 2019 §2.2): with
  e = clip(KL_t / KL_target − 1, −0.2, 0.2), β_{t+1} = β_t · (1 + e / H); the KL penalty grows while the policy
  drifts faster than the target allows and shrinks while it drifts slower. Bounded to [β_min, β_max].
- **temperature coupling**: the sampling temperature is raised by the factor (1 + g) when the entropy falls below a
  floor (completions collapsing) and lowered by (1 − g) when the KL overshoots twice its target; bounded to
  [T_min, T_max] × the scheduled temperature.
- **trust-region step control from ρ_t** (Nocedal & Wright, Numerical Optimization, Algorithm 4.1): after
  ``patience`` consecutive steps with ρ_t < ¼ (the first-order model over-promised) the learning rate is halved;
  after ``patience`` consecutive steps with ρ_t > ¾ (the model is trustworthy) it grows by 1.25, at most to
  ``lr_scale_max`` × the schedule. A NaN ρ (a negligible predicted change) is never acted on and breaks no streak.
- **batch from the noise scale** (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", §2.2: the
  critical batch is about the simple noise scale B_simple = tr Σ / |G|²; below it a larger batch buys almost a
  proportional speed-up, above it almost none): when the smoothed B_simple (``b_simple_ewma``, in prompt groups)
  exceeds the prompt groups of this step, the batch multiplier grows by ``factor``, at most to ``max_scale``; when it
  falls below the batch / ``factor`` (a band, so one decision never undoes the last) it shrinks by ``factor``, never
  below 1. A NaN or non-positive B_simple (the estimate drowned in noise, or fewer than two micro-batches) is never
  acted on. The loop draws max(1, round(grpo.num_prompts × ``ctl_batch_scale``)) prompts: more micro-batches of the
  same size, i.e. more gradient accumulation.

The state is a small dataclass saved in the checkpoint, so a resumed run continues each controller exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from discrepancy.config import helped
from discrepancy.errors import ConfigError

# bits of the ``ctl_action`` series: what was decided at this step for the next one
BETA_UP, BETA_DOWN, LR_DOWN, LR_UP, TEMP_UP, TEMP_DOWN, BATCH_UP, BATCH_DOWN = 1, 2, 4, 8, 16, 32, 64, 128

CONTROL_SERIES = {
    "ctl_beta_scale": "adaptive β: the multiplier of the scheduled β applied at this step (1 = off)",
    "ctl_lr_scale": "trust-region control: the multiplier of the scheduled learning rate applied at this step",
    "ctl_temperature_scale": "temperature coupling: the multiplier of the scheduled temperature applied at this step",
    "ctl_batch_scale": "batch from the noise scale: the multiplier of grpo.num_prompts applied at this step",
    "ctl_action": "decisions taken after this step, a sum of: 1 β up (KL above target), 2 β down (KL below target), "
                  "4 lr halved (ρ < ¼ for `patience` steps), 8 lr ×1.25 (ρ > ¾ for `patience` steps), "
                  "16 temperature up (entropy below its floor), 32 temperature down (KL above twice its target), "
                  "64 batch × factor (B_simple above the batch), 128 batch ÷ factor (B_simple below batch/factor)",
}


@dataclass
class BatchControlConfig:
    """Batch from the gradient-noise scale (McCandlish et al. 2018), the ``[control.batch]`` section; off by default.

    Its keys are ``control.batch.<name>``: ``ControlConfig.batch`` holds it.
    """

    enabled: bool = field(default=False, **helped(
        "grow the prompt groups per step (gradient accumulation) while the smoothed simple noise scale B_simple "
        "(b_simple_ewma, McCandlish et al. 2018) exceeds them; needs instruments.grad_noise and ≥ 2 micro-batches"))
    factor: float = field(default=2.0, **helped(
        "batch control: the multiplier's change per decision (× factor up, ÷ factor down)"))
    max_scale: float = field(default=4.0, **helped(
        "batch control: the largest multiplier of grpo.num_prompts (the budget; ≥ 1)"))

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise ConfigError(f"config key 'control.batch.factor' must be a finite number > 1, got {self.factor!r}")
        if not (math.isfinite(self.max_scale) and self.max_scale >= 1):
            raise ConfigError(f"config key 'control.batch.max_scale' must be a finite number ≥ 1 (1 = never grow), "
                              f"got {self.max_scale!r}")


@dataclass
class ControlState:
    """The controllers' multipliers and streaks; what the checkpoint keeps."""

    beta_scale: float = 1.0
    lr_scale: float = 1.0
    temperature_scale: float = 1.0
    batch_scale: float = 1.0
    low_rho_streak: int = 0
    high_rho_streak: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControlState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Controller:
    """Applies ``ControlConfig`` (``cfg``: its section of the train config) step by step."""

    cfg: Any
    beta_base: float  # grpo.beta: the adaptive β's bounds are relative to it
    state: ControlState = field(default_factory=ControlState)
    num_prompts: int = 1  # grpo.num_prompts: the batch the multiplier scales, when a step does not record its own

    @property
    def batch(self) -> BatchControlConfig:
        """The batch controller's settings (``cfg.batch``; off when the config has no such section)."""
        return getattr(self.cfg, "batch", None) or BatchControlConfig()

    @property
    def active(self) -> bool:
        c = self.cfg
        return c.kl_target > 0 or c.entropy_floor > 0 or c.rho_control or self.batch.enabled

    def applied(self) -> dict[str, float]:
        """The multipliers of this step, as recorded."""
        s = self.state
        return {"ctl_beta_scale": s.beta_scale, "ctl_lr_scale": s.lr_scale,
                "ctl_temperature_scale": s.temperature_scale, "ctl_batch_scale": s.batch_scale}

    def batch_prompts(self) -> int:
        """Prompt groups of the next step: max(1, round(num_prompts × batch multiplier))."""
        return max(1, round(self.num_prompts * self.state.batch_scale))

    def observe(self, metrics: dict[str, float]) -> int:
        """Update the multipliers for the next step from this step's measurements; returns the action bits."""
        return self._beta(metrics.get("kl")) | self._temperature(metrics.get("entropy"), metrics.get("kl")) | \
            self._lr(metrics.get("rho")) | self._batch(metrics.get("b_simple_ewma"), metrics.get("num_prompts"))

    def _beta(self, kl: float | None) -> int:
        c, s = self.cfg, self.state
        if c.kl_target <= 0 or kl is None or not math.isfinite(kl):
            return 0
        err = min(0.2, max(-0.2, kl / c.kl_target - 1.0))
        lo, hi = c.beta_min_ratio, c.beta_max_ratio
        new = min(hi, max(lo, s.beta_scale * (1.0 + err / c.kl_horizon)))
        action = BETA_UP if new > s.beta_scale else BETA_DOWN if new < s.beta_scale else 0
        s.beta_scale = new
        return action

    def _temperature(self, entropy: float | None, kl: float | None) -> int:
        c, s = self.cfg, self.state
        if c.entropy_floor > 0 and entropy is not None and math.isfinite(entropy) and entropy < c.entropy_floor:
            new = min(c.temperature_max_ratio, s.temperature_scale * (1.0 + c.temperature_gain))
            action = TEMP_UP if new > s.temperature_scale else 0
        elif c.kl_target > 0 and kl is not None and math.isfinite(kl) and kl > 2.0 * c.kl_target:
            new = max(c.temperature_min_ratio, s.temperature_scale * (1.0 - c.temperature_gain))
            action = TEMP_DOWN if new < s.temperature_scale else 0
        else:
            return 0
        s.temperature_scale = new
        return action

    def _lr(self, rho: float | None) -> int:
        c, s = self.cfg, self.state
        if not c.rho_control or rho is None or not math.isfinite(rho):
            return 0  # never act on NaN ρ; a NaN neither extends nor breaks a streak
        s.low_rho_streak = s.low_rho_streak + 1 if rho < 0.25 else 0
        s.high_rho_streak = s.high_rho_streak + 1 if rho > 0.75 else 0
        if s.low_rho_streak >= c.rho_patience:
            s.low_rho_streak, s.lr_scale = 0, max(c.lr_scale_min, s.lr_scale * 0.5)
            return LR_DOWN
        if s.high_rho_streak >= c.rho_patience and s.lr_scale < c.lr_scale_max:
            s.high_rho_streak, s.lr_scale = 0, min(c.lr_scale_max, s.lr_scale * 1.25)
            return LR_UP
        return 0

    def _batch(self, b_simple: float | None, prompts: float | None) -> int:
        """McCandlish's rule on the smoothed noise scale: grow while B_simple exceeds this step's prompt groups."""
        c, s = self.batch, self.state
        if not c.enabled or b_simple is None or not math.isfinite(b_simple) or b_simple <= 0:
            return 0  # never act on NaN; a non-positive B_simple means |G|² was not resolved above the noise
        # the groups this step used: recorded by the loop, else what the multiplier implies
        batch = float(prompts) if prompts is not None and math.isfinite(prompts) else float(self.batch_prompts())
        if b_simple > batch and s.batch_scale < c.max_scale:
            s.batch_scale = min(c.max_scale, s.batch_scale * c.factor)
            return BATCH_UP
        if b_simple < batch / c.factor and s.batch_scale > 1.0:
            s.batch_scale = max(1.0, s.batch_scale / c.factor)
            return BATCH_DOWN
        return 0
