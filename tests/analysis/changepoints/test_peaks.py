"""find_peaks and the χ² → Gaussian conversion against scipy.signal / scipy.stats themselves."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal, stats

from discrepancy.analysis.changepoints.peaks import chi2_to_gaussian_z, find_peaks


@pytest.mark.parametrize("seed", range(8))
def test_find_peaks_matches_scipy(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 3000))
    x = np.abs(rng.standard_normal(n)) * rng.uniform(0.5, 3)
    if seed % 2:  # flat tops and flat stretches: values on a coarse grid repeat
        x = np.round(x, 1)
    height, distance = float(rng.uniform(0, 2.5)), int(rng.integers(1, 60))
    expected, _ = signal.find_peaks(x, height=height, distance=distance)
    np.testing.assert_array_equal(find_peaks(x, height, distance), expected)


def test_find_peaks_hand_case():
    x = np.array([0, 3, 0, 2, 2, 2, 0, 5, 1, 4, 0, 9, 9])
    # maxima: 1 (3), 4 (middle of the flat top 3..5, value 2), 7 (5), 9 (4); 11..12 touches the end: not a maximum
    assert list(find_peaks(x, 0, 1)) == [1, 4, 7, 9]
    assert list(find_peaks(x, 2.5, 1)) == [1, 7, 9]
    assert list(find_peaks(x, 0, 3)) == [1, 4, 7]  # 7 (5) removes 9 (4); 4 survives 7 at distance 3
    assert list(find_peaks(x[:2], 0, 1)) == []


def test_chi2_to_gaussian_z_matches_scipy_stats():
    q = np.array([0.0, 0.5, 3.0, 20.0, 200.0, 900.0])
    for dof in (2, 3, 5):
        expected = stats.norm.isf(stats.chi2.sf(q, dof) / 2.0)
        np.testing.assert_allclose(chi2_to_gaussian_z(q, dof), expected, rtol=1e-12, atol=1e-12)
