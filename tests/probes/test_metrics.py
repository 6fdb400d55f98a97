"""pass@k against brute-force enumeration; ECE and Brier against hand computations; reflective word counts."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from discrepancy.probes.metrics import (
    brier_score,
    expected_calibration_error,
    pass_at_k,
    per_thousand,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_finite_and_k1_is_accuracy():
    assert pass_at_k(1000, 10, 1) == pytest.approx(0.01)
    assert 0 < pass_at_k(2000, 3, 100) < 1
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_calibration_by_hand():
    conf = np.array([0.95, 0.9, 0.55, 0.52])
    right = np.array([1, 0, 1, 1])
    # bins: 0.9x -> {0.95, 0.9}: acc 0.5, conf 0.925; 0.5x -> {0.55, 0.52}: acc 1, conf 0.535
    assert expected_calibration_error(conf, right) == pytest.approx(0.5 * 0.425 + 0.5 * 0.465)
    assert brier_score(conf, right) == pytest.approx((0.05**2 + 0.9**2 + 0.45**2 + 0.48**2) / 4)
    assert expected_calibration_error(np.array([1.0]), np.array([1])) == 0.0
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_rate_per_thousand_tokens():
    assert per_thousand(5, 250) == 20.0 and np.isnan(per_thousand(0, 0))
