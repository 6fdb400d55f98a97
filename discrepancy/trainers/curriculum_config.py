"""Config sections of the curriculum (`[[curriculum.phases]]`) and of prompt sampling (`[sampling]`).

Both are off by default: no phases and uniform sampling leave a run exactly as it was. They are filled like the
rest of `TrainConfig` (Python, TOML, ``--set``); what each field does is in docs/curriculum.md. Checks that need
other sections (reward names, recorded series, LoRA modules, the task's difficulties) are in
`discrepancy.trainers.curriculum.check_curriculum`, run before any training or file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from discrepancy.config import helped
from discrepancy.errors import ConfigError


def _check(ok: bool, key: str, requirement: str, value: object) -> None:
    """Raise ConfigError naming the dotted key when a check fails."""
    if not ok:
        raise ConfigError(f"config key '{key}' must be {requirement}, got {value!r}")


@dataclass
class PhaseConfig:
    """One curriculum phase: how long it lasts, when it ends early, and what it trains with."""

    name: str = field(default="", **helped("the phase's name (shown on figures and in the report)"))
    max_steps: int = field(default=0, **helped(
        "steps after which the phase ends at the latest (0 = no limit: it ends by end_when, or the run ends)"))
    end_when: str = field(default="", **helped(
        "a rule over a window of a recorded series that ends the phase early, e.g. 'reward_format >= 0.9 over 20' "
        "or 'slope(reward_correctness) <= 0.001 over 30' (grammar: docs/curriculum.md); empty = only max_steps"))
    reward_weights: dict[str, float] = field(default_factory=dict, **helped(
        "reward name → weight during this phase (a reward not named keeps its rewards.weights value)"))
    locked_rewards: list[str] = field(default_factory=list, **helped(
        "rewards whose weights stay fixed during this phase (adaptive fusion does not move them)"))
    temperature: list[float] = field(default_factory=list, **helped(
        "sampling temperature: [] = the run's schedule, [t] = constant, [start, end] = cosine over max_steps"))
    beta: list[float] = field(default_factory=list, **helped(
        "KL weight β: [] = the run's schedule, [b] = constant, [start, end] = cosine over max_steps"))
    difficulty: list[int] = field(default_factory=list, **helped(
        "[lo, hi]: only prompts of difficulty lo..hi are drawn (arithmetic: operations; GSM8K: calculator steps); "
        "[] = every prompt"))
    train_modules: list[str] = field(default_factory=list, **helped(
        "LoRA modules that train during this phase, as parts of their names ('mlp', 'q_proj', 'layers.1'); "
        "the others are locked (no gradient, weights bit-identical, optimizer state kept); [] = every module"))

    def __post_init__(self) -> None:
        where = f"curriculum.phases[{self.name or '?'}]"
        _check(bool(self.name.strip()), "curriculum.phases[].name", "a non-empty name", self.name)
        _check(self.max_steps >= 0, f"{where}.max_steps", "≥ 0 (0 = no limit)", self.max_steps)
        for key, values in (("temperature", self.temperature), ("beta", self.beta)):
            _check(len(values) <= 2, f"{where}.{key}", "[] or [value] or [start, end]", values)
            _check(all(math.isfinite(v) for v in values), f"{where}.{key}", "finite numbers", values)
        _check(all(v > 0 for v in self.temperature), f"{where}.temperature", "> 0", self.temperature)
        _check(all(v >= 0 for v in self.beta), f"{where}.beta", "≥ 0", self.beta)
        _check(len(self.temperature) < 2 and len(self.beta) < 2 or self.max_steps > 0, f"{where}.max_steps",
               "> 0 when temperature or beta is a [start, end] range (the range spans max_steps)", self.max_steps)
        d = self.difficulty
        _check(not d or (len(d) == 2 and 0 <= d[0] <= d[1]), f"{where}.difficulty",
               "[] or [lo, hi] with 0 ≤ lo ≤ hi", d)
        _check(all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.reward_weights.values()),
               f"{where}.reward_weights", "numbers", self.reward_weights)
        _check(all(math.isfinite(w) for w in self.reward_weights.values()), f"{where}.reward_weights",
               "finite numbers", self.reward_weights)


@dataclass
class CurriculumConfig:
    """Training in phases (docs/curriculum.md); no phases = one flat phase, as without a curriculum."""

    phases: list[PhaseConfig] = field(default_factory=list, **helped(
        "the phases in order ([[curriculum.phases]] tables); the last one runs until the run ends"))

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        repeated = sorted({n for n in names if names.count(n) > 1})
        _check(not repeated, "curriculum.phases[].name", f"distinct (repeated: {', '.join(repeated)})", names)
        ranges = [(p.name, p.difficulty) for p in self.phases if p.difficulty]
        for i, (a, ra) in enumerate(ranges):
            for b, rb in ranges[i + 1:]:
                _check(ra[1] < rb[0] or rb[1] < ra[0], f"curriculum.phases[{b}].difficulty",
                       f"disjoint from phase {a}'s {ra} (a ramp moves to new material; leave it [] for every prompt)",
                       rb)


@dataclass
class SamplingConfig:
    """Which prompts a step draws, the per-prompt learnability ledger, and dynamic sampling (DAPO)."""

    mode: Literal["uniform", "learnable", "ramp"] = field(default="uniform", **helped(
        "uniform = every prompt alike (as without a ledger); learnable = weight ∝ p(1−p) from the ledger's pass "
        "rate p (unseen prompts count as p = 0.5), mixed with sampling.uniform_mix; ramp = the difficulty cap "
        "rises linearly from the lowest to the highest difficulty of the pool over the phase (or the run)"))
    uniform_mix: float = field(default=0.1, **helped(
        "learnable: share of the probability spread uniformly, so prompts at p = 0 or 1 are still revisited"))
    ledger: bool = field(default=False, **helped(
        "keep the per-prompt ledger (completions sampled and solved per prompt) and record its fractions; set to "
        "true by mode = learnable, which samples from it; rewards read it as their context's history"))
    ledger_arrays: bool = field(default=True, **helped(
        "write the ledger into the run file every step as two arrays (ledger_sampled, ledger_solved: cumulative "
        "completions per prompt id; 8 bytes × prompts per step); false = fractions only, the ledger stays in the "
        "checkpoint"))
    dynamic: bool = field(default=False, **helped(
        "dynamic sampling (DAPO): drop groups whose rewards all tie and refill them from fresh prompts"))
    dynamic_rounds: int = field(default=2, **helped(
        "dynamic sampling: refill rounds per step at most; groups still missing after them are not trained on "
        "(the step trains on fewer groups)"))

    def __post_init__(self) -> None:
        _check(0 <= self.uniform_mix <= 1, "sampling.uniform_mix", "in [0, 1]", self.uniform_mix)
        _check(self.dynamic_rounds >= 0, "sampling.dynamic_rounds", "≥ 0", self.dynamic_rounds)
        # Learnable sampling draws by the ledger's pass rates, so it keeps one. Resolved here, in the config, so the
        # config a run records (and ``--print-config`` shows) says the ledger ran; the trainer reads ``ledger`` alone.
        if self.mode == "learnable":
            self.ledger = True
