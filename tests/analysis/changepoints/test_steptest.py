"""The short-series step test: ranks against scipy, p-values against combinatorics and against its stated level,
steps told from trends."""

from unittest import mock

import numpy as np
import pytest
from scipy import stats

from discrepancy.analysis.changepoints import steptest
from discrepancy.analysis.changepoints.jumps import detect_jumps
from discrepancy.analysis.changepoints.steptest import (
    _ranks, abrupt_margin, concentrated, segment_steps, smooth_gap, step_test,
)


def test_ranks_are_scipys_average_ranks():
    rng = np.random.default_rng(0)
    for n in (8, 13, 40):
        y = np.round(rng.standard_normal(n), 1)  # rounding makes ties
        assert np.array_equal(_ranks(y), stats.rankdata(y, method="average"))


def test_p_value_of_a_perfect_split_is_the_share_of_perfect_permutations():
    """Eight points, four low then four high: only the 2·4!·4! orderings that separate the two groups (either way
    round) reach the observed statistic, so the exact p-value is 2·4!·4!/8! = 1/35."""
    y = np.array([0.1, 0.3, 0.2, 0.0, 5.2, 5.0, 5.3, 5.1])
    res = step_test(y)
    assert res.index == 4 and res.method == "permutation"
    assert res.p_value == pytest.approx(1 / 35, abs=0.012)  # sequential Monte Carlo: 20 exceedances, ~22 % error
    assert res.size == pytest.approx(5.0, abs=0.01)
    assert res.significant()


@pytest.mark.parametrize("noise", ["gauss", "t3", "laplace"])
def test_level_holds_for_any_exchangeable_noise(noise: str):
    """No change: the p-value is ≤ 0.05 in at most 5 % of series (two binomial sd of slack over 1000 draws)."""
    rng = np.random.default_rng(1)
    draw = {"gauss": rng.standard_normal, "t3": lambda n: rng.standard_t(3, n), "laplace": lambda n: rng.laplace(size=n)}
    hits = sum(step_test(draw[noise](12)).p_value <= 0.05 for _ in range(1000))
    assert hits <= 50 + 2 * np.sqrt(1000 * 0.05 * 0.95)


def test_gaussian_small_sample_null_is_exact_below_eight_points():
    """Six points: the permutation p-value cannot go below 1/10; the t-scan's Gaussian null gives level 5 %."""
    rng = np.random.default_rng(2)
    p = np.array([step_test(rng.standard_normal(6)).p_value for _ in range(1000)])
    assert step_test(rng.standard_normal(6)).method == "gaussian"
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.02)
    assert np.mean(p <= 0.2) == pytest.approx(0.2, abs=0.04)


def test_trend_is_significant_but_not_a_step():
    ramp = np.linspace(0.0, 5.0, 30) + 0.1 * np.random.default_rng(3).standard_normal(30)
    res = step_test(ramp)
    assert res.p_value < 0.01 and not res.abrupt and not res.significant()
    assert smooth_gap(ramp, res.index) < abrupt_margin(30)


def test_knee_of_a_fast_decay_is_not_concentrated():
    t = np.arange(60.0)
    decay = 1.0 + 2.0 * np.exp(-t / 6.0)  # reaches its floor over ~15 steps: two levels fit, but not at one step
    assert not concentrated(decay, 12, float(decay[12:].mean() - decay[:12].mean()))
    step = np.where(t >= 12, 1.0, 3.0)
    assert concentrated(step, 12, -2.0)


def test_segmentation_finds_two_planted_steps():
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(20), 3 * np.ones(25), np.ones(15)] + 0.3 * rng.standard_normal(60)
    found = segment_steps(y)
    assert [s.index for s in found] == [20, 45]
    assert [round(s.size) for s in found] == [3, -2]
    assert all(s.p_value <= 0.05 for s in found)


def test_noiseless_and_degenerate_input():
    assert step_test(np.full(10, 2.0)) is None  # constant: nothing to test
    assert step_test(np.array([1.0, 2.0, 3.0])) is None  # too short
    res = step_test(np.r_[np.zeros(5), np.ones(5)])
    assert res.index == 5 and res.significant()
    assert step_test(np.r_[np.zeros(5), np.ones(5)], floor=1.0).p_value == 1.0  # no larger than the floor


def _stairs(rng: np.random.Generator, stretch: int, noise: str = "t3") -> tuple[np.ndarray, np.ndarray]:
    """Eight stretches of ``stretch`` points, each 12 noise units above the last (seven jumps the window test finds),
    t(3) or Gaussian noise: (series, planted jump indices)."""
    planted = np.arange(stretch, 8 * stretch, stretch)
    t = np.arange(8 * stretch)
    e = rng.standard_t(3, t.size) if noise == "t3" else rng.standard_normal(t.size)
    return e + 12.0 * (t[:, None] >= planted[None]).sum(axis=1), planted


def test_stretches_share_one_level_per_series() -> None:
    """The levels the stretches between the window test's jumps are tested at add up to at most α per pass
    (Bonferroni over disjoint stretches, each its share m/n), and the whole series gets α when there is no jump."""
    levels: list[tuple[int, float]] = []
    real = steptest.segment_steps

    def spy(y: np.ndarray, **kw: object) -> list:
        levels.append((y.size, float(kw["alpha"])))
        return real(y, **kw)

    y, planted = _stairs(np.random.default_rng(2), 200)
    with mock.patch.object(steptest, "segment_steps", spy):
        steptest.segment_jumps(y, planted.tolist(), alpha=0.05)
        assert len(levels) == 8 and abs(sum(a for _, a in levels) - 0.05) < 1e-12
        assert all(abs(a - 0.05 * m / y.size) < 1e-15 for m, a in levels)
        levels.clear()
        steptest.segment_jumps(y[:300], [], alpha=0.05)
        assert levels == [(300, 0.05)]


def test_series_level_holds_with_many_window_jumps() -> None:
    """Seven 12σ jumps (found by the window test) in t(3) noise, 60 series of 1,600 points: a change reported more
    than 3 points from every planted jump in at most 5 % + 3 SE of the series."""
    rng = np.random.default_rng(5)
    false = 0
    for _ in range(60):
        y, planted = _stairs(rng, 200)
        false += any(np.min(np.abs(i - planted)) > 3 for i in detect_jumps(y))
    assert false <= 3 + 3 * np.sqrt(60 * 0.05 * 0.95), false
