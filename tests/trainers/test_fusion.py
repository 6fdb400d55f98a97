"""Reward fusion: the documented rules on hand-made reward histories (closed forms computed here), locks, NaN, bounds,
bad settings and an exact state round-trip."""

from __future__ import annotations

import json
import math

import pytest

from discrepancy.config import field_help
from discrepancy.errors import ConfigError
from discrepancy.trainers.fusion import DWA_EPS, FusionConfig, RewardFusion, bounded_factors


def _feed(fusion: RewardFusion, rows: list[dict[str, float]]) -> None:
    for row in rows:
        fusion.observe(row)


def test_fixed_rule_keeps_the_base_weights() -> None:
    fusion = RewardFusion(FusionConfig(), {"correctness": 1.0, "format": 0.25})
    _feed(fusion, [{"correctness": 0.1, "format": 0.9}] * 5)
    assert fusion.weights() == {"correctness": 1.0, "format": 0.25}


def test_headroom_rule_matches_its_closed_form() -> None:
    # correctness mean over the last 2 steps: (0.4 + 0.6)/2 = 0.5 → headroom 0.5; format (0.8 + 1.0)/2 = 0.9 → 0.1.
    # The step before the window (0.0 / 0.0) must not count. Base (1, 1): f = 2·(0.5, 0.1)/0.6 = (5/3, 1/3).
    fusion = RewardFusion(FusionConfig(rule="headroom", window=2, min_factor=0.1), {"correctness": 1.0, "format": 1.0})
    assert fusion.weights() == {"correctness": 1.0, "format": 1.0}  # no history yet: the base weights
    _feed(fusion, [{"correctness": 0.0, "format": 0.0}, {"correctness": 0.4, "format": 0.8},
                   {"correctness": 0.6, "format": 1.0}])
    w = fusion.weights()
    assert w["correctness"] == pytest.approx(5 / 3) and w["format"] == pytest.approx(1 / 3)
    assert sum(w.values()) == pytest.approx(2.0)  # the base weights' sum is kept


def test_headroom_rule_with_unequal_bases_a_focus_and_a_negative_range() -> None:
    # length ranges over [−1, 0]: mean −0.5 normalises to 0.5 (headroom 0.5); correctness 0.75 → headroom 0.25.
    # γ = 2: raw = (0.0625, 0.25); bases (2, 0.5); c = (2 + 0.5) / (2·0.0625 + 0.5·0.25) = 10.
    fusion = RewardFusion(FusionConfig(rule="headroom", window=1, focus=2.0, min_factor=0.1, max_factor=10.0),
                          {"correctness": 2.0, "length": 0.5})
    fusion.observe({"correctness": 0.75, "length": -0.5})
    w = fusion.weights()
    assert w["correctness"] == pytest.approx(2.0 * 10 * 0.0625) and w["length"] == pytest.approx(0.5 * 10 * 0.25)


def test_bounds_clamp_and_the_rest_carries_the_sum() -> None:
    # raw (0.1, 0.5) on bases (1, 1) gives (1/3, 5/3); min_factor 0.5 clamps the first, the second carries 2 − 0.5.
    fusion = RewardFusion(FusionConfig(rule="headroom", window=1, min_factor=0.5), {"correctness": 1.0, "format": 1.0})
    fusion.observe({"correctness": 0.5, "format": 0.9})
    w = fusion.weights()
    assert w["format"] == pytest.approx(0.5) and w["correctness"] == pytest.approx(1.5)
    # three components, the largest clamped at max 1.5: raw (0.9, 0.05, 0.05) → f1 = 1.5, the rest share 1.5 equally
    f = bounded_factors({"a": 0.9, "b": 0.05, "c": 0.05}, {"a": 1.0, "b": 1.0, "c": 1.0}, 0.1, 1.5)
    assert f == pytest.approx({"a": 1.5, "b": 0.75, "c": 0.75})
    assert bounded_factors({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 3.0}, 0.5, 2.0) == {"a": 1.0, "b": 1.0}


def test_dwa_rule_matches_its_closed_form() -> None:
    # window 2: correctness's headroom goes 0.8 → 0.4 (fast progress), format's 0.5 → 0.5 (none).
    fusion = RewardFusion(FusionConfig(rule="dwa", window=2, temperature=2.0, min_factor=0.01, max_factor=100.0),
                          {"correctness": 1.0, "format": 1.0})
    rows = [{"correctness": 0.2, "format": 0.5}] * 2 + [{"correctness": 0.6, "format": 0.5}] * 2
    _feed(fusion, rows[:3])
    assert fusion.weights() == {"correctness": 1.0, "format": 1.0}  # needs 2 × window means
    fusion.observe(rows[3])
    rho_c, rho_f = (0.4 + DWA_EPS) / (0.8 + DWA_EPS), 1.0
    e_c, e_f = math.exp(rho_c / 2), math.exp(rho_f / 2)
    w = fusion.weights()
    assert w["correctness"] == pytest.approx(2 * e_c / (e_c + e_f)) and w["format"] == pytest.approx(2 * e_f / (e_c + e_f))
    assert w["format"] > w["correctness"]  # the stalled component gets the weight


def test_locked_components_nan_means_and_phase_changes() -> None:
    cfg = FusionConfig(rule="headroom", window=1, min_factor=0.1)
    fusion = RewardFusion(cfg, {"correctness": 1.0, "format": 1.0, "length": 0.5}, locked={"length"})
    fusion.observe({"correctness": 0.5, "format": 0.9, "length": -0.9})
    fusion.observe({"correctness": math.nan, "format": math.inf, "unknown": 1.0})  # ignored: last means stay
    w = fusion.weights()
    assert w["length"] == 0.5  # locked: its base weight
    assert w["correctness"] == pytest.approx(5 / 3) and w["format"] == pytest.approx(1 / 3)
    fusion.set_base({"correctness": 2.0, "format": 0.0, "length": 0.5}, locked=set())  # a new phase
    w = fusion.weights()
    assert w["format"] == 0.0  # weight 0 stays 0
    # length −0.9 on [−1, 0] → 0.1, headroom 0.9; correctness headroom 0.5; bases (2, 0.5): c = 2.5 / 1.45
    assert w["correctness"] == pytest.approx(2 * 0.5 * 2.5 / 1.45) and w["length"] == pytest.approx(0.5 * 0.9 * 2.5 / 1.45)
    with pytest.raises(ConfigError, match="locked reward components"):
        fusion.set_base({"correctness": 1.0}, locked={"format"})


def test_a_user_reward_is_normalised_by_its_observed_range() -> None:
    fusion = RewardFusion(FusionConfig(rule="headroom", window=1, min_factor=0.01), {"mine": 1.0, "correctness": 1.0})
    for v in (10.0, 30.0, 15.0):  # observed range [10, 30]: 15 → 0.25, headroom 0.75
        fusion.observe({"mine": v, "correctness": 0.75})  # headroom 0.25
    w = fusion.weights()
    assert w["mine"] == pytest.approx(2 * 0.75 / 1.0) and w["correctness"] == pytest.approx(2 * 0.25 / 1.0)


def test_state_round_trip_continues_exactly() -> None:
    cfg = FusionConfig(rule="dwa", window=3)
    base = {"correctness": 1.0, "format": 0.25, "mine": 0.5}
    stream = [{"correctness": 0.1 * (i % 7), "format": 0.9 - 0.05 * i, "mine": float(i * i % 5)} for i in range(20)]
    whole = RewardFusion(cfg, base, locked={"format"})
    first = RewardFusion(cfg, base, locked={"format"})
    _feed(whole, stream[:11])
    _feed(first, stream[:11])
    state = json.loads(json.dumps(first.state_dict()))  # plain values: JSON (or torch.save) carries them
    resumed = RewardFusion(cfg, {"correctness": 9.0}, locked=set())  # rebuilt with anything: the state wins
    resumed.load_state_dict(state)
    for row in stream[11:]:
        assert resumed.weights() == whole.weights()
        whole.observe(row)
        resumed.observe(row)
    assert resumed.weights() == whole.weights() and resumed.state_dict() == whole.state_dict()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("rule", "softmax", "fusion.rule"), ("window", 0, "fusion.window"), ("min_factor", 1.5, "fusion.min_factor"),
    ("max_factor", 0.5, "fusion.max_factor"), ("focus", 0.0, "fusion.focus"), ("temperature", -1.0, "temperature"),
])
def test_bad_settings_are_one_line(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        FusionConfig(**{key: value})
    assert "\n" not in str(info.value)


def test_every_field_has_help() -> None:
    assert all(text for text in field_help(FusionConfig).values())


def test_bounded_factors_keep_the_total_when_factors_hit_both_bounds() -> None:
    """One component far below the others and one far above: clamped at both bounds in one go, the factors still
    carry the weights' total (critique 3.625, not 4.0: total 0.45, was 0.4875), within the bounds, in the order of
    the raw values; checked on 200 random draws too."""
    import numpy as np


    base = {"format": 0.25, "length": 0.1, "critique": 0.1}
    f = bounded_factors({"format": 0.02, "length": 0.0, "critique": 1.0}, base, 0.25, 4.0)
    assert f["format"] == f["length"] == 0.25 and abs(f["critique"] - 3.625) < 1e-9
    rng = np.random.default_rng(0)
    for _ in range(200):
        names = [f"c{i}" for i in range(int(rng.integers(2, 6)))]
        base = {k: float(rng.uniform(-1, 1)) for k in names}
        raw = {k: float(rng.choice([0.0, rng.uniform(0, 2)])) for k in names}
        low, high = float(rng.uniform(0.1, 1)), float(rng.uniform(1, 5))
        f = bounded_factors(raw, base, low, high)
        assert all(low - 1e-12 <= v <= high + 1e-12 for v in f.values())
        order = sorted(names, key=lambda k: raw[k])
        assert all(f[a] <= f[b] + 1e-12 for a, b in zip(order, order[1:]))
        carried = sum(abs(base[k]) * f[k] for k in names)
        reachable = sum(abs(base[k]) * (high if raw[k] > 0 else low) for k in names)
        if any(raw.values()) and reachable >= sum(abs(b) for b in base.values()):
            assert abs(carried - sum(abs(b) for b in base.values())) < 1e-9
