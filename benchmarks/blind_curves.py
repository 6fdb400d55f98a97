"""A third synthetic generator of training curves, written blind (without reading the detectors or the two existing
generators), to score the change-point detectors on curves nobody tuned them on.

Plain numpy, seeded. Every curve comes with its ground truth:

- **jumps**: planted abrupt level changes (the first index of the new level), each of size >= 3 noise sigma, never in
  an EMA-smoothed curve. A gradual sigmoid, a smooth KL blow-up, a learning-rate warm-up, a spike and a periodic
  swing are *not* jumps.
- **transitions** (centre c, width w, size D): the jumps (w = 0) and the sigmoids (w > 0), as ``truth.py`` wants them.
- **plateaus / converged tail / borderline**: labelled by ``discrepancy.analysis.changepoints.truth`` from the clean
  level, the noise scale ``sigma`` and the transitions (``plateau_truth``, ``converged_truth``, ``borderline`` with
  ``default_min_plateau(n)``).

The *level* ``clean`` excludes the noise and, in the ``epoch_periodic`` family, the per-epoch periodic swing (the
swing is a property of the data order, as a seasonal component is of a monthly series; the level is what a
decomposition calls the trend). ``sigma[t]`` is the standard deviation of the random noise at t as it appears in the
signal (after the EMA where the logger smooths); for heavy-tailed noise (t(3), Pareto spikes) it is the scale of the
noise's bulk (the Gaussian-equivalent MAD scale), so that a jump of 3 sigma is 3 of the bulk's sigmas.

Families (what real LM / RL fine-tuning curves look like):

- ``warmup_cosine``: a loss under linear LR warm-up then cosine decay (flat start, decay, flat end). No jump.
- ``step_lr``: a loss under step LR decay: an abrupt drop at each milestone (a real jump), then a slower relaxation.
- ``grokking``: a long stall (with a slight drift) after a quick first fall, then a sudden drop, then a slow settle.
- ``rl_reward``: a success rate averaged over B rollouts (binomial / B: bounded in [0, 1], skewed noise near 1, on
  a lattice of 1/B) that creeps, rises suddenly, then saturates near 1.
- ``kl_blowup``: a KL that creeps up under multiplicative noise, then blows up: abruptly (a jump, then exponential
  growth) in 2/3 of the curves, smoothly (exponential growth only, no jump) in 1/3.
- ``accuracy50``: an accuracy measured on 50 examples (values k/50), 20-300 evaluations, with one emergent jump in
  ~60 % of the curves, a slow rise only in the rest.
- ``gradnorm``: a gradient norm with heavy-tailed (Pareto) spikes of 1-3 steps, a level that falls then creeps up;
  a level change (x0.5 or x2) in half of the curves.
- ``epoch_periodic``: a loss with a fixed per-epoch profile (one data order every epoch, period 10-120 steps,
  amplitude 1-3 sigma) and step-LR drops at epoch boundaries in 2/3 of the curves.
- ``sigmoid_gradual``: a loss or reward with one gradual sigmoid transition (width n/40-n/10, >= 8 steps) of 6-20
  sigma: planted to count false jumps (no jump truth).
- ``null_decay``: smooth decays (exponential, power law, logarithmic, stretched exponential) under varied noise
  (Gaussian, t(3), Laplace, AR(1), EMA-smoothed, multiplicative, binomial lattice, heteroscedastic). No jump.

Modifier: ~25 % of curves of at least 50 points get 1-4 NaN gaps (logging dropouts) of 1 to n/50 steps, kept 3 steps
away from every planted jump.

Lengths: log-uniform in a family-specific range within 20-5,000, plus a few long curves (20,000-100,000) per seed.

Seeds: ``DEV_SEED`` (development) and ``HELDOUT_SEED`` (held-out). The generator was written from the definitions
before any scoring and was not changed after seeing scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from discrepancy.analysis.changepoints.truth import (
    borderline,
    converged_truth,
    default_min_plateau,
    plateau_truth,
)

DEV_SEED = 20261204
HELDOUT_SEED = 77031
FAMILIES = (
    "warmup_cosine", "step_lr", "grokking", "rl_reward", "kl_blowup", "accuracy50", "gradnorm", "epoch_periodic",
    "sigmoid_gradual", "null_decay",
)
PER_FAMILY = 14


@dataclass
class Curve:
    family: str
    index: int
    y: np.ndarray
    clean: np.ndarray
    sigma: np.ndarray
    jumps: list[int]
    transitions: list[tuple[float, float, float]]
    variant: str = ""
    gaps: int = 0
    plateaus: list[tuple[int, int]] = field(default_factory=list)
    converged_from: int | None = None
    borderline: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def null(self) -> bool:
        return not self.jumps


# ---- helpers --------------------------------------------------------------------------------------------------------

def _length(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))  # noqa: RUF046


def _size(rng: np.random.Generator, lo: float = 3.0, hi: float = 12.0) -> float:
    """A jump size in sigmas, log-uniform in [lo, hi] (so some are near the 3-sigma floor)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _decay(rng: np.random.Generator, n: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A smooth decay from ~1 toward 0 over n steps (shape drawn)."""
    t = np.arange(n, dtype=float)
    kind = kind or str(rng.choice(["exp", "power", "log", "stretched"]))
    if kind == "exp":
        f = np.exp(-t / (n * rng.uniform(0.08, 0.4)))
    elif kind == "power":
        t0 = n * rng.uniform(0.005, 0.05)
        f = (1 + t / t0) ** (-rng.uniform(0.3, 1.0))
    elif kind == "log":
        f = 1 - np.log1p(t / (n * rng.uniform(0.01, 0.1))) / np.log1p(1 / rng.uniform(0.01, 0.1)) * 0.9
    else:
        f = np.exp(-((t / (n * rng.uniform(0.1, 0.4))) ** rng.uniform(0.4, 0.8)))
    return f, kind


def _noise(rng: np.random.Generator, n: int, family: str) -> tuple[np.ndarray, float]:
    """Unit-scale noise of a family and the ratio of its signal sigma to the unit (see the module docstring)."""
    if family == "gauss":
        return rng.standard_normal(n), 1.0
    if family == "t3":
        return rng.standard_t(3, n), 1.134  # Gaussian-equivalent MAD scale of t(3): 0.7649 · 1.4826
    if family == "laplace":
        return rng.laplace(0, 1 / np.sqrt(2), n), 1.0
    if family.startswith("ar1"):
        rho = float(family.split(":")[1])
        e = rng.standard_normal(n) * np.sqrt(1 - rho**2)
        x = np.empty(n)
        x[0] = rng.standard_normal()
        for i in range(1, n):
            x[i] = rho * x[i - 1] + e[i]
        return x, 1.0
    raise ValueError(family)


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    acc = x[0]
    for i, v in enumerate(x):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


# ---- families -------------------------------------------------------------------------------------------------------

def warmup_cosine(rng, n):
    t = np.arange(n, dtype=float)
    warm = max(2, int(n * rng.uniform(0.02, 0.1)))
    lr = np.where(t < warm, (t + 1) / warm, 0.5 * (1 + np.cos(np.pi * (t - warm) / max(1, n - warm))))
    prog = np.cumsum(lr) / np.sum(lr)
    l0, lf = rng.uniform(2.0, 4.0), rng.uniform(0.3, 1.5)
    clean = lf + (l0 - lf) * np.exp(-rng.uniform(3, 8) * prog)
    s0 = (l0 - lf) * rng.uniform(0.01, 0.06)
    sigma = s0 * (0.5 + 0.5 * (clean - lf) / (l0 - lf))  # noisier while the loss is high
    nf = str(rng.choice(["gauss", "t3", "laplace"]))
    z, k = _noise(rng, n, nf)
    return clean + sigma / k * z, clean, sigma, [], [], f"noise={nf}"


def step_lr(rng, n):
    t = np.arange(n, dtype=float)
    f, kind = _decay(rng, n)
    l0, lf = rng.uniform(1.5, 3.5), rng.uniform(0.2, 1.0)
    clean = lf + (l0 - lf) * f
    sig = (l0 - lf) * rng.uniform(0.005, 0.04)
    n_ms = int(rng.integers(1, 4))
    fracs = {1: [0.6], 2: [0.5, 0.75], 3: [0.3, 0.6, 0.9]}[n_ms]
    jumps, trans = [], []
    for fr in fracs:
        m = int(n * (fr + rng.uniform(-0.04, 0.04)))
        if m < 5 or m > n - 5:
            continue
        d = _size(rng, 3, 12) * sig
        relax = 0.3 * d * (1 - np.exp(-(t - m) / max(2.0, n * rng.uniform(0.005, 0.03))))
        clean = clean - np.where(t >= m, d + relax, 0.0)
        jumps.append(m)
        trans.append((float(m), 0.0, -float(d)))
    nf = str(rng.choice(["gauss", "t3", "gauss", "laplace"]))
    z, k = _noise(rng, n, nf)
    sigma = np.full(n, sig)
    return clean + sig / k * z, clean, sigma, jumps, trans, f"decay={kind} noise={nf} milestones={len(jumps)}"


def grokking(rng, n):
    t = np.arange(n, dtype=float)
    sig = rng.uniform(0.01, 0.05)
    stall = rng.uniform(1.0, 2.0)
    l0 = stall + rng.uniform(0.5, 2.0)
    tau = n * rng.uniform(0.01, 0.05)
    tg = int(n * rng.uniform(0.4, 0.8))
    drift = rng.uniform(-0.5, 0.5) * sig  # a slight drift along the stall, within the band
    clean = stall + (l0 - stall) * np.exp(-t / tau) + drift * t / n
    d = _size(rng, 6, 20) * sig
    settle = rng.uniform(0.2, 1.0) * d
    after = np.where(t >= tg, d + settle * (1 - np.exp(-(t - tg) / (n * rng.uniform(0.02, 0.1)))), 0.0)
    clean = clean - after
    rising = bool(rng.random() < 0.4)  # accuracy-like: mirror (a stall then a sudden rise)
    if rising:
        clean = 3.5 - clean
    nf = str(rng.choice(["gauss", "ar1:0.5", "t3"]))
    z, k = _noise(rng, n, nf)
    sigma = np.full(n, sig)
    return (clean + sig / k * z, clean, sigma, [tg], [(float(tg), 0.0, float(clean[tg] - clean[tg - 1]))],
            f"{'rise' if rising else 'drop'} noise={nf}")


def rl_reward(rng, n):
    t = np.arange(n, dtype=float)
    b = int(rng.choice([8, 16, 32, 64]))
    p0 = rng.uniform(0.05, 0.3)
    tr = int(n * rng.uniform(0.25, 0.7))
    p_pre = p0 + rng.uniform(0.0, 0.1) * t / n
    s_pre = np.sqrt(p_pre[tr - 1] * (1 - p_pre[tr - 1]) / b)
    p1 = min(0.9, p_pre[tr - 1] + _size(rng, 3, 10) * max(s_pre, 0.05))
    for _ in range(10):  # >= 3 sigma on both sides of the jump (sigma as in ``sigma`` below, lattice floor included)
        s_post = max(np.sqrt(p1 * (1 - p1) / b), 0.5 / b)
        p1 = max(p1, p_pre[tr - 1] + 3.05 * max(s_pre, s_post, 0.5 / b))
    top = rng.uniform(0.95, 1.0)
    post = top - (top - p1) * np.exp(-(t - tr) / (n * rng.uniform(0.03, 0.2)))
    p = np.clip(np.where(t >= tr, post, p_pre), 0, 1)
    y = rng.binomial(b, p) / b
    sigma = np.sqrt(p * (1 - p) / b)
    sigma = np.maximum(sigma, 0.5 / b)  # the lattice step bounds the visible noise near the bound
    return y, p, sigma, [tr], [(float(tr), 0.0, float(p[tr] - p[tr - 1]))], f"B={b}"


def kl_blowup(rng, n):
    t = np.arange(n, dtype=float)
    k0 = rng.uniform(0.005, 0.05)
    cv = rng.uniform(0.08, 0.25)
    creep = k0 * (1 + rng.uniform(0.5, 2.0) * t / n)
    tb = int(n * rng.uniform(0.55, 0.85))
    tau = n * rng.uniform(0.03, 0.12)
    abrupt = bool(rng.random() < 2 / 3)
    if abrupt:
        d = _size(rng, 4, 15) * cv * creep[tb - 1]
        d = max(d, 3.05 * cv * creep[tb - 1] / (1 - 3.05 * cv))  # >= 3 sigma of the (larger) noise after it too
        grow = np.where(t >= tb, d + k0 * (np.exp((t - tb) / tau) - 1), 0.0)
    else:
        grow = np.where(t >= tb, k0 * (np.exp((t - tb) / tau) - 1), 0.0)
    clean = creep + np.minimum(grow, 50 * k0)
    sigma = cv * clean
    y = clean * np.exp(cv * rng.standard_normal(n) - cv**2 / 2)
    if abrupt:
        return y, clean, sigma, [tb], [(float(tb), 0.0, float(clean[tb] - clean[tb - 1]))], "abrupt"
    return y, clean, sigma, [], [], "smooth (no jump)"


def accuracy50(rng, n):
    t = np.arange(n, dtype=float)
    p0 = rng.uniform(0.05, 0.5)
    slope = rng.uniform(0.0, 0.25)
    p = p0 + slope * t / n
    jumps, trans = [], []
    if rng.random() < 0.6:
        tj = int(n * rng.uniform(0.25, 0.75))
        s_pre = np.sqrt(p[tj - 1] * (1 - p[tj - 1]) / 50)
        d = _size(rng, 3, 10) * max(s_pre, 0.03)
        d = min(d, 0.97 - p[tj - 1])
        s_post = np.sqrt((p[tj - 1] + d) * (1 - p[tj - 1] - d) / 50)
        if d >= 3 * max(s_pre, s_post, 1 / 50):
            p = p + np.where(t >= tj, d, 0.0)
            jumps, trans = [tj], [(float(tj), 0.0, float(d))]
    p = np.clip(p, 0, 1)
    y = rng.binomial(50, p) / 50
    sigma = np.maximum(np.sqrt(p * (1 - p) / 50), 0.01)
    return y, p, sigma, jumps, trans, "jump" if jumps else "slow rise"


def gradnorm(rng, n):
    t = np.arange(n, dtype=float)
    g0 = rng.uniform(0.5, 5.0)
    level = g0 * (0.4 + 0.6 * np.exp(-t / (n * rng.uniform(0.02, 0.1))) + rng.uniform(0.0, 0.4) * t / n)
    cv = rng.uniform(0.05, 0.15)
    jumps, trans = [], []
    if rng.random() < 0.5:
        tj = int(n * rng.uniform(0.3, 0.8))
        f = float(rng.choice([0.5, 2.0]))
        level = np.where(t >= tj, level * f, level)
        d = level[tj] - level[tj - 1]
        if abs(d) >= 3 * cv * max(level[tj], level[tj - 1]):
            jumps, trans = [tj], [(float(tj), 0.0, float(d))]
    y = level * (1 + cv * rng.standard_normal(n))
    rate = rng.uniform(0.005, 0.03)
    i = 0
    while i < n:
        if rng.random() < rate and all(abs(i - j) > 3 for j in jumps):
            width = int(rng.integers(1, 4))
            y[i:i + width] *= 1 + (rng.pareto(1.5) + 1) * rng.uniform(2, 10)
            i += width
        i += 1
    sigma = cv * level
    return y, level, sigma, jumps, trans, f"{'jump x' + ('0.5' if trans and trans[0][2] < 0 else '2') if jumps else 'no jump'} spikes={rate:.3f}"


def epoch_periodic(rng, n):
    t = np.arange(n, dtype=float)
    per = int(rng.integers(10, 121))
    per = min(per, max(10, n // 8))
    f, _ = _decay(rng, n, "exp")
    l0, lf = rng.uniform(1.5, 3.0), rng.uniform(0.3, 1.0)
    clean = lf + (l0 - lf) * f
    sig = (l0 - lf) * rng.uniform(0.005, 0.03)
    prof = np.cumsum(rng.standard_normal(per))
    prof = prof - np.linspace(prof[0], prof[-1], per)  # a closed random walk: some batches harder than others
    prof = prof + 0.5 * rng.standard_normal(per)
    prof = (prof - prof.mean()) / (prof.std() + 1e-12) * sig * rng.uniform(1.0, 3.0)
    swing = prof[np.arange(n) % per]
    jumps, trans = [], []
    if rng.random() < 2 / 3:
        n_ep = n // per
        for fr in sorted(rng.choice([0.4, 0.6, 0.8], size=int(rng.integers(1, 3)), replace=False)):
            m = int(round(n_ep * fr)) * per  # noqa: RUF046
            if 5 <= m <= n - 5 and all(abs(m - j) > per for j in jumps):
                d = _size(rng, 4, 12) * sig
                clean = clean - np.where(t >= m, d, 0.0)
                jumps.append(m)
                trans.append((float(m), 0.0, -float(d)))
    z, _ = _noise(rng, n, "gauss")
    sigma = np.full(n, sig)
    return clean + swing + sig * z, clean, sigma, jumps, trans, f"period={per} swing={prof.std() / sig:.1f}sigma"


def sigmoid_gradual(rng, n):
    t = np.arange(n, dtype=float)
    sig = rng.uniform(0.01, 0.05)
    w = max(8.0, n * rng.uniform(1 / 40, 1 / 10))
    c = n * rng.uniform(0.35, 0.65)
    d = _size(rng, 6, 20) * sig
    f, _ = _decay(rng, n, "exp")
    base = 1.0 + rng.uniform(0.1, 1.0) * f
    clean = base - d / (1 + np.exp(-(t - c) / w))
    rising = bool(rng.random() < 0.5)
    if rising:
        clean = 3.0 - clean
    nf = str(rng.choice(["gauss", "t3", "laplace"]))
    z, k = _noise(rng, n, nf)
    size = float(d if rising else -d)
    return clean + sig / k * z, clean, np.full(n, sig), [], [(float(c), float(w), size)], f"w={w:.0f} noise={nf}"


def null_decay(rng, n):
    f, kind = _decay(rng, n)
    l0, lf = rng.uniform(1.0, 4.0), rng.uniform(0.1, 1.0)
    clean = lf + (l0 - lf) * f
    sig = (l0 - lf) * rng.uniform(0.005, 0.05)
    nf = str(rng.choice(["gauss", "t3", "laplace", "ar1", "ema", "mult", "lattice", "hetero"]))
    sigma = np.full(n, sig)
    if nf in ("gauss", "t3", "laplace"):
        z, k = _noise(rng, n, nf)
        y = clean + sig / k * z
    elif nf == "ar1":
        rho = round(float(rng.uniform(0.5, 0.95)), 2)
        z, _ = _noise(rng, n, f"ar1:{rho}")
        y = clean + sig * z
        nf = f"ar1 rho={rho}"
    elif nf == "ema":
        alpha = float(rng.choice([0.1, 0.05, 0.01]))
        raw = rng.standard_normal(n) * sig * rng.uniform(2, 6)
        sm = _ema(raw, alpha)
        y = clean + sm
        sigma = np.full(n, float(np.std(raw)) * np.sqrt(alpha / (2 - alpha)))  # stationary sd of an EMA
        nf = f"ema alpha={alpha}"
    elif nf == "mult":
        cv = rng.uniform(0.02, 0.1)
        y = clean * np.exp(cv * rng.standard_normal(n))
        sigma = cv * clean
    elif nf == "lattice":  # an accuracy-like rise measured on B examples
        b = int(rng.choice([50, 100, 200]))
        p = 0.05 + 0.9 * (1 - f) * rng.uniform(0.5, 1.0)
        y = rng.binomial(b, p) / b
        clean = p
        sigma = np.maximum(np.sqrt(p * (1 - p) / b), 0.5 / b)
        nf = f"lattice 1/{b}"
    else:  # heteroscedastic: noise shrinking 5x with the loss
        sigma = sig * (0.2 + 0.8 * f) * 2
        y = clean + sigma * rng.standard_normal(n)
    return y, clean, sigma, [], [], f"decay={kind} noise={nf}"


_GEN = {
    "warmup_cosine": (warmup_cosine, 40, 5000),
    "step_lr": (step_lr, 60, 5000),
    "grokking": (grokking, 200, 5000),
    "rl_reward": (rl_reward, 40, 3000),
    "kl_blowup": (kl_blowup, 50, 3000),
    "accuracy50": (accuracy50, 20, 300),
    "gradnorm": (gradnorm, 100, 5000),
    "epoch_periodic": (epoch_periodic, 300, 5000),
    "sigmoid_gradual": (sigmoid_gradual, 80, 5000),
    "null_decay": (null_decay, 20, 5000),
}
# the long curves of a seed: (family, length)
_LONG = (("step_lr", 100_000), ("grokking", 30_000), ("null_decay", 50_000), ("warmup_cosine", 20_000),
         ("gradnorm", 20_000), ("epoch_periodic", 40_000))


def _add_gaps(rng, y, jumps):
    n = y.size
    y = y.copy()
    k = int(rng.integers(1, 5))
    made = 0
    for _ in range(k):
        length = int(rng.integers(1, max(2, n // 50) + 1))
        s = int(rng.integers(1, max(2, n - length - 1)))
        if any(s - 3 <= j <= s + length + 3 for j in jumps):
            continue
        y[s:s + length] = np.nan
        made += 1
    return y, made


def make_curve(rng: np.random.Generator, family: str, index: int, n: int | None = None) -> Curve:
    fn, lo, hi = _GEN[family]
    n = n or _length(rng, lo, hi)
    y, clean, sigma, jumps, trans, variant = fn(rng, n)
    gaps = 0
    if n >= 50 and rng.random() < 0.25:
        y, gaps = _add_gaps(rng, y, jumps)
    sigma = np.asarray(sigma, dtype=float) * np.ones(n)
    clean = np.asarray(clean, dtype=float)
    trans = sorted(trans)
    m = default_min_plateau(n)
    c = Curve(family, index, np.asarray(y, dtype=float), clean, sigma, list(map(int, jumps)), trans, variant, gaps)
    c.plateaus = plateau_truth(clean, sigma, trans, m)
    c.converged_from = converged_truth(clean, sigma, trans, m)
    c.borderline = borderline(clean, sigma, trans, m)
    return c


def generate(seed: int, per_family: int = PER_FAMILY) -> list[Curve]:
    """All curves of a seed: ``per_family`` of each family, then the long ones."""
    rng = np.random.default_rng(seed)
    out: list[Curve] = []
    for fam in FAMILIES:
        for i in range(per_family):
            out.append(make_curve(rng, fam, i))
    for j, (fam, n) in enumerate(_LONG):
        out.append(make_curve(rng, fam, per_family + j, n))
    return out


if __name__ == "__main__":
    for seed in (DEV_SEED, HELDOUT_SEED):
        cs = generate(seed)
        print(seed, len(cs), "curves,", sum(c.n for c in cs), "points,", sum(len(c.jumps) for c in cs), "jumps,",
              sum(len(c.plateaus) for c in cs), "plateaus,", sum(c.converged_from is not None for c in cs), "tails")
