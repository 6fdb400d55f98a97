"""Robust noise scale and the TCPD-style scores, against closed forms and hand-computed cases."""

import numpy as np
import pytest

from discrepancy.analysis.changepoints.metrics import (
    covering, f1_margin, false_alarm_rate, interval_iou, mask_iou,
)
from discrepancy.analysis.changepoints.noise import blockwise_mad_scale, robust_sigma


def test_robust_sigma_matches_gaussian_sigma_despite_jumps_and_spikes():
    rng = np.random.default_rng(0)
    y = 0.3 * rng.standard_normal(20_000)
    y[5000:] += 4.0  # a jump adds one large difference: the median ignores it
    y[::997] += 50.0  # sparse spikes
    assert robust_sigma(y) == pytest.approx(0.3, rel=0.04)


def test_robust_sigma_degenerate_inputs():
    assert robust_sigma(np.array([1.0, np.nan])) == 0.0
    assert robust_sigma(np.full(100, 2.5)) == 0.0


def test_blockwise_scale_follows_two_noise_levels():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(8000), 5.0 * rng.standard_normal(8000)])
    _, scale = blockwise_mad_scale(x, 1000)
    assert scale[:3000].mean() == pytest.approx(1.0, rel=0.1)
    assert scale[-3000:].mean() == pytest.approx(5.0, rel=0.1)


def test_f1_margin_hand_cases():
    # truth {0, 100, 200}, pred {0, 103, 150}: matches 0 and 100 (|3| ≤ 5) → P = 2/3, R = 2/3, F1 = 2/3
    f1, p, r = f1_margin([100, 200], [103, 150], margin=5)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3))
    assert f1 == pytest.approx(2 / 3)
    # two predictions near one true point count once: truth {0,100}, pred {0,99,101} → P = 2/3, R = 1
    f1, p, r = f1_margin([100], [99, 101], margin=5)
    assert (p, r) == pytest.approx((2 / 3, 1.0))
    assert f1 == pytest.approx(0.8)
    assert f1_margin([], [], 5)[0] == 1.0  # TCPD: no change and nothing predicted is perfect


def test_covering_hand_case():
    # truth segments [0,50), [50,100); pred [0,60), [60,100)
    # J([0,50),[0,60)) = 50/60, J([50,100),[60,100)) = 40/50 → C = (50·5/6 + 50·4/5)/100
    assert covering([50], [60], 100) == pytest.approx((50 * 5 / 6 + 50 * 4 / 5) / 100)
    assert covering([30, 70], [30, 70], 100) == 1.0


def test_interval_and_mask_iou():
    assert interval_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert mask_iou([(0, 10)], [(5, 15)], 20) == pytest.approx(5 / 15)
    assert mask_iou([], [], 10) == 1.0
    # a prediction inside an ignored stretch does not count against it
    assert mask_iou([(0, 10)], [(0, 14)], 20, ignore=[(10, 15)]) == 1.0


def test_false_alarm_rate_counts_only_predictions_away_from_true_jumps():
    assert false_alarm_rate([50, 300], [100], [52, 101], margin=5) == (1, 2)
    assert false_alarm_rate([98], [100], [99], margin=5) == (0, 1)  # the prediction explains a true jump


def test_robust_sigma_strided_differences_are_those_of_np_diff():
    rng = np.random.default_rng(5)
    for n in (3, 4, 10, 200_000, 200_001, 200_002, 400_002, 612_345):
        y = rng.standard_cauchy(n)
        dy = np.diff(y)  # the definition, written plainly
        dy = dy[:: int(np.ceil(dy.size / 200_000))] if dy.size > 200_000 else dy
        expected = 1.4826 * np.median(np.abs(dy - np.median(dy))) / np.sqrt(2.0)
        assert robust_sigma(y) == pytest.approx(expected, rel=1e-12)
        y[n // 2] = np.nan  # a gap is dropped, not differenced across
        kept = y[np.isfinite(y)]
        dk = np.diff(kept)
        dk = dk[:: int(np.ceil(dk.size / 200_000))] if dk.size > 200_000 else dk
        assert robust_sigma(y) == pytest.approx(1.4826 * np.median(np.abs(dk - np.median(dk))) / np.sqrt(2.0), rel=1e-12)
