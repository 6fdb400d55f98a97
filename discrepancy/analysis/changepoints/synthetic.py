"""Synthetic training curves with known jumps, plateaus and decoy spikes: the ground truth the detectors are scored on.

Like ``ruptures.datasets.pw_constant``, but shaped like what a GRPO run logs: exponential decay with heteroscedastic
heavy-tailed noise (Student-t, 3 degrees of freedom, larger early in the run), long plateaus ended by sudden drops
(grokking-like), piecewise-constant reward levels, isolated one- or two-step spikes that are not jumps, and NaN gaps.
The truth is computed from the noiseless curve and the planted transitions (``truth``), never from a detector.
``synthetic2`` is a second generator built unlike this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from discrepancy.analysis.changepoints.truth import borderline, converged_truth, default_min_plateau, plateau_truth

KINDS = ("decay", "plateau", "steps", "reward")


@dataclass(frozen=True)
class SyntheticCurve:
    """One curve and its truth. ``jumps`` are first indices of a new level; ``plateaus`` half-open intervals;
    ``converged_from`` the first index of the converged tail (None: none), both by the rules of ``truth``."""

    signal: np.ndarray  # [n] float64, NaN inside gaps
    clean: np.ndarray  # [n] the noiseless curve
    sigma: np.ndarray  # [n] noise scale at each step
    jumps: list[int]
    plateaus: list[tuple[int, int]]
    spikes: list[int]
    kind: str
    gaps: list[tuple[int, int]] = field(default_factory=list)
    converged_from: int | None = None
    plateau_ignore: list[tuple[int, int]] = field(default_factory=list)  # borderline stretches ("don't care")


def _jump_positions(rng: np.random.Generator, n: int, k: int, lo: int, hi: int, gap: int) -> list[int]:
    """``k`` sorted positions in [lo, hi) at least ``gap`` apart (fewer if they do not fit)."""
    out: list[int] = []
    for _ in range(50 * max(k, 1)):
        if len(out) == k or hi - lo <= 0:
            break
        p = int(rng.integers(lo, hi))
        if all(abs(p - q) >= gap for q in out):
            out.append(p)
    return sorted(out)


def _base(kind: str, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Noiseless smooth part of a curve, and the planted smooth transition as [(centre, width)]: the sigmoid of the
    "reward" kind; for the "plateau" kind [(start, drop)], the stall and the drop that ends it."""
    n = t.size
    if kind == "decay":
        tau = n * rng.uniform(0.05, 0.4)
        return 1.0 + 2.0 * np.exp(-t / tau), []
    if kind == "reward":
        mid, width = n * rng.uniform(0.2, 0.6), n * rng.uniform(0.05, 0.2)
        return 0.2 + 0.6 / (1.0 + np.exp(-(t - mid) / width)), [(mid, width)]
    if kind == "steps":
        return np.full(n, rng.uniform(0.0, 1.0)), []
    # "plateau": quick decay onto a level, a long flat stretch, a sudden drop, then a slower decay to a lower level
    start = int(n * rng.uniform(0.1, 0.25))
    drop = int(n * rng.uniform(0.55, 0.8))
    tau1 = start / 6.0
    level = 2.0
    pre = level + 1.5 * np.exp(-t / tau1)
    post = 0.5 + 0.8 * np.exp(-(t - drop) / (n * rng.uniform(0.03, 0.1)))
    return np.where(t < drop, pre, post), [(start, drop)]


def training_curve(n: int, rng: np.random.Generator, kind: str | None = None, *, gaps: bool = False) -> SyntheticCurve:
    """One synthetic curve of length ``n`` (≥ 50) with planted jumps, plateaus, decoy spikes and optional NaN gaps."""
    kind = kind or str(rng.choice(KINDS))
    t = np.arange(n, dtype=np.float64)
    smooth, forced = _base(kind, t, rng)
    sigma = 0.05 * (0.4 + np.exp(-t / (0.3 * n)))  # [n] heteroscedastic: noisier early
    min_sep = max(20, n // 8)
    k = int(rng.integers(0, 4)) if kind != "steps" else int(rng.integers(1, 5))
    jumps = _jump_positions(rng, n, k, min_sep // 2, n - min_sep // 2, min_sep)
    sigmoid = forced if kind == "reward" else []
    forced = forced if kind == "plateau" else []
    if forced:  # the drop that ends the plateau is a jump; keep other jumps off the plateau
        start, drop = forced[0]
        jumps = sorted([drop] + [j for j in jumps if (j < start - min_sep or j > drop + min_sep)])
    step = np.zeros(n)
    for j in jumps:
        if forced and j == forced[0][1]:
            continue  # the plateau's drop is built into the base curve
        step[j:] += rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 12.0) * sigma[j]
    clean = smooth + step
    transitions = [(float(j), 0.0, float(clean[j] - clean[j - 1])) for j in jumps]
    transitions += [(float(c), float(w), float(clean[min(n - 1, int(c + 3 * w))] - clean[max(0, int(c - 3 * w))]))
                    for c, w in sigmoid]
    transitions.sort()
    noise = sigma * rng.standard_t(3, size=n) / 1.13  # t₃ rescaled so its MAD matches a Gaussian of scale σ
    signal = clean + noise
    spikes = _jump_positions(rng, n, int(rng.integers(0, 4)), 5, n - 5, 10)
    spikes = [s for s in spikes if all(abs(s - j) > 10 for j in jumps)]
    for s in spikes:
        width = int(rng.integers(1, 3))
        signal[s : s + width] += rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 30.0) * sigma[s]
    gap_list: list[tuple[int, int]] = []
    if gaps:
        for g in _jump_positions(rng, n, 2, 5, n - 30, n // 5):
            length = int(rng.integers(2, max(3, n // 30)))
            if all(j < g - 5 or j > g + length + 5 for j in jumps):
                signal[g : g + length] = np.nan
                gap_list.append((g, g + length))
    min_len = default_min_plateau(n)
    plateaus = plateau_truth(clean, sigma, transitions, min_len)
    converged = converged_truth(clean, sigma, transitions, min_len)
    return SyntheticCurve(signal, clean, sigma, jumps, plateaus, spikes, kind, gap_list, converged,
                          borderline(clean, sigma, transitions, min_len))


def benchmark_suite(n_curves: int = 120, seed: int = 0, min_len: int = 50, max_len: int = 5000) -> list[SyntheticCurve]:
    """A fixed-seed set of curves, lengths log-uniform in [min_len, max_len], kinds cycled, every third with NaN gaps."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(min_len), np.log(max_len), n_curves)).astype(int)
    return [
        training_curve(int(n), rng, KINDS[i % len(KINDS)], gaps=(i % 3 == 2)) for i, n in enumerate(lengths)
    ]
