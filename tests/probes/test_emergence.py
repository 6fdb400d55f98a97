"""Emergence and forgetting verdicts on synthetic score curves with known, planted structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discrepancy.probes.emergence import KINDS, classify_curve, classify_skills, change_point

STEPS = np.arange(10) * 50  # ten snapshots, every 50 steps


def step_curve(lo, hi, at, n=10):
    return np.where(np.arange(n) >= at, hi, lo).astype(float)


def test_genuine_both_jump_at_the_same_snapshot():
    rng = np.random.default_rng(0)
    lp = step_curve(-3.0, -1.0, 6) + 0.02 * rng.standard_normal(10)
    em = step_curve(0.05, 0.9, 6)
    v = classify_curve(STEPS, lp, em)
    assert (v.kind, v.step, v.logprob_jump_step) == ("genuine", 300.0, 300.0)
    assert v.logprob_jump == pytest.approx(2.0, abs=0.1)


def test_mirage_threshold_of_a_smooth_score():
    """Schaeffer et al.: exact match is a sharp threshold of a per-token probability that rises linearly."""
    rng = np.random.default_rng(1)
    lp = np.linspace(-2.0, -0.2, 10) + 0.01 * rng.standard_normal(10)
    em = (np.exp(lp) ** 8 > 1e-4).astype(float)  # an 8-token answer right only when p^8 clears a threshold
    v = classify_curve(STEPS, lp, em)
    first = int(np.argmax(em))
    assert first == 5 and v.kind == "mirage" and v.step == STEPS[first]  # p^8 > 1e-4 from log p = −1.0 on
    assert np.isnan(v.logprob_jump_step)


def test_latent_logprob_jumps_exact_match_flat():
    lp = step_curve(-4.0, -2.5, 4) + 0.01 * np.sin(np.arange(10))
    em = np.array([0, 0, 0.05, 0, 0, 0.05, 0, 0, 0.05, 0])
    v = classify_curve(STEPS, lp, em)
    assert (v.kind, v.step) == ("latent", 200.0)


def test_gradual_and_none():
    lp = np.linspace(-3, -1, 10)
    assert classify_curve(STEPS, lp, np.linspace(0, 0.9, 10)).kind == "gradual"
    assert classify_curve(STEPS, np.full(10, -2.0), np.zeros(10)).kind == "none"
    # a falling log-prob jump is not emergence; it is a skill getting worse, reported as regression (this used to be
    # "none": drops were never reported, and forgetting is a verdict too)
    v = classify_curve(STEPS, step_curve(-1, -3, 5), np.zeros(10))
    assert v.kind == "regression" and v.logprob_jump == pytest.approx(-2.0) and v.step == 250.0


def test_transient_rise_is_not_persistent():
    em = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    assert classify_curve(STEPS, np.linspace(-3, -2, 10), em).kind == "none"
    # a rise seen only at the last snapshot cannot be shown to persist
    last = np.r_[np.zeros(9), 1.0]
    assert classify_curve(STEPS, np.linspace(-3, -2, 10), last).kind == "none"


def test_fallback_ignores_outlier_free_ramps_and_tiny_steps():
    assert change_point(np.linspace(0, 5, 8)) is None  # steep but smooth
    assert change_point(np.array([1.0, 1, 1, 1.02, 1.02, 1.02]), min_size=0.1) is None
    cp = change_point(np.array([1.0, 1, 1, 2, 2, 2]))
    assert cp is not None and cp.index == 3 and cp.size == 1.0
    assert change_point(np.array([0.0, 1.0, 2.0])) is None  # too few snapshots


def test_long_curves_use_the_jump_detector():
    """Forty snapshots: the analysis jump detector finds the planted level change."""
    rng = np.random.default_rng(3)
    steps = np.arange(40) * 10
    lp = step_curve(-3, -1.5, 25, 40) + 0.05 * rng.standard_normal(40)
    em = step_curve(0.0, 0.8, 25, 40)
    v = classify_curve(steps, lp, em)
    assert (v.kind, v.step, v.logprob_jump_step) == ("genuine", 250.0, 250.0)


def test_classify_skills_from_a_tidy_table():
    rows = []
    for i, s in enumerate(STEPS):
        for skill, lp, em in (("a", -3 + 2 * (i >= 6), 0.9 * (i >= 6)), ("b", -2.0, 0.0)):
            rows += [dict(step=s, suite="x", skill=skill, metric="logprob", value=lp),
                     dict(step=s, suite="x", skill=skill, metric="exact_match", value=em)]
    out = classify_skills(pd.DataFrame(rows)).set_index("skill")
    assert out.loc["a", "kind"] == "genuine" and out.loc["a", "step"] == 300
    assert out.loc["b", "kind"] == "none" and "smooth" in out.loc["b", "evidence"]


def test_fallback_rises_only_ignores_falls():
    fall = step_curve(-1.0, -3.0, 5)
    assert change_point(fall).size == pytest.approx(-2.0)  # a change point, but downward …
    assert change_point(fall, rises_only=True) is None  # … so no emergence candidate
    assert change_point(-fall, rises_only=True).index == 5


def test_logprob_jump_far_from_the_exact_match_rise_is_not_genuine():
    lp = step_curve(-3.0, -1.0, 2)  # log-prob jumps at index 2 …
    em = step_curve(0.0, 1.0, 7)  # … exact match rises sharply five snapshots later
    v = classify_curve(STEPS, lp, em, tol=1)
    assert v.kind == "mirage" and v.step == 350.0 and "5 snapshots away" in v.evidence
    assert classify_curve(STEPS, lp, np.linspace(0, 1, 10) ** 0.5 * (np.arange(10) >= 6), tol=1).kind != "genuine"


def test_without_exact_match_nothing_is_called_flat():
    rows = [{"step": int(s), "suite": "s", "skill": "k", "metric": "logprob", "value": v}
            for s, v in zip(STEPS, step_curve(-3.0, -1.0, 4))]
    out = classify_skills(pd.DataFrame(rows)).iloc[0]
    assert out["kind"] == "latent" and out["step"] == 200.0
    assert np.isnan(out["em_before"]) and np.isnan(out["em_after"]) and np.isnan(out["em_rise_step"])
    assert "not measured" in out["evidence"] and "flat" not in out["evidence"]
    flat = classify_curve(STEPS, np.full(10, -2.0), None)
    assert flat.kind == "none" and "not measured" in flat.evidence


def planted(kind: str, n: int, rng: np.random.Generator, items: int = 50, noise: float = 0.05):
    """(steps, log-prob, exact match) of ``n`` snapshots with the structure of ``kind`` planted at n // 2: log-prob
    with Gaussian noise, exact match a binomial mean over ``items`` items (the mirage: a threshold of the log-prob)."""
    k, t = n // 2, np.arange(n)

    def step(lo: float, hi: float) -> np.ndarray:
        return np.where(t >= k, hi, lo).astype(float)

    lp = {"genuine": step(-3, -1), "mirage": np.linspace(-2, -0.2, n), "latent": step(-4, -2.5),
          "gradual": np.linspace(-3, -1, n), "none": np.full(n, -2.0), "forgetting": step(-1, -3),
          "regression": step(-1, -2.5)}[kind] + noise * rng.standard_normal(n)
    p = {"genuine": step(0.05, 0.9), "latent": np.full(n, 0.02), "gradual": np.linspace(0.0, 0.9, n),
         "none": np.full(n, 0.1), "forgetting": step(0.9, 0.05), "regression": np.full(n, 0.8),
         "mirage": (np.exp(lp) ** 8 > 1e-4).astype(float)}[kind]  # an 8-token answer right when p^8 clears 1e-4
    return np.arange(n) * 10.0, lp, rng.binomial(items, p) / items


@pytest.mark.parametrize("n", [5, 10, 20, 40, 100])
@pytest.mark.parametrize("kind", [k for k in KINDS])
def test_planted_verdicts_at_every_probe_length(kind: str, n: int):
    """Every verdict, from 5 to 100 snapshots, on 10 noisy draws of its planted structure; steps where planted."""
    for seed in range(10):
        steps, lp, em = planted(kind, n, np.random.default_rng(seed))
        v = classify_curve(steps, lp, em)
        assert v.kind == kind, (seed, v.evidence)
        if kind in ("genuine", "latent", "forgetting", "regression"):
            assert v.step == steps[n // 2], (seed, v.evidence)  # the first snapshot after the planted change
        if kind == "none":
            assert np.isnan(v.step)


def test_forgetting_evidence_names_step_size_and_test():
    steps, lp, em = planted("forgetting", 20, np.random.default_rng(0))
    v = classify_curve(steps, lp, em)
    assert v.kind == "forgetting" and v.em_before > 0.8 and v.em_after < 0.15
    assert v.logprob_jump == pytest.approx(-2.0, abs=0.1) and v.logprob_jump_step == 100.0
    assert "p = " in v.evidence and "permutation" in v.evidence and "drop -2" in v.evidence


def test_a_blip_of_exact_match_is_not_forgetting():
    """One snapshot of exact match at 1 between zeros: no skill was there to lose."""
    em = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    assert classify_curve(STEPS, np.full(10, -2.0) + 0.01 * np.sin(np.arange(10)), em).kind == "none"


def test_change_point_level_holds_on_flat_noise():
    """The log-prob test keeps its level: on flat Gaussian noise of 5–100 snapshots it fires in ≤ 5 % of 400 draws
    (permutation test from 8 snapshots, exact Gaussian null below)."""
    for n in (5, 7, 12, 40):
        rng = np.random.default_rng(n)
        fired = sum(change_point(rng.standard_normal(n)) is not None for _ in range(400))
        assert fired <= 0.05 * 400 + 2 * np.sqrt(400 * 0.05 * 0.95), n  # level 5 %, two binomial sd of slack
