"""The early-warning switches and thresholds: one dataclass section (``[early_warning]``) of the training config,
free of torch so that a config can be read, checked and printed without the model libraries. What each threshold
means and why it has its default: docs/early-warning.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from discrepancy.config import helped
from discrepancy.errors import ConfigError

# Key series searched for level changes while training (those a run lacks are skipped).
LEVEL_SERIES = ["reward_mean", "reward_correctness", "reward_format", "kl", "entropy", "completion_length_mean",
                "rho", "grad_norm", "clip_ratio_region", "clip_ratio_low", "clip_ratio_high"]


def _check(ok: bool, key: str, requirement: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"config key 'early_warning.{key}' must be {requirement}, got {value!r}")


@dataclass
class EarlyWarningConfig:
    """Live detection while training: silent-failure rules and level changes of key series (docs/early-warning.md)."""

    enabled: bool = field(default=True, **helped(
        "check every step's metrics while training: console line per event, events recorded in the run file"))
    on_event: str = field(default="", **helped(
        'command run for each event, e.g. "notify-send {event} {step}" ({event}, {step}, {severity}, {series}, '
        "{message} are filled in); runs in the background, never stops training"))
    on_event_timeout: float = field(default=10.0, **helped("seconds before an on_event command is killed"))
    dossier_steps: int = field(default=5, **helped(
        "evidence kept for a warning or critical event: every completion of its step and of this many steps after "
        "it goes into the samples table, and LoRA snapshots are taken at the event and at the end (0 = none)"))
    level_changes: bool = field(default=True, **helped("streaming level-change detection on level_series"))
    level_series: list[str] = field(default_factory=lambda: list(LEVEL_SERIES), **helped(
        "series searched for level changes (missing ones are skipped)"))
    window: int = field(default=15, **helped(
        "half-window w of the streaming line test: a level change is seen about w + 3 steps after it"))
    threshold: float = field(default=6.0, **helped(
        "|z| a level change must reach (6: about 1 false alarm per 10,000 steps of noise, benchmarked)"))
    truncated_frac: float = field(default=0.999, **helped(
        "all_truncated fires when truncated_frac ≥ this for truncated_steps steps"))
    truncated_steps: int = field(default=3, **helped("steps in a row for all_truncated"))
    zero_std_frac: float = field(default=0.9, **helped(
        "no_signal fires when frac_reward_zero_std ≥ this (groups whose rewards all tie) for zero_std_steps steps"))
    zero_std_steps: int = field(default=10, **helped("steps in a row for no_signal"))
    grad_zero_factor: float = field(default=1e-3, **helped(
        "zero_gradient fires when grad_norm ≤ this × its recent median (or ≤ 1e-10) for 3 steps"))
    ratio_bound: float = field(default=10.0, **helped(
        "ratio_out_of_bounds fires when a ratio quantile leaves [1/b, b] or the token-mean ratio [1/√b, √b]"))
    entropy_factor: float = field(default=0.1, **helped(
        "entropy_collapse fires when entropy ≤ this × its recent median for 5 steps"))
    kl_factor: float = field(default=5.0, **helped(
        "kl_blowup fires when kl ≥ this × its recent median and ≥ kl_min for 2 steps"))
    kl_min: float = field(default=1.5, **helped("smallest kl (token-mean k3, nats) kl_blowup calls a blow-up"))
    policy_jump_factor: float = field(default=20.0, **helped(
        "policy_jump fires when kl_realised (the step's own KL(π_old‖π_new)) ≥ this × its recent median "
        "and ≥ policy_jump_min"))
    policy_jump_min: float = field(default=0.1, **helped("smallest kl_realised policy_jump calls a jump"))
    length_low: float = field(default=0.25, **helped(
        "length_collapse fires when completion_length_mean ≤ this × its recent median for 5 steps"))
    length_high: float = field(default=4.0, **helped(
        "length_explosion fires when completion_length_mean ≥ this × its recent median for 5 steps"))
    constant_steps: int = field(default=10, **helped(
        "reward_constant fires when a reward component's batch mean repeats exactly for this many steps, inside "
        "the range it took before"))
    format_reward: str = field(default="format", **helped("reward component of the format (format_over_correctness)"))
    correct_reward: str = field(default="correctness", **helped("reward component of correctness"))
    correctness_drop: float = field(default=0.25, **helped(
        "format_over_correctness fires when the format reward's 20-step mean is ≥ 0.95 while correctness's 20-step "
        "mean is this far below its best earlier 20-step mean, for 5 steps"))
    duplicate_frac: float = field(default=0.9, **helped(
        "mode_collapse fires when div_duplicate_frac ≥ this for 10 steps (needs instruments.diversity)"))

    def __post_init__(self) -> None:
        _check(self.on_event_timeout > 0, "on_event_timeout", "> 0", self.on_event_timeout)
        _check(self.window >= 5, "window", "≥ 5", self.window)
        _check(self.dossier_steps >= 0, "dossier_steps", "≥ 0", self.dossier_steps)
        _check(self.threshold > 0, "threshold", "> 0", self.threshold)
        _check(0 < self.truncated_frac <= 1, "truncated_frac", "in (0, 1]", self.truncated_frac)
        _check(0 < self.zero_std_frac <= 1, "zero_std_frac", "in (0, 1]", self.zero_std_frac)
        _check(0 < self.duplicate_frac <= 1, "duplicate_frac", "in (0, 1]", self.duplicate_frac)
        _check(self.constant_steps >= 2, "constant_steps", "≥ 2", self.constant_steps)
        for key in ("truncated_steps", "zero_std_steps"):
            _check(getattr(self, key) >= 1, key, "≥ 1", getattr(self, key))
        for key in ("grad_zero_factor", "entropy_factor", "length_low"):
            _check(0 < getattr(self, key) < 1, key, "in (0, 1)", getattr(self, key))
        for key in ("kl_factor", "policy_jump_factor", "length_high", "ratio_bound"):
            _check(getattr(self, key) > 1, key, "> 1", getattr(self, key))
        for key in ("kl_min", "policy_jump_min", "correctness_drop"):
            _check(getattr(self, key) >= 0, key, "≥ 0", getattr(self, key))
        if self.on_event:
            try:
                self.on_event.format(event="e", step=1, severity="s", series="x", message="m")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"config key 'early_warning.on_event' has an unknown placeholder ({exc}); use "
                                  "{event}, {step}, {severity}, {series}, {message}") from None
