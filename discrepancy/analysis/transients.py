"""Transients of logged series: short excursions that leave the series' level and come back.

A transient is not a level change. A KL spike that halves again within a few steps, or a burst of a reward over a
handful of steps, leaves the series where it was; the jump detector rightly ignores it (it removes spikes before it
looks for level changes), yet a reader needs it pointed at. The test, on a gap-free series y (rows = steps, or
blocks of steps on a long run):

* excess: how far each row stands above (or below) BOTH the median of the 32 rows before it and the median of the
  32 rows after it, the smaller of the two distances (``excess``). A level change or a trend has one side at its
  own level, or the two sides on opposite sides of it, so it has no excess; only what leaves and comes back does;
* for each width L in 1, 2, 4, 8 rows, the mean excess over every L consecutive rows is divided by the robust
  scale of the same means of the series' noise (y minus its centred running median of 65 rows; ``robust_scale``
  over the 130 rows around, since the noise of KL grows with its level; windows that pass half the threshold are left
  out of the scale, so a burst does not hide itself, and the scale never drops below the series' quantisation);
* a transient is a run of rows carried by windows that pass ``threshold`` (6 by default), split by sign, whose
  excess at its peak is at least 5 % of the series' 1–99 % range (visible in its plot).

What it finds and misses (measured on 100 held-out seeds per case; ``tests/analysis/test_transients.py`` checks the
main ones): a one-step spike of 10 σ is found at its step in 99–100 % of Gaussian, AR(1) and binomial-share series
(8 σ: 90–97 %); a burst of 3–8 steps whose mean is ~7 σ̂ of its width in 47–66 % of independent-noise series but
only 9–24 % under AR(1) noise, whose window means wander more. Without planted excursions, 0–3 % of Gaussian,
AR(1), binomial-share, random-walk, level-change and heteroscedastic (noise ×4 over the run) series show one, at 150
and at 1000 steps; series with multiplicative noise (a decaying loss, a rising KL with gamma noise) 0–35 %,
heavy-tailed noise (Student t3) and sparse counts (mostly 0) 68–100 %: their big spikes are ordinary for them.
So an excursion of one series is a candidate; several series moving at once beyond chance (``group_episodes``) is
an episode.

Why by hand: change-point libraries (ruptures) segment levels, they do not flag excursions; pandas and
scipy.ndimage give the running medians in C, the rest is cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.events import step_order_ids

MAD_TO_SIGMA = 1.4826  # 1.4826·MAD is σ for Gaussian noise
MEAN_AD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))  # √(π/2)·mean |v − median| is σ for Gaussian noise
THRESHOLD = 6.0
WIDTHS = (1, 2, 4, 8)  # excursion widths looked at, in rows: a transient lasts a few steps (longer is a phase)
WINDOW_PER_WIDTH = 8  # each side's median spans 4 × the widest excursion
MIN_SHARE = 0.05  # an excursion smaller than 5 % of the series' 1–99 % range is invisible in its plot: not reported
MIN_POINTS = 12  # as the jump detector: too few points to tell an excursion from noise


@dataclass(frozen=True)
class Transient:
    """One excursion of a series (rows of the input, inclusive), strongest window first in ``z``."""

    start: int  # first row of the excursion
    end: int  # last row (inclusive)
    peak: int  # row of the largest |y − baseline| inside
    excess: float  # y − baseline at the peak (signed, in the series' units)
    baseline: float  # the running median at the peak
    z: float  # |mean excess| / its robust scale, for the window width that departs most
    width: int  # that window width L, in rows of the input (``transient_rows`` turns it into steps)


def robust_scale(v: np.ndarray) -> float:
    """Scale of ``v``: the larger of 1.4826·MAD and √(π/2)·mean absolute deviation from the median.

    Both are σ for Gaussian noise. MAD alone sees only the core: it is 0 for sparse counts (mostly one value) and
    small for heavy tails, where it would turn every ordinary spike into an excursion; the mean deviation counts
    the tails, and an excursion of a few steps in hundreds moves it little.
    """
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    dev = np.abs(v - np.median(v))
    return float(max(MAD_TO_SIGMA * np.median(dev), MEAN_AD_TO_SIGMA * np.mean(dev)))


def local_scale(v: np.ndarray, window: int, max_points: int = 4000) -> np.ndarray:
    """``robust_scale`` of the ``window`` values centred on each one [len(v)] (NaNs, the left-out values, ignored):
    the noise of a training curve drifts along the run, KL's growing with its level. Rolling medians and means in
    C; rows whose window holds too few values take the scale of the whole series. Beyond ``max_points`` values it
    is computed on an evenly strided subset and interpolated (the scale drifts slowly: 4 k points resolve it, and
    a 50 k-row series costs 0.05 s instead of 0.5 s)."""
    n = v.size
    stride = max(1, n // max_points)
    sub = pd.Series(v[::stride])  # [⌈n/stride⌉]
    w = max(window // stride, 64 if stride > 1 else 3)  # a strided scale still sees ≥ 64 values
    k = max(8, w // 4)  # fewest values a window's scale is taken from
    centre = sub.rolling(w, center=True, min_periods=k).median()
    dev = (sub - centre).abs()
    mad = MAD_TO_SIGMA * dev.rolling(w, center=True, min_periods=k).median()
    mean_ad = MEAN_AD_TO_SIGMA * dev.rolling(w, center=True, min_periods=k).mean()
    scale = np.fmax(mad.to_numpy(), mean_ad.to_numpy())
    if stride > 1:
        ok = np.isfinite(scale)
        scale = np.interp(np.arange(n), np.arange(0, n, stride)[ok], scale[ok]) if ok.any() else np.full(n, np.nan)
    whole = robust_scale(v)
    floor = 1e-12 * max(1.0, float(np.nanmax(np.abs(v)))) if np.isfinite(v).any() else 1e-12
    return np.maximum(np.where(np.isfinite(scale) & (scale > 0), scale, whole), floor)


def running_median(y: np.ndarray, window: int) -> np.ndarray:
    """Centred running median of ``window`` (odd) points [n]; near the ends the window shrinks and stays centred
    (2t + 1 points at row t), so a trend at the start is followed."""
    from scipy import ndimage  # already loaded by the jump detector: the median filter in C

    n = y.size
    h = min(window // 2, (n - 1) // 2)
    base = ndimage.median_filter(y, size=2 * h + 1, mode="nearest")  # [n], centred for rows h … n−1−h
    for t in range(h):  # ≤ window/2 rows per end, each a median of ≤ window points
        base[t] = np.median(y[: 2 * t + 1])
        base[n - 1 - t] = np.median(y[n - 1 - 2 * t :])
    return base


def side_medians(y: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of the ``half`` rows before each row and of the ``half`` rows after it ([n] each; NaN at an end with
    no row on that side; fewer rows near the ends). pandas' rolling median runs in C (a skip list, O(n log half))."""
    before = pd.Series(y).rolling(half, min_periods=1).median().to_numpy()  # [n] median of rows t−half+1 … t
    after = pd.Series(y[::-1]).rolling(half, min_periods=1).median().to_numpy()[::-1]  # [n] rows t … t+half−1
    return np.r_[np.nan, before[:-1]], np.r_[after[1:], np.nan]


def excess(y: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """How far each row stands out from BOTH sides [n], and the baseline it stands out from [n].

    An excursion is above (or below) the median of the ``half`` rows before it and of the ``half`` rows after it;
    its excess is the smaller of the two distances. A level change or a trend has one side at its own level (or the
    two sides on opposite sides of it), so it has no excess: only what leaves and comes back does. 0 at either end.
    """
    before, after = side_medians(y, half)
    a, b = y - before, y - after  # [n]
    same = np.sign(a) * np.sign(b) > 0
    closer = np.where(np.abs(a) <= np.abs(b), before, after)  # [n]
    r = np.where(same, np.where(np.abs(a) <= np.abs(b), a, b), 0.0)
    return np.nan_to_num(r), np.where(np.isfinite(closer), closer, y)


class TransientDetector:
    """Excursions of a 1-D series from its running median (module docstring); ``fit(y).predict()`` as ruptures.

    ``threshold``: how many robust scales a window's mean excess must reach. ``max_width``: widest window looked
    at (rows; 1, 2, 4 or 8). ``min_share``: smallest excursion reported, as a share of the series' 1–99 %
    range (a smooth series has so little noise that a wiggle of its curvature is 10 σ̂, yet invisible). NaNs must be
    removed by the caller (rows are positions in ``signal``).
    """

    def __init__(self, *, threshold: float = THRESHOLD, max_width: int = WIDTHS[-1],
                 min_share: float = MIN_SHARE) -> None:
        self.threshold = float(threshold)
        self.min_share = float(min_share)
        self.max_width = max_width
        self.y: np.ndarray | None = None

    def fit(self, signal: np.ndarray) -> TransientDetector:
        self.y = np.asarray(signal, dtype=np.float64).ravel()
        if not np.isfinite(self.y).all():
            raise ValueError("TransientDetector needs a gap-free series: drop the NaN rows first")
        return self

    def predict(self) -> list[Transient]:
        """The excursions, in order of their first row.

        Two passes: windows over rows that pass half the threshold are left out of the noise scale of the second,
        so a burst does not inflate the scale it is measured against (a burst of 8 steps touches 15 of the windows
        of width 8 around it).
        """
        if self.y is None:
            raise RuntimeError("call fit(signal) first")
        y = self.y
        n = y.size
        if n < MIN_POINTS or np.ptp(y) == 0:
            return []
        # A width's noise scale is the spread of the means of L rows over 16·L rows around them (`_scores`); a
        # shorter series holds too few independent means to measure it (20 rows give 13 overlapping means of 8,
        # about 2 independent ones, and scaled a wiggle to 60 σ̂), so only widths it can calibrate are looked at.
        ls = [L for L in WIDTHS if L <= self.max_width and 16 * L <= n] or [1]
        window = WINDOW_PER_WIDTH * ls[-1] + 1
        r, base = excess(y, window // 2)  # [n] excursion + noise, and the side it is measured from
        noise = y - running_median(y, window)  # [n] what the scale is measured on (never 0 by construction)
        floor = resolution(y)
        suspect = _scores(r, noise, ls, window, self.threshold / 2, floor)[0] != 0  # [n] left out of the scale
        zmax, wmax = _scores(r, noise, ls, window, self.threshold, floor, suspect)
        found = [self._transient(a, b, r, base, zmax, wmax) for a, b in _signed_runs(zmax)]
        spread = float(np.subtract(*np.percentile(y, [99, 1])))
        return [t for t in found if abs(t.excess) >= self.min_share * spread]

    @staticmethod
    def _transient(a: int, b: int, r: np.ndarray, base: np.ndarray, zmax: np.ndarray, wmax: np.ndarray) -> Transient:
        sign = np.sign(zmax[a])
        peak = a + int(np.argmax(sign * r[a : b + 1]))
        top = a + int(np.argmax(np.abs(zmax[a : b + 1])))
        return Transient(start=a, end=b, peak=peak, excess=float(r[peak]), baseline=float(base[peak]),
                         z=float(abs(zmax[top])), width=int(wmax[top]))


def resolution(y: np.ndarray) -> float:
    """Quantisation noise of a series on a lattice: q/√12 for its smallest non-zero move q (a share of 64
    completions moves by 1/64; a noise scale below that would make one completion a 10⁹-σ event). 0 for a series
    that moves on fewer than 5 % of its steps: a flag that is 0 but for one skipped update has no noise, and that
    update is an event."""
    moves = np.abs(np.diff(y))
    moves = moves[moves > 0]
    if moves.size < 0.05 * max(y.size - 1, 1):
        return 0.0
    return float(moves.min()) / np.sqrt(12.0)


def _scores(r: np.ndarray, noise: np.ndarray, ls: list[int], window: int, threshold: float, floor: float,
            suspect: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every row: the strongest signed z of a window of width L in ``ls`` that covers it and passes
    ``threshold`` (0 where none does) [n], and that width [n]. z = mean of ``r`` over the window / the robust
    scale of the same means of ``noise`` over 2·``window`` rows around it, leaving out windows that touch a
    ``suspect`` row, and never below the quantisation noise ``floor``/√L."""
    n = r.size
    cum = np.concatenate(([0.0], np.cumsum(r)))  # [n+1]
    cum_noise = np.concatenate(([0.0], np.cumsum(noise)))  # [n+1]
    touched = np.concatenate(([0], np.cumsum(suspect if suspect is not None else np.zeros(n, bool))))  # [n+1]
    zmax = np.zeros(n)
    wmax = np.ones(n, dtype=np.int64)
    for L in ls:
        m = (cum[L:] - cum[:-L]) / L  # [n-L+1] mean of rows t … t+L−1
        clean = np.where(touched[L:] - touched[:-L] > 0, np.nan, (cum_noise[L:] - cum_noise[:-L]) / L)  # [n-L+1]
        z = m / np.maximum(local_scale(clean, max(2 * window, 16 * L)), floor / np.sqrt(L))
        for t in np.flatnonzero(np.abs(z) > threshold):  # a Python loop over exceedances only
            cover = _core(r[t : t + L], m[t], t)  # the rows that carry the excess, not the whole window
            stronger = np.abs(z[t]) > np.abs(zmax[cover])
            zmax[cover] = np.where(stronger, z[t], zmax[cover])
            wmax[cover] = np.where(stronger, L, wmax[cover])
    return zmax, wmax


def _core(r: np.ndarray, mean: float, first: int) -> slice:
    """Rows of a significant window that carry its excess: from the first to the last row whose residual has the
    mean's sign and at least half the window's largest such residual (a one-step spike seen through a window of 8
    stays one step long; a burst keeps its length)."""
    signed = np.sign(mean) * r
    big = np.flatnonzero(signed >= 0.5 * signed.max())
    return slice(first + int(big[0]), first + int(big[-1]) + 1) if big.size else slice(first, first)


def _signed_runs(z: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs (first, last row) of non-zero ``z`` with one sign."""
    s = np.sign(z).astype(np.int8)  # [n]
    change = np.flatnonzero(np.diff(s)) + 1
    starts = np.r_[0, change]
    ends = np.r_[change - 1, s.size - 1]
    return [(int(a), int(b)) for a, b in zip(starts, ends) if s[a] != 0]


def detect_transients(signal: np.ndarray, threshold: float = THRESHOLD) -> list[Transient]:
    """Excursions of a gap-free 1-D series (``TransientDetector(threshold=...).fit(signal).predict()``)."""
    return TransientDetector(threshold=threshold).fit(signal).predict()


# ---- per run: transients of logged series at their steps, and episodes where several series move at once --------
#: Columns of a run's transients. width: steps spanned by the window width that departs most (its rows times the
#: series' step spacing, times the block length on a long run), the same unit as start_step and end_step.
TRANSIENT_COLUMNS = ["signal", "family", "step", "start_step", "end_step", "size", "baseline", "z", "width"]
#: Ratios whose denominator passes near 0 (or below it, where it is an unbiased estimate), with the series that
#: records the denominator: B_simple = Ŝ/|G|², ρ = ΔL_obs/ΔL_pred, κ = 2D/‖Δθ‖², B/B_simple. A denominator at 1e-3
#: of its usual size multiplies the value by 1000 with nothing else changing, so on a linear scale these ratios'
#: largest "transients" (z ≈ 100) are denominators near 0, and they led every table. Two rules, in this order:
#: * they are searched on asinh(y/m), m the median |y|: linear within the usual magnitude, logarithmic beyond it,
#:   where a ×100 is a step of ln 100 ≈ 4.6 instead of 100 σ̂ (a ratio's natural scale; this holds for a log that
#:   lacks the denominator too);
#: * where the run records the denominator, an excursion whose peak has |denominator| ≤ NEAR_ZERO × its median
#:   magnitude is the denominator's, not the quantity's: it is left out of the transients and named in one note.
RATIO_SERIES = {"b_simple": "grad_sq", "rho": "dloss_pred", "kappa": "step_norm", "noise_snr": "b_simple_ewma"}
NEAR_ZERO = 0.2  # a denominator five times smaller than usual makes the ratio five times larger by itself
EPISODE_COLUMNS = ["event", "step", "first_step", "last_step", "n_signals", "signals", "max_z", "n_families",
                   "chance"]
CHANCE = 0.01  # an episode must be a coincidence expected less than once in 100 runs of the same spikiness


def transient_rows(y: np.ndarray, steps: np.ndarray, max_points: int = 50_000, *, ratio: bool = False,
                   denominator: np.ndarray | None = None) -> list[dict]:
    """Transients of one gap-free series logged at ``steps``, as rows of TRANSIENT_COLUMNS (without signal, family).

    Beyond ``max_points`` values the series is cut into equal blocks and their means are searched (means, not
    medians: a spike stays visible in its block's mean); start and end steps are the first step of the first block
    and the last step of the last one. ``width`` is in steps (the window's rows × the step spacing × the block
    length). ``ratio``: a ratio whose denominator passes near 0 (``RATIO_SERIES``), searched on asinh(y/m), m its
    median |y|; size and baseline are in the series' own units all the same. ``denominator`` [n] (the ratio's,
    at the same rows; NaN where unknown): a row whose peak has |denominator| ≤ NEAR_ZERO × its median magnitude
    carries ``near_zero_denominator`` (the value there), for the caller to leave out and name.
    """
    m = float(np.median(np.abs(y))) if ratio and y.size else 0.0
    x = np.arcsinh(y / m) if m > 0 else y  # [n] the scale searched: log-magnitude beyond m for a ratio
    back = (lambda v: m * np.sinh(v)) if m > 0 else (lambda v: v)  # noqa: E731 - the searched scale → y's units
    f = max(1, int(np.ceil(x.size / max_points)))
    rows, reduced = [], x
    if f > 1:  # [ceil(n/f)] block means
        head = (x.size // f) * f
        reduced = np.append(x[:head].reshape(-1, f).mean(axis=1), [x[head:].mean()] if head < x.size else [])
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0  # steps per row (4: every 4th step)
    for t in TransientDetector().fit(reduced).predict():
        first, last = t.start * f, min((t.end + 1) * f, steps.size) - 1
        peak = t.peak * f + int(np.argmax(np.sign(t.excess) * x[t.peak * f : (t.peak + 1) * f]))  # inside its block
        baseline = float(back(t.baseline))
        rows.append(dict(step=int(steps[peak]), start_step=int(steps[first]), end_step=int(steps[last]),
                         size=float(back(t.baseline + t.excess)) - baseline, baseline=baseline, z=t.z,
                         width=int(round(t.width * f * spacing))))
        if denominator is not None and np.isfinite(denominator).any():
            d = float(denominator[peak])
            if np.isfinite(d) and abs(d) <= NEAR_ZERO * float(np.nanmedian(np.abs(denominator))):
                rows[-1]["near_zero_denominator"] = d
    return rows


def near_zero_note(left_out: dict[str, list[tuple[int, float]]], shown: int = 6) -> list[str]:
    """One note naming the ratio series' excursions left out because their denominator was near 0
    ({series: [(step, denominator there)]}, ``transient_rows``); none when there are none."""
    if not left_out:
        return []
    parts = [f"{name} at " + ", ".join(f"{step} ({RATIO_SERIES[name]} {d:.2g})" for step, d in rows[:shown])
             + (f" and {len(rows) - shown} more" if len(rows) > shown else "") for name, rows in left_out.items()]
    return [f"excursions of ratio series where their denominator was near 0 (within {NEAR_ZERO:g} of its median "
            "magnitude) left out of the transients, being the denominator's and not the quantity's: "
            + "; ".join(parts)]


def group_episodes(transients: pd.DataFrame, *, span: int, tolerance: int = 2, min_signals: int = 3,
                   min_families: int = 2, alias: dict[str, str] | None = None, chance: float = CHANCE) -> pd.DataFrame:
    """Episodes: transients of several series at about the same step (EPISODE_COLUMNS), most families first,
    then most series, then by max z.

    Transients sorted by their peak join the current group while their peak lies within ``tolerance`` steps of
    the group's first peak (anchored, as ``changepoints.events.group_transitions``, so a run full of spikes cannot
    chain them into one long "episode"). A group is an episode when

    * it holds ≥ ``min_families`` signal families with ≥ 2 series, or ≥ ``min_signals`` series (as jumps make a
      phase transition); ``alias`` maps a series to the one it duplicates (loss = β·KL counts once), and
    * so many series at once is no coincidence: series i has a transient in a window of 2·tolerance + 1 steps
      with probability p_i = (its transients) · (2·tolerance + 1) / ``span`` (steps of the run); with
      λ = Σ p_i, c series at once happen by chance P(Poisson(λ) ≥ c) per window, times ``span``/(2·tolerance + 1)
      windows per run (``chance``, the column). Spiky series (heavy-tailed ratios, sparse counts) raise λ, so
      their coincidences must involve more series. Kept when that expectation is ≤ ``chance``.

    ``step``: the strongest transient's peak; first and last step: the extent of its transients. Strongest: most
    families, then most series, then largest z.
    """
    from scipy import special  # the Poisson tail; scipy.special is loaded with the jump detector already

    if transients.empty:
        return pd.DataFrame(columns=EPISODE_COLUMNS)
    t = transients.assign(key=transients["signal"].map(lambda s: (alias or {}).get(s, s)))
    t = t.sort_values("step", kind="stable").reset_index(drop=True)
    width = 2 * tolerance + 1
    rate = float(np.minimum(1.0, t["key"].value_counts().to_numpy() * width / max(span, width)).sum())  # λ
    peaks = t["step"].to_numpy()
    group = np.zeros(peaks.size, dtype=np.int64)  # [k]
    first = peaks[0]
    for i in range(1, peaks.size):
        new = peaks[i] - first > tolerance
        group[i] = group[i - 1] + int(new)
        first = peaks[i] if new else first
    rows = []
    for _, part in t.groupby(group, sort=True):
        strongest = part.sort_values("z", ascending=False, kind="stable")
        n_keys, families = part["key"].nunique(), part["family"].nunique()
        expected = float(special.pdtrc(n_keys - 1, rate)) * max(span, width) / width  # P(≥ n_keys) × windows
        if not (n_keys >= min_signals or (families >= min_families and n_keys >= 2)) or expected > chance:
            continue  # one series, a few of one family, or as many as spiky series meet by chance: not an episode
        rows.append(dict(step=int(strongest["step"].iloc[0]), first_step=int(part["start_step"].min()),
                         last_step=int(part["end_step"].max()), n_signals=n_keys,
                         signals=",".join(strongest["signal"].drop_duplicates()), max_z=float(part["z"].max()),
                         n_families=int(families), chance=expected))
    out = pd.DataFrame(rows, columns=EPISODE_COLUMNS[1:])
    out = out.sort_values(["n_families", "n_signals", "max_z"], ascending=False, kind="stable").reset_index(drop=True)
    out.insert(0, "event", step_order_ids("E", out["step"]))
    return out
