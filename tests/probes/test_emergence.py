"""Genuine / mirage / latent classification on synthetic score curves with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discrepancy.probes.emergence import classify_curve, classify_skills, fallback_change_point

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
    # a drop of exact match is not emergence, and neither is a falling log-prob jump: only rises count
    v = classify_curve(STEPS, step_curve(-1, -3, 5), np.zeros(10))
    assert v.kind == "none" and np.isnan(v.logprob_jump) and "no upward change point" in v.evidence


def test_transient_rise_is_not_persistent():
    em = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    assert classify_curve(STEPS, np.linspace(-3, -2, 10), em).kind == "none"
    # a rise seen only at the last snapshot cannot be shown to persist
    last = np.r_[np.zeros(9), 1.0]
    assert classify_curve(STEPS, np.linspace(-3, -2, 10), last).kind == "none"


def test_fallback_ignores_outlier_free_ramps_and_tiny_steps():
    assert fallback_change_point(np.linspace(0, 5, 8)) is None  # steep but smooth
    assert fallback_change_point(np.array([1.0, 1, 1, 1.02, 1.02, 1.02]), min_size=0.1) is None
    cp = fallback_change_point(np.array([1.0, 1, 1, 2, 2, 2]))
    assert cp is not None and cp.index == 3 and cp.size == 1.0
    assert fallback_change_point(np.array([0.0, 1.0, 2.0])) is None  # too few snapshots


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
    assert fallback_change_point(fall).size == pytest.approx(-2.0)  # a change point, but downward …
    assert fallback_change_point(fall, rises_only=True) is None  # … so no emergence candidate
    assert fallback_change_point(-fall, rises_only=True).index == 5


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
