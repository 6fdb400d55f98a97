"""A second synthetic generator, built unlike the first (``synthetic``), so that defaults are not tuned to one family.

Where ``synthetic`` draws exponential decays with Student-t noise that is larger early on, this one draws:

- **decay laws**: power law a·(1 + t/t₀)^(−β), stretched exponential a·exp(−(t/τ)^γ), logarithmic a·(1 − log(1 +
  t/t₀)/log(1 + T/t₀)), and a linear warm-up rise before a power-law decay;
- **phases**: 0–3 transitions, each a jump (width 0) or a fast sigmoid (0.2–1.5 % of the run), after which the
  curve decays again with its own law and amplitude; the stall before a transition may drift slightly or wobble
  (a slow sinusoid of half the noise scale), so plateaus are not flat lines;
- **noise**: Gaussian, Laplace, Student-t with 2.5 degrees of freedom, Gaussian with 3 % contamination ×10, AR(1)
  with φ ∈ [0.5, 0.95], multiplicative log-normal, or binomial counts (a reward as a mean of 16–256 Bernoulli draws);
  its scale proportional to the level or constant;
- **smoothing**: a third of the curves are logged as an EMA (α ∈ [0.03, 0.3]) of the noisy signal, as trainers do;
- **direction**: loss-like (falling) or reward-like (rising: the mirror image), and rare 1–3 step spikes;
- **lengths**: log-uniform from 8 to 10⁶ points (``suite(min_len=..., max_len=...)``).

The truth comes from the clean curve (EMA-smoothed when the signal is) and the noise scale as it appears in the signal
(``truth``). Jumps are the planted width-0 transitions of curves not logged as an EMA (an EMA turns a jump into a
decay) whose size is at least 3σ; other transitions are neither jumps nor non-jumps (``jump_ignore``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps

from discrepancy.analysis.changepoints.truth import borderline, converged_truth, default_min_plateau, plateau_truth

NOISES = ("gauss", "laplace", "t2.5", "contaminated", "ar1", "lognormal", "binomial")
LAWS = ("power", "stretched", "log", "warmup")


@dataclass(frozen=True)
class Curve:
    """One curve and its truth: jumps (first index of the new level), plateaus [s, e), converged tail start."""

    signal: np.ndarray  # [n] what is logged
    clean: np.ndarray  # [n] the noiseless curve, smoothed like the signal
    sigma: np.ndarray  # [n] noise scale as it appears in the signal
    jumps: list[int]
    plateaus: list[tuple[int, int]]
    converged_from: int | None
    transitions: list[tuple[float, float, float]]  # (centre, width, size) in the signal's units
    noise: str
    ema: float  # 0 when not smoothed
    kind: str  # "loss" or "reward"
    spikes: list[int] = field(default_factory=list)
    jump_ignore: list[int] = field(default_factory=list)
    plateau_ignore: list[tuple[int, int]] = field(default_factory=list)  # borderline stretches ("don't care")


def _law(law: str, t: np.ndarray, span: float, rng: np.random.Generator) -> np.ndarray:
    """Decay shape g with g(0) = 1 falling toward 0 over a time scale drawn relative to ``span``."""
    scale = span * rng.uniform(0.02, 0.3)
    if law == "power":
        return (1.0 + t / scale) ** (-rng.uniform(0.5, 2.0))
    if law == "stretched":
        return np.exp(-((t / scale) ** rng.uniform(0.4, 0.8)))
    if law == "log":
        return np.clip(1.0 - np.log1p(t / scale) / np.log1p(span / scale), 0.0, 1.0)
    warm = max(1.0, span * rng.uniform(0.01, 0.05))  # "warmup": rises to 1 linearly, then a power-law decay
    return np.where(t < warm, t / warm, (1.0 + np.maximum(t - warm, 0.0) / scale) ** (-rng.uniform(0.5, 1.5)))


def _phases(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, float]], np.ndarray]:
    """A loss-like clean curve (levels fall), its transitions (centre, width, size) before any mirroring, and a
    wobble [n] of unit amplitude inside the phases that wobble (scaled to the noise by the caller)."""
    t = np.arange(n, dtype=np.float64)
    k = int(rng.integers(0, 4)) if n >= 40 else int(rng.integers(0, 2))
    centres = np.sort(rng.uniform(0.2, 0.85, k)) * n
    centres = centres[np.r_[True, np.diff(centres) > 0.12 * n]] if k else centres  # phases ≥ 12 % of the run
    bounds = [0.0, *centres.tolist(), float(n)]
    level = rng.uniform(1.0, 3.0)
    phases = []
    wobble = np.zeros(n)
    for i in range(len(bounds) - 1):
        span = bounds[i + 1] - bounds[i]
        amp = level * rng.uniform(0.1, 0.6) if (i == 0 or rng.random() < 0.7) else 0.0
        inside = (t >= bounds[i]) & (t < bounds[i + 1])
        wobble += inside * np.sin(2 * np.pi * t / (span * rng.uniform(0.3, 1.0))) * (rng.random() < 0.3)
        drift = rng.uniform(-0.03, 0.03) * level * (t - bounds[i]) / max(span, 1.0)
        law = str(rng.choice(LAWS if i == 0 else LAWS[:3]))  # a warm-up happens at the start only
        shape = _law(law, np.maximum(t - bounds[i], 0.0), span, rng)
        phases.append(level + amp * shape + drift * (rng.random() < 0.3))
        level *= rng.uniform(0.3, 0.8)  # the next phase settles lower
    clean = phases[0]
    transitions = []
    for i, c in enumerate(centres):
        width = 0.0 if rng.random() < 0.5 else n * rng.uniform(0.002, 0.015)
        s = (t >= c).astype(np.float64) if width == 0 else 1.0 / (1.0 + np.exp(-(t - c) / max(width, 1e-9)))
        onset = int(np.floor(c - 3.0 * width)) if width > 0 else int(c)
        size = float(phases[i + 1][min(n - 1, int(np.ceil(c + 3 * width)))] - clean[max(0, onset - 1)])
        clean = (1.0 - s) * clean + s * phases[i + 1]
        transitions.append((float(c) if width > 0 else float(int(c)), float(width), size))
    return clean, transitions, wobble


def _noise(kind: str, clean: np.ndarray, rng: np.random.Generator, smallest: float
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """(noisy signal, noise scale [n], AR coefficient φ or 0) for one noise family; the scale is the noise's standard
    deviation, at most a quarter of the ``smallest`` planted transition (so that every transition is one)."""
    n = clean.size
    top = float(np.abs(clean).max())
    rel = min(rng.uniform(0.005, 0.05), 0.25 * smallest / top)
    scale = rel * (np.abs(clean) if rng.random() < 0.5 else np.full(n, np.abs(clean).mean()))  # [n]
    phi = 0.0
    if kind == "gauss":
        e = rng.standard_normal(n)
    elif kind == "laplace":
        e = rng.laplace(size=n) / np.sqrt(2.0)
    elif kind == "t2.5":
        e = rng.standard_t(2.5, n) / 1.15  # scaled so that its MAD matches a unit Gaussian's
    elif kind == "contaminated":
        e = rng.standard_normal(n) * np.where(rng.random(n) < 0.03, 10.0, 1.0)
    elif kind == "ar1":
        phi = rng.uniform(0.5, 0.95)
        innov = rng.standard_normal(n) * np.sqrt(1.0 - phi * phi)
        innov[0] = rng.standard_normal()  # start in the stationary distribution
        e = sps.lfilter([1.0], [1.0, -phi], innov)  # e_t = φ e_{t−1} + innovation
    elif kind == "lognormal":
        return clean * np.exp(rel * rng.standard_normal(n)), rel * np.abs(clean), 0.0
    else:  # binomial: a mean of m Bernoulli draws of a probability made from the curve
        p = np.clip(clean / (1.2 * top), 0.01, 0.99)
        m = max(int(rng.integers(16, 257)), int(np.ceil(0.36 / (rel * rel))))  # sd ≤ 1.2·top·0.5/√m ≤ rel·top
        return rng.binomial(m, p) / m * 1.2 * top, np.sqrt(p * (1 - p) / m) * 1.2 * top, 0.0
    return clean + scale * e, scale, phi if kind == "ar1" else 0.0


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average, as loggers apply it."""
    m = sps.lfilter([alpha], [1.0, alpha - 1.0], y)  # m_t = (1 − α) m_{t−1} + α y_t, m_{−1} = 0
    return m / (1.0 - (1.0 - alpha) ** np.arange(1, y.size + 1))


def curve(n: int, rng: np.random.Generator, *, noise: str | None = None, ema: bool | None = None) -> Curve:
    """One curve of length ``n`` (≥ 8) with its truth."""
    clean, transitions, wobble = _phases(n, rng)
    noise = noise or str(rng.choice(NOISES))
    smallest = min((abs(d) for _, _, d in transitions), default=np.inf)
    signal, sigma, phi = _noise(noise, clean, rng, smallest)
    spikes = []
    if n >= 30 and rng.random() < 0.5:
        for s in rng.choice(np.arange(2, n - 4), int(rng.integers(1, 4)), replace=False):
            width = int(rng.integers(1, 4))
            signal[s : s + width] *= rng.uniform(1.5, 4.0)
            spikes.append(int(s))
    alpha = float(rng.uniform(0.03, 0.3)) if (ema if ema is not None else rng.random() < 1 / 3) else 0.0
    if alpha:
        signal, clean = _ema(signal, alpha), _ema(clean, alpha)
        beta = 1.0 - alpha  # stationary variance of an EMA of unit AR(1) noise: α²/(1−β²)·(1+βφ)/(1−βφ)
        sigma = sigma * np.sqrt(alpha / (2.0 - alpha) * (1 + beta * phi) / (1 - beta * phi))  # φ = 0: white
    wobble = 0.5 * sigma * wobble  # a slow wobble of half the noise scale: a stall that is not a flat line
    signal, clean = signal + wobble, clean + wobble
    kind = "loss"
    if rng.random() < 0.5:  # reward-like: the mirror image
        top = float(np.max(clean)) + float(np.min(clean))
        signal, clean, kind = top - signal, top - clean, "reward"
        transitions = [(c, w, -d) for c, w, d in transitions]
    min_len = default_min_plateau(n)
    plateaus = plateau_truth(clean, sigma, transitions, min_len) if n >= 50 else []
    converged = converged_truth(clean, sigma, transitions, min_len) if n >= 50 else None
    jumps, ignore = [], []
    for c, w, d in transitions:
        real = w == 0 and not alpha and abs(d) >= 3.0 * float(sigma[min(int(c), n - 1)])
        (jumps if real else ignore).append(int(round(c)))
    loose = borderline(clean, sigma, transitions, min_len) if n >= 50 else []
    return Curve(signal, clean, sigma, jumps, plateaus, converged, transitions, noise, alpha, kind, spikes, ignore,
                 loose)


def suite(n_curves: int, seed: int, min_len: int = 50, max_len: int = 100_000) -> list[Curve]:
    """A fixed-seed set of curves, lengths log-uniform in [min_len, max_len], noise families cycled."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(min_len), np.log(max_len), n_curves)).astype(int)
    return [curve(int(n), rng, noise=NOISES[i % len(NOISES)]) for i, n in enumerate(lengths)]
