"""Each silent-failure rule on a scripted stream: a healthy-looking row every step, the failure planted from step P;
the rule fires exactly when its definition says (P + patience − 1, or the step a second, numpy implementation of the
definition gives) and never before; a healthy stream raises no warning or critical event."""

from __future__ import annotations

import math

import numpy as np
import pytest

from discrepancy.analysis.online import EarlyWarningConfig, Monitor
from discrepancy.analysis.online.monitor import build_rules
from discrepancy.errors import ConfigError

P = 60  # the planted step
STEPS = 120


def healthy_row(rng: np.random.Generator) -> dict[str, float]:
    """One step's values at the levels and noise of the embedded tiny run (its 300-step default run)."""
    return {
        "loss": rng.normal(0.0, 0.05), "policy_loss": rng.normal(0.0, 0.05),
        "reward_mean": rng.normal(0.74, 0.1), "reward_correctness": float(np.clip(rng.normal(0.5, 0.06), 0, 1)),
        "reward_format": float(np.clip(rng.normal(0.96, 0.03), 0, 1)),
        "frac_reward_zero_std": float(rng.uniform(0.0, 0.7)), "kl": abs(rng.normal(0.33, 0.1)),
        "kl_realised": float(rng.lognormal(np.log(1e-3), 1.0)), "entropy": rng.normal(0.73, 0.06),
        "completion_length_mean": rng.normal(10.5, 0.5), "truncated_frac": float(rng.choice([0.0, 0.0, 1 / 64])),
        "grad_norm": abs(rng.normal(0.2, 0.1)) + 1e-3, "ratio_mean": 1.0, "ratio_q01": rng.uniform(0.6, 0.99),
        "ratio_q99": rng.uniform(1.01, 2.5), "div_batch_distinct": float(rng.integers(20, 64)),
        "div_duplicate_frac": rng.uniform(0.0, 0.5),
    }


def stream(plant: dict[str, float] | None = None, *, seed: int = 0, from_step: int = P) -> list[tuple[int, dict]]:
    """Rows for steps 1..STEPS, with ``plant``'s values replacing the healthy ones from ``from_step`` on."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(1, STEPS + 1):
        row = healthy_row(rng)
        if plant and step >= from_step:
            row.update(plant)
        rows.append((step, row))
    return rows


def fired(rows: list[tuple[int, dict]], check: str, cfg: EarlyWarningConfig | None = None) -> list[int]:
    """Steps at which ``check`` fired on ``rows``."""
    mon = Monitor(cfg or EarlyWarningConfig(level_changes=False))
    return [ev.step for ev in mon.replay(rows) if ev.check == check]


PLANTED = [  # (check, planted values, patience)
    ("non_finite", {"loss": math.nan}, 1),
    ("all_truncated", {"truncated_frac": 1.0}, 3),
    ("no_signal", {"frac_reward_zero_std": 1.0}, 10),
    ("zero_gradient", {"grad_norm": 1e-7}, 3),
    ("ratio_out_of_bounds", {"ratio_q99": 40.0}, 1),
    ("ratio_out_of_bounds", {"ratio_q01": 0.01}, 1),
    ("entropy_collapse", {"entropy": 0.01}, 5),
    ("kl_blowup", {"kl": 4.0}, 2),
    ("policy_jump", {"kl_realised": 0.5}, 1),
    ("length_collapse", {"completion_length_mean": 1.0}, 5),
    ("length_explosion", {"completion_length_mean": 60.0}, 5),
    ("one_completion", {"div_batch_distinct": 1.0}, 3),
    ("reward_constant", {"reward_correctness": 0.5}, 10),
    ("mode_collapse", {"div_duplicate_frac": 0.97}, 10),
]


@pytest.mark.parametrize("check,plant,patience", PLANTED, ids=[f"{c}-{next(iter(p))}" for c, p, _ in PLANTED])
def test_rule_fires_at_planted_step_not_before(check: str, plant: dict[str, float], patience: int) -> None:
    for seed in (1, 2, 3):  # held-out noise: the healthy rows were never used to set a threshold
        assert fired(stream(plant, seed=seed), check) == [P + patience - 1]


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_healthy_stream_raises_no_warning(seed: int) -> None:
    mon = Monitor(EarlyWarningConfig())
    events = mon.replay(stream(seed=seed))
    assert [ev.line() for ev in events if ev.severity != "notice"] == []


def test_rule_rearms_after_the_condition_clears() -> None:
    rows = stream({"truncated_frac": 1.0}, seed=4)
    for step, row in rows:
        if P + 10 <= step < P + 20:
            row["truncated_frac"] = 0.0
    assert fired(rows, "all_truncated") == [P + 2, P + 22]


def test_missing_series_never_fire_and_never_break_a_streak() -> None:
    rows = stream({"frac_reward_zero_std": 1.0}, seed=5)
    for step, row in rows:
        row.pop("div_batch_distinct")
        row.pop("div_duplicate_frac")
        if step == P + 4:
            row.pop("frac_reward_zero_std")  # a gap inside the streak: the streak goes on after it
    assert fired(rows, "no_signal") == [P + 10]
    assert fired(rows, "one_completion") == [] and fired(rows, "mode_collapse") == []


def test_a_saturated_reward_is_not_a_constant_reward() -> None:
    rows = stream({"reward_format": 1.0}, seed=8)  # every completion formatted: at the top of its range
    assert fired(rows, "reward_constant") == []


def test_reward_weights_held_by_a_curriculum_phase_are_not_a_constant_reward() -> None:
    """A phase sets the weights and holds them (reward_weight_*): that is the trainer's setting, not a reward
    function that returns a constant; the same value on a reward component still fires."""
    rows, rng = stream(seed=9), np.random.default_rng(9)
    for step, row in rows:  # fusion moves the weight, then a phase (from P) holds it inside that range
        row["reward_weight_correctness"] = float(rng.uniform(1.0, 1.4)) if step < P else 1.188
    assert fired(rows, "reward_constant") == []
    for step, row in rows:
        row["reward_correctness"] = 0.5 if step >= P else row["reward_correctness"]
    assert fired(rows, "reward_constant") == [P + 9]


def test_nan_by_design_never_fires() -> None:
    rows = stream(seed=6)
    for _, row in rows:
        row["kl"] = math.nan  # β = 0: the KL series is NaN from the first step
    assert fired(rows, "non_finite") == []


def test_format_over_correctness_matches_its_definition() -> None:
    """Against a numpy evaluation of the definition: 20-step means, format ≥ 0.95, correctness ≥ drop below the
    best earlier 20-step mean, 5 steps in a row."""
    rng = np.random.default_rng(7)
    corr = np.r_[rng.normal(0.6, 0.03, P - 1), np.linspace(0.6, 0.05, STEPS - P + 1)]
    fmt = np.r_[rng.uniform(0.9, 1.0, P - 1), np.ones(STEPS - P + 1)]
    rows = [(i + 1, {"reward_format": float(fmt[i]), "reward_correctness": float(corr[i])}) for i in range(STEPS)]
    w, drop = 20, EarlyWarningConfig().correctness_drop
    cm = np.convolve(corr, np.ones(w) / w, "valid")  # [STEPS - w + 1], window ending at step i + w
    fm = np.convolve(fmt, np.ones(w) / w, "valid")
    best = np.r_[-np.inf, np.maximum.accumulate(cm)[:-1]]  # best of the earlier windows
    holds = (fm >= 0.95) & (cm <= best - drop)
    first = next(i for i in range(holds.size - 4) if holds[i : i + 5].all())
    assert fired(rows, "format_over_correctness") == [first + 4 + w]


def test_every_rule_is_documented() -> None:
    with open("docs/early-warning.md", encoding="utf-8") as fh:
        doc = fh.read()
    for rule in build_rules(EarlyWarningConfig()):
        assert f"`{rule.name}`" in doc, rule.name


@pytest.mark.parametrize("key,value", [("window", 2), ("threshold", 0), ("kl_factor", 0.5),
                                       ("on_event", "x {nope}"), ("zero_std_frac", 1.5)])
def test_bad_config_is_one_clear_error(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"early_warning.{key}"):
        EarlyWarningConfig(**{key: value})
