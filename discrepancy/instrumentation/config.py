"""The instruments' switches: one dataclass section of the training config, free of torch so that a config can be
read, checked and printed (``--print-config``, a typo's one-line error) without loading the model libraries."""

from __future__ import annotations

from dataclasses import dataclass, field

from discrepancy.config import helped
from discrepancy.errors import ConfigError


@dataclass
class InstrumentationConfig:
    """Per-step measurements (docs/definitions.md §2–3); each can be switched off."""

    shared_prompt_forward: bool = field(default=True, **helped(
        "measurement forwards encode each prompt once per group (KV cache); false = the trainer's plain forward"))
    fold_lora: bool = field(default=True, **helped(
        "measurement forwards fold float32 LoRA updates into the base weights (restored exactly afterwards)"))
    discrepancy: bool = field(default=True, **helped(
        "D_t, ρ_t, ‖Δθ‖, cos(g, −Δθ), κ_t from one extra no-grad forward after the optimizer step"))
    discrepancy_groups: int | str = field(default="micro", **helped(
        "rows of the post-step forward that D_t, ρ_t, the realised KL, ΔH and the ratio quantiles read: \"micro\" "
        "= one micro-batch per step, rotating (1/K of the forward; exact for it, unbiased for the batch over steps), "
        "\"all\" = the whole batch, or a number n = the fewest whole micro-batches holding n prompt groups"))
    discrepancy_every: int = field(default=4, **helped(
        "take the post-step measurements (D_t, ρ_t, realised KL, ΔH, ratio quantiles, KL to the start) on steps "
        "1, 1+n, 1+2n, ... (1 = every step); the steps between record NaN for them, and the measured micro-batch "
        "rotates over the measured steps. 4 keeps the instruments near 5 % of a CPU step of the default recipe "
        "(every step: ≈ 14 %); the rules and controllers that read them judge the measured steps"))
    policy_shift: bool = field(default=True, **helped(
        "realised KL(π_old‖π_new), ΔH observed vs predicted, ratio quantiles (same post-step forward)"))
    kl_start: bool = field(default=True, **helped(
        "KL to the starting policy after each step (one extra forward per step when β = 0)"))
    grad_noise: bool = field(default=True, **helped(
        "gradient noise scale Ŝ, |G|², B_simple from the micro-batches (needs ≥ 2 micro-batches per step)"))
    ewma_beta: float = field(default=0.95, **helped("β of the bias-corrected EWMA of Ŝ and |G|²"))
    lora_norms: bool = field(default=True, **helped("per LoRA module ‖(α/r)BA‖_F and gradient norm"))
    rollout_stats: bool = field(default=True, **helped(
        "advantage statistics, length of correct/incorrect completions, reflective-word rate"))
    correct_reward: str = field(default="correctness", **helped(
        "reward component that marks a completion correct (for the length split)"))
    correct_threshold: float = field(default=0.5, **helped("a completion is correct when that component exceeds this"))
    diversity: bool = field(default=True, **helped(
        "completion diversity within prompt groups: distinct-1/2, duplicate share, sampled edit distance, distinct "
        "completions in the batch (mode collapse; the early-warning rules one_completion and mode_collapse read it; "
        "≈ 1 ms per step of the default recipe, 0.8 %)"))
    diversity_pairs: int = field(default=32, **helped("completion pairs per step for the mean edit distance"))
    linearisation_every: int = field(default=0, **helped(
        "linearisation error N_t on a fixed probe batch every K steps (0 = off; ≈ 3 forwards each time)"))
    linearisation_probe: int = field(default=8, **helped("completions in the linearisation probe batch"))
    timing: bool = field(default=True, **helped("record the seconds each instrument takes (time_<name> series)"))

    def __post_init__(self) -> None:
        try:
            parse_groups(self.discrepancy_groups)
        except ValueError as exc:
            raise ConfigError(f"config key 'instruments.discrepancy_groups' {exc}") from None
        every = self.discrepancy_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"config key 'instruments.discrepancy_every' must be a whole number ≥ 1, got {every!r}")
        if not 0.0 < self.ewma_beta < 1.0:
            raise ConfigError(f"config key 'instruments.ewma_beta' must be in (0, 1), got {self.ewma_beta!r}")
        if self.linearisation_every < 0:
            raise ConfigError(
                f"config key 'instruments.linearisation_every' must be ≥ 0, got {self.linearisation_every!r}")
        if self.diversity_pairs < 1:
            raise ConfigError(f"config key 'instruments.diversity_pairs' must be ≥ 1, got {self.diversity_pairs!r}")
        if self.linearisation_probe < 1:
            raise ConfigError(
                f"config key 'instruments.linearisation_probe' must be ≥ 1, got {self.linearisation_probe!r}")


def parse_groups(groups: int | str) -> int | None:
    """``instruments.discrepancy_groups`` as prompt groups to measure: 0 for one micro-batch ("micro"), None for the
    whole batch ("all"), else the number given (≥ 1). Raises ValueError on anything else."""
    if isinstance(groups, str) and groups in ("micro", "all"):
        return 0 if groups == "micro" else None
    if isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1:
        return groups
    raise ValueError(f'must be "micro", "all" or a number of prompt groups ≥ 1, got {groups!r}')
