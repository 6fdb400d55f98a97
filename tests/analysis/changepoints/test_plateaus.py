"""Plateau detector: a planted plateau ended by a drop, trends that are not plateaus, gaps."""

import numpy as np
import pytest

from discrepancy.analysis.changepoints.metrics import interval_iou
from discrepancy.analysis.changepoints.plateaus import PlateauDetector, detect_plateaus


def _grokking(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    t = np.arange(n)
    pre = 2.0 + 1.5 * np.exp(-t / 60)  # settles (within noise) by ~ step 400
    post = 0.5 + 0.8 * np.exp(-(t - 2000) / 150)
    return np.where(t < 2000, pre, post) + 0.03 * rng.standard_normal(n)


def test_plateau_ended_by_drop():
    y = _grokking(np.random.default_rng(0))
    plats = PlateauDetector().fit(y).predict()
    first = plats[0]
    assert interval_iou((first.start, first.end), (400, 2000)) > 0.85
    assert first.end == pytest.approx(2000, abs=3)
    assert first.ended_by_jump
    assert first.level == pytest.approx(2.0, abs=0.01)
    assert first.drop == pytest.approx(-0.7, abs=0.1)  # 0.5 + 0.8 just after the drop, minus 2.0


def test_trend_is_not_a_plateau_but_constant_is():
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 3, 2000) + 0.03 * rng.standard_normal(2000)
    assert detect_plateaus(ramp) == []
    assert detect_plateaus(np.full(300, 1.5)) == [(0, 300)]


def test_gap_inside_plateau_keeps_input_positions():
    y = _grokking(np.random.default_rng(2))
    y[1000:1100] = np.nan
    plats = detect_plateaus(y)
    assert plats[0][1] == pytest.approx(2000, abs=3)
    assert plats[0][0] < 1000


def test_short_series_has_no_plateau():
    assert detect_plateaus(np.arange(8.0)) == []


@pytest.mark.parametrize("seed", range(5))
def test_noisy_linear_trend_is_not_a_plateau(seed: int):
    # like a demo run's reward_mean: 0.7 → 1.1 over 150 steps, noise 0.12; the whole-run slope is ~10 SE from zero,
    # although over any 20-step window it is below one SE
    rng = np.random.default_rng(seed)
    y = 0.7 + 0.4 * np.arange(150) / 149 + 0.12 * rng.standard_normal(150)
    slope = np.polyfit(np.arange(150), y, 1)[0]
    assert slope / (0.12 * np.sqrt(12 / (150 * (150**2 - 1)))) > 6  # the premise: a significant trend
    assert detect_plateaus(y) == []


@pytest.mark.parametrize("seed", range(5))
def test_flat_then_gradual_drop_keeps_the_flat_part(seed: int):
    # flat at 1.0 for 100 steps, then a steady (not sudden) fall to 0.6: the flat part is a plateau, the fall is not
    rng = np.random.default_rng(seed)
    t = np.arange(150)
    y = np.where(t < 100, 1.0, 1.0 - 0.4 * (t - 100) / 50) + 0.05 * rng.standard_normal(150)
    plats = detect_plateaus(y)
    assert max(interval_iou(p, (0, 100)) for p in plats) > 0.9
    assert not any(s < 130 and e > 110 for s, e in plats)  # nothing in the middle of the fall


def test_prefix_sum_lines_match_polyfit():
    from discrepancy.analysis.changepoints.plateaus import _Lines

    y = np.random.default_rng(4).standard_normal(300).cumsum()
    lines = _Lines(y)
    for a, b in [(0, 300), (17, 40), (250, 263)]:
        coef, sse, *_ = np.polyfit(np.arange(a, b), y[a:b], 1, full=True)
        slope, rss = lines.fit(a, b)
        assert float(slope) == pytest.approx(coef[0], rel=1e-9)
        assert float(rss) == pytest.approx(sse[0], rel=1e-6)
