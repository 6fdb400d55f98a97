"""Reward fusion with dynamic weights: the weight of each reward component, step by step, from its recent means.

The total reward is r_i = Σ_k w_k(t) R_k(q, o_i). With ``rule = "fixed"`` the weights are the base weights (the
config's, or the curriculum phase's). The adaptive rules move weight toward the components the policy has not
learned yet, from the unweighted component means the trainer observes after each step (docs/rewards.md, "Fusion"):

- ``headroom`` (Dynamic Task Prioritization, Guo et al. 2018, ECCV, with the recent mean as the task's KPI κ):
  raw_k = (1 − m̃_k)^γ, where m̃_k is the mean of the last ``window`` means of component k, normalised to [0, 1] by
  the reward's range. A component near its maximum gets little weight; one far from it gets more.
- ``dwa`` (Dynamic Weight Average, Liu, Johns & Davison 2019, CVPR, with the headroom 1 − m̃ as the loss):
  raw_k = exp(ρ_k / T), ρ_k = (1 − m̃_k[recent window] + ε) / (1 − m̃_k[window before] + ε). A component whose
  headroom shrinks slowly (little recent progress) gets more weight.

Both are normalised so that the unlocked components' weights keep the sum of their base weights (in absolute value)
and each factor w_k / b_k stays in [min_factor, max_factor] (clamped, the rest rescaled; Σ|b_k|·f_k = Σ|b_k| still).
Locked components and components with base weight 0 keep their base weight. Until every unlocked component has
enough history (1 mean for ``headroom``, 2 × window for ``dwa``) the weights are the base weights. NaN means (a step
where a component scored nothing) are ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import optimize

from discrepancy.config import helped
from discrepancy.errors import ConfigError
from discrepancy.trainers.rewards import REWARD_RANGES

#: ε of the ``dwa`` ratio: keeps ρ finite when a component's headroom reaches 0.
DWA_EPS = 1e-3
FUSION_RULES = ("fixed", "headroom", "dwa")


@dataclass
class FusionConfig:
    """How the reward components' weights adapt during a run (docs/rewards.md, "Fusion")."""

    rule: Literal["fixed", "headroom", "dwa"] = field(default="fixed", **helped(
        "fixed = the base weights; headroom = weight ∝ (1 − normalised recent mean)^focus (Guo et al. 2018); dwa = "
        "weight ∝ exp(ratio of recent to earlier headroom / temperature) (Liu et al. 2019); both normalised to the "
        "base weights' sum"))
    window: int = field(default=20, **helped("steps of component means averaged by the adaptive rules"))
    min_factor: float = field(default=0.25, **helped("lowest weight / base weight an adaptive rule may set (≤ 1)"))
    max_factor: float = field(default=4.0, **helped("highest weight / base weight an adaptive rule may set (≥ 1)"))
    focus: float = field(default=1.0, **helped("headroom rule: exponent γ on the headroom (DTP's focusing γ)"))
    temperature: float = field(default=2.0, **helped("dwa rule: softmax temperature T (2 in the DWA paper)"))

    def __post_init__(self) -> None:
        checks = [
            (self.rule in FUSION_RULES, "rule", f"one of {list(FUSION_RULES)}", self.rule),
            (self.window >= 1, "window", "≥ 1", self.window),
            (0 < self.min_factor <= 1, "min_factor", "in (0, 1]", self.min_factor),
            (1 <= self.max_factor < math.inf, "max_factor", "≥ 1 and finite", self.max_factor),
            (0 < self.focus < math.inf, "focus", "> 0 and finite", self.focus),
            (0 < self.temperature < math.inf, "temperature", "> 0 and finite", self.temperature),
        ]
        for ok, key, requirement, value in checks:
            if not ok:
                raise ConfigError(f"config key 'fusion.{key}' must be {requirement}, got {value!r}")


def bounded_factors(raw: dict[str, float], base: dict[str, float], low: float, high: float) -> dict[str, float]:
    """Factors f_k = clip(c · raw_k, low, high) with Σ|b_k| f_k = Σ|b_k|: the weights' total is kept.

    Σ|b_k| clip(c · raw_k, low, high) grows with c (continuous, piecewise linear), from Σ|b_k|·low ≤ the total at
    c = 0, so the scale c is its root (scipy's brentq). Solving over the free components round by round and fixing
    those that leave the bounds could clamp some at ``low`` and others at ``high`` in one round and then miss the
    total (0.4875 for 0.45). All raw values 0 (every component at its maximum) gives factors 1: nothing to prefer;
    when even every preferred component at ``high`` cannot carry the total, they all sit there.
    """
    weight = {k: abs(base[k]) for k in raw}
    total = sum(weight.values())
    preferred = [k for k, r in raw.items() if r > 0]
    if not preferred:
        return {k: 1.0 for k in raw}

    def carried(c: float) -> float:
        return sum(weight[k] * min(high, max(low, c * r)) for k, r in raw.items()) - total

    top = max(high / raw[k] for k in preferred)  # every preferred factor at ``high`` from here on
    if carried(0.0) >= 0.0:
        scale = 0.0
    elif carried(top) <= 0.0:
        scale = top
    else:
        scale = float(optimize.brentq(carried, 0.0, top, xtol=1e-15 * top, rtol=1e-15, maxiter=200))
    return {k: min(high, max(low, scale * r)) for k, r in raw.items()}


class RewardFusion:
    """The weights of one run's reward components: ``weights()`` before a step, ``observe(means)`` after it.

    ``base_weights`` are the config's (or the phase's) weights; ``locked`` names components whose weight stays the
    base weight. Plain-Python ``state_dict`` / ``load_state_dict`` so a resumed run continues the same weights.
    """

    def __init__(self, cfg: FusionConfig, base_weights: dict[str, float], locked: set[str] | frozenset[str] = frozenset()
                 ) -> None:
        self.cfg = cfg
        self._history: dict[str, deque[float]] = {}
        self._seen: dict[str, list[float]] = {}  # name -> [lowest, highest] mean observed (user rewards' range)
        self.set_base(base_weights, locked)

    def set_base(self, base_weights: dict[str, float], locked: set[str] | frozenset[str] = frozenset()) -> None:
        """New base weights and locks (a curriculum phase change); the components' histories are kept."""
        unknown = sorted(set(locked) - set(base_weights))
        if unknown:
            raise ConfigError(f"locked reward components {unknown} are not among the weighted ones "
                              f"{sorted(base_weights)}")
        self.base = {k: float(v) for k, v in base_weights.items()}
        self.locked = set(locked)
        for name in self.base:
            self._history.setdefault(name, deque(maxlen=2 * self.cfg.window))

    def observe(self, component_means: dict[str, float]) -> None:
        """Record one step's unweighted component means; NaN / ±inf and names without a weight are ignored."""
        for name, value in component_means.items():
            if name not in self._history or value is None or not math.isfinite(value):
                continue
            self._history[name].append(float(value))
            seen = self._seen.setdefault(name, [value, value])
            seen[0], seen[1] = min(seen[0], value), max(seen[1], value)

    def _normalised(self, name: str, values: list[float]) -> float:
        """Mean of ``values`` mapped to [0, 1] by the reward's range (built-in) or its observed range (0.5 if flat)."""
        low, high = REWARD_RANGES.get(name, tuple(self._seen.get(name, (0.0, 0.0))))
        mean = sum(values) / len(values)
        return 0.5 if high <= low else min(1.0, max(0.0, (mean - low) / (high - low)))

    def _raw(self, adaptive: list[str]) -> dict[str, float] | None:
        """The rule's unnormalised preference per component; None while some component lacks the history."""
        w, rule = self.cfg.window, self.cfg.rule
        need = 1 if rule == "headroom" else 2 * w
        if any(len(self._history[k]) < need for k in adaptive):
            return None
        raw: dict[str, float] = {}
        for k in adaptive:
            hist = list(self._history[k])
            if rule == "headroom":
                raw[k] = (1.0 - self._normalised(k, hist[-w:])) ** self.cfg.focus
            else:
                recent, before = 1.0 - self._normalised(k, hist[-w:]), 1.0 - self._normalised(k, hist[-2 * w:-w])
                raw[k] = math.exp((recent + DWA_EPS) / (before + DWA_EPS) / self.cfg.temperature)
        return raw

    def weights(self) -> dict[str, float]:
        """This step's weight per component (the base weights under ``fixed``, before enough history, or locked)."""
        out = dict(self.base)
        adaptive = [k for k, b in self.base.items() if k not in self.locked and b != 0.0]
        if self.cfg.rule == "fixed" or not adaptive:
            return out
        raw = self._raw(adaptive)
        if raw is None:
            return out
        factors = bounded_factors(raw, self.base, self.cfg.min_factor, self.cfg.max_factor)
        out.update({k: self.base[k] * factors[k] for k in adaptive})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, dicts, floats): the histories, observed ranges, base weights and locks."""
        return {"rule": self.cfg.rule, "window": self.cfg.window, "base": dict(self.base),
                "locked": sorted(self.locked), "history": {k: list(v) for k, v in self._history.items()},
                "seen": {k: list(v) for k, v in self._seen.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s values (histories longer than this config keeps are cut to the newest)."""
        self.set_base(dict(state["base"]), set(state["locked"]))
        self._history = {k: deque((float(x) for x in v), maxlen=2 * self.cfg.window)
                         for k, v in state["history"].items()}
        for name in self.base:
            self._history.setdefault(name, deque(maxlen=2 * self.cfg.window))
        self._seen = {k: [float(v[0]), float(v[1])] for k, v in state["seen"].items()}
