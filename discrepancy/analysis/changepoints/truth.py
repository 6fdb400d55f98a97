"""The definitions of a plateau and of a converged tail (docs/definitions.md §4), applied to a noiseless curve: the
ground truth.

Both synthetic generators label their curves with these functions, from the clean curve, the noise scale they put on
it and the transitions they planted; the detector (``plateaus``) estimates the same quantities from noisy data.

- **Transition**: a planted change of the level by D, sudden (a jump) or fast (a sigmoid of width w).
- **Plateau** before a transition: the maximal stretch [s, e) ending where the transition starts, over which the level
  stays within a band b = min(C_SIGMA·σ, RHO·|D|) of the level the transition leaves from. The level change across a
  plateau is thus small against the noise (≤ 2σ) *and* against the change that ends it (≤ |D|/4). The transition
  leaves from its onset, where it has itself moved the level by b/2 (the level just before a jump: w = 0), and must
  be sudden: half of D within half the plateau's length (a slow rise after a flat start is a trend, not the end of
  a stall). Its start is soft in real curves, where the decay before it fades out: the plateau starts where that
  decay has come within b of the plateau's final level.
- **Converged tail**: the maximal stretch [c, n) at the end within b_c = min(C_SIGMA·σ, RHO·|D_c|) of the final level,
  where D_c is the larger of the last transition's size and the largest excursion of the level from its final value
  after that transition (what the curve did before it settled). None when the curve never moved (|D_c| < 3σ: a
  constant or pure-noise series has neither plateau nor convergence).
- Both are at least ``min_len`` long (``default_min_plateau``: a plateau is long by definition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RHO = 0.25  # a plateau's level change is at most a quarter of the change that ends it
C_SIGMA = 2.0  # ... and at most twice the noise scale
MOVED = 3.0  # a curve whose level never moves by 3σ has not converged, it was never anywhere else
HORIZON = 0.5  # a transition moves the level by half its size within half the plateau's length: it is sudden


def default_min_plateau(n: int) -> int:
    """Shortest stretch called a plateau or a converged tail: 5 % of the run, at least 10 steps."""
    return max(10, n // 20)


def band(sigma: float, size: float, loose: float = 1.0) -> float:
    """Half-width of the band a plateau's level stays in: min(C_SIGMA·σ, RHO·|D|), times ``loose``."""
    return float(loose * min(C_SIGMA * sigma, RHO * abs(size)))


def _run_back(clean: np.ndarray, end: int, anchor: float, b: float, floor: int) -> int:
    """First index s ≥ floor such that every clean[t], s ≤ t < end, is within b of anchor."""
    s = end
    while s > floor and abs(clean[s - 1] - anchor) <= b:
        s -= 1
    return s


def _plateaus(
    clean: np.ndarray, sigma: np.ndarray, transitions: Sequence[tuple[float, float, float]], min_len: int,
    loose: float = 1.0,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(plateaus, plateaus ended by a transition too slow to count) of a clean curve; see ``plateau_truth``."""
    out: list[tuple[int, int]] = []
    slow: list[tuple[int, int]] = []
    floor, n = 0, clean.size
    for c, w, size in transitions:
        b = band(float(sigma[max(0, min(int(c), n) - 1)]), size, loose)
        # the onset: where the transition itself has moved the level by b/2 (a logistic's tail is e^{−x}·|D|)
        onset = int(np.floor(c - w * max(1.0, np.log(max(2.0 * abs(size) / max(b, 1e-300), 1.0))))) if w > 0 else int(c)
        if onset < 1:
            floor = int(np.ceil(c + 3.0 * w))
            continue
        anchor = float(clean[onset - 1])
        end = onset
        while end < min(int(np.ceil(c)), n) and abs(clean[end] - anchor) <= b:
            end += 1  # a sigmoid still inside the band belongs to the plateau
        start = _run_back(clean, end, anchor, b, floor)
        if end - start >= min_len:
            after = float(clean[min(n - 1, end + int(np.ceil(HORIZON * (end - start))))])
            (out if abs(after - anchor) >= 0.5 * abs(size) else slow).append((start, end))
        floor = max(end, int(np.ceil(c + 3.0 * w)))
    return out, slow


def plateau_truth(
    clean: np.ndarray, sigma: np.ndarray, transitions: Sequence[tuple[float, float, float]], min_len: int,
    loose: float = 1.0,
) -> list[tuple[int, int]]:
    """Plateaus [s, e) of a clean curve with planted ``transitions`` (centre c, width w, size D), sorted by c.

    ``sigma`` [n] is the noise scale at each step as it appears in the signal (after any smoothing). ``loose`` > 1
    widens the band (``borderline`` uses it).
    """
    return _plateaus(clean, sigma, transitions, min_len, loose)[0]


def borderline(
    clean: np.ndarray, sigma: np.ndarray, transitions: Sequence[tuple[float, float, float]], min_len: int
) -> list[tuple[int, int]]:
    """Steps that are plateau with the band doubled but not with the band itself, or before a transition too slow
    to count: whether they are a plateau is a matter of a threshold, so the plateau score ignores them ("don't
    care", as segmentation benchmarks label ambiguous boundaries)."""
    n = clean.size
    strict, wide = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    found, slow = _plateaus(clean, sigma, transitions, min_len)
    for s, e in found:
        strict[s:e] = True
    for s, e in [*slow, *plateau_truth(clean, sigma, transitions, min_len, loose=2.0)]:
        wide[s:e] = True
    edges = np.flatnonzero(np.diff(np.concatenate(([0], (wide & ~strict).astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def converged_truth(
    clean: np.ndarray, sigma: np.ndarray, transitions: Sequence[tuple[float, float, float]], min_len: int
) -> int | None:
    """First index of the converged tail of a clean curve, or None (see the module docstring)."""
    n = clean.size
    last = transitions[-1] if transitions else None
    after = min(n - 1, int(np.ceil(last[0] + 3.0 * last[1])) if last else 0)
    final = float(clean[-1])
    excursion = float(np.max(np.abs(clean[after:] - final)))
    size = max(abs(last[2]) if last else 0.0, excursion)
    s_final = float(sigma[-1])
    if size < MOVED * s_final:
        return None
    start = _run_back(clean, n, final, band(s_final, size), 0)
    return start if n - start >= min_len else None
