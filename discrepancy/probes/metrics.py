"""Small per-item metrics: unbiased pass@k, rates per 1,000 tokens, calibration error.

Plain numpy: each is a line or two of arithmetic, and no library we depend on offers them in this form.
"""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 − C(n−c, k) / C(n, k) (Chen et al. 2021).

    Computed as a running product, 1 − Π_{i=n−c+1..n} (1 − k/i), because the binomials overflow for large n.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def per_thousand(count: float, tokens: float) -> float:
    """Rate per 1,000 tokens; NaN when nothing was generated (a rate over zero tokens is undefined)."""
    return 1000.0 * count / tokens if tokens > 0 else float("nan")


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: Σ_b (n_b / n) |acc_b − conf_b| over equal-width confidence bins (Guo et al. 2017); NaN when empty."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if confidence.size == 0:
        return float("nan")
    # bin index in [0, bins - 1]; confidence 1.0 belongs to the top bin
    idx = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() / confidence.size * abs(correct[sel].mean() - confidence[sel].mean())
    return float(total)


def brier_score(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared gap between the confidence in the chosen answer and whether it was right; NaN when empty."""
    confidence = np.asarray(confidence, dtype=float)
    if confidence.size == 0:
        return float("nan")
    return float(np.mean((confidence - np.asarray(correct, dtype=float)) ** 2))
