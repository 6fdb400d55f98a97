"""Series that are 0 by construction and recorded as float round-off are not searched (analysis.selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import analyze_series
from discrepancy.analysis.selection import round_off_series


def _grpo_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Advantages of 8 groups of 8 per step, centred in float32; the policy loss with ρ ≡ 1 is their float32 mean
    (0 in value, round-off in its records); a loss with a planted drop at step 120 beside them."""
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, size=(n, 8, 8)).astype(np.float32)  # [n, groups, completions]
    adv = rewards - rewards.mean(-1, keepdims=True)  # [n, 8, 8] mean-centred per group, float32
    adv = (adv / (rewards.std(-1, keepdims=True) + np.float32(1e-4))).reshape(n, -1)  # [n, 64]
    flat = adv.astype(np.float32)
    policy = -flat.mean(-1)  # [n] −mean(Â·ρ) at ρ = 1: float32 round-off of 0
    policy[120:] += np.float32(3e-8)  # a level change of round-off size: what the analysis used to call a jump
    loss = np.r_[np.full(120, 2.0), np.full(n - 120, 1.0)] + rng.normal(0, 0.05, n)
    return pd.DataFrame({"policy_loss": policy.astype(np.float64), "adv_min": flat.min(-1), "adv_max": flat.max(-1),
                         "loss": loss}, index=pd.Index(np.arange(1, n + 1), name="step"))


def test_round_off_policy_loss_is_not_searched_a_real_one_is():
    frame = _grpo_frame()
    ulps = np.abs(frame["policy_loss"]) / (np.finfo(np.float32).eps * frame[["adv_min", "adv_max"]].abs().max(axis=1))
    assert ulps.max() < 1.0  # the planted series is round-off by the rule's own yardstick (independent check)
    assert list(round_off_series(frame, list(frame.columns))) == ["policy_loss"]
    res = analyze_series(frame)
    assert "policy_loss" not in set(res.jumps["signal"]) and "policy_loss" not in set(res.signals["signal"])
    assert res.constant.get("policy_loss") == 0.0
    note = [n for n in res.notes if "round-off" in n]
    assert len(note) == 1 and "policy_loss" in note[0]
    assert 121 in set(res.jumps.loc[res.jumps["signal"] == "loss", "step"])  # the planted drop: still searched
    # several inner iterations: ρ ≠ 1, the policy loss is far from 0 and must be searched (the values decide)
    real = frame.assign(policy_loss=np.r_[np.full(120, 0.02), np.full(120, -0.01)]
                        + np.random.default_rng(1).normal(0, 0.002, 240))
    assert round_off_series(real, list(real.columns)) == {}
    res = analyze_series(real)
    assert "policy_loss" in set(res.signals["signal"]) and "policy_loss" in set(res.jumps["signal"])


def test_round_off_needs_its_scale():
    """Without the advantages a tiny series is a measurement like any other: searched."""
    frame = _grpo_frame().drop(columns=["adv_min", "adv_max"])
    assert round_off_series(frame, list(frame.columns)) == {}
