"""Emergence of a skill across snapshots, classified as genuine, mirage or latent (SPEC §6, Schaeffer et al. 2023).

Two curves per skill over the snapshot steps: the continuous score c (mean gold-answer log-prob) and exact match e.

- A *change point* of c: the step with the largest single RISE, kept only when it stands out from the noise and
  the trend (see :func:`fallback_change_point`; the analysis jump detector on curves long enough for it), and is
  at least ``min_jump`` nats per answer token (0.1 by default). A fall of the gold answer's log-prob is a skill
  getting worse, never emergence, so only rises count.
- A *persistent rise* of e at index j: mean(e[j:]) − mean(e[:j]) ≥ ``min_rise``, seen at two snapshots at least
  (j ≤ n − 2), with every later e ≥ mean(e[:j]) + ``min_rise``/2 (it never falls back); *sharp* when the step of
  e into j carries ≥ ``share`` of its range.

Classes: **genuine** = change point in c and persistent rise of e within ``tol`` snapshots of each other;
**mirage** = sharp persistent rise of e while c has no change point (a thresholded metric of a smooth score);
**latent** = change point in c while e has no persistent rise; **gradual** = persistent but smooth rise of e with
smooth c; **none** = neither moves. When both move but more than ``tol`` snapshots apart, the rise of e is not
matched by a jump of c, so it is judged as if c had none (mirage when sharp, else gradual) and the evidence names
the unmatched log-prob jump. When e was not measured (log-prob only scoring, ``--no-generate``) the verdict is latent
or none and the evidence says exact match was not measured. The emergence step is the first snapshot after the rise
(or after the jump).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.jumps import MIN_POINTS, detect_jumps
from discrepancy.runfile.results import EMERGENCE_COLUMNS

KINDS = ("genuine", "mirage", "latent", "gradual", "none")


@dataclass(frozen=True)
class ChangePoint:
    """A jump between snapshot index − 1 and index: its size, size over noise (z) and share of total variation."""

    index: int
    size: float
    z: float
    share: float


@dataclass(frozen=True)
class Emergence:
    """The verdict for one skill with the numbers behind it."""

    suite: str
    skill: str
    kind: str
    step: float  # NaN when nothing emerged
    logprob_jump_step: float
    logprob_jump: float
    em_rise_step: float
    em_before: float
    em_after: float
    evidence: str


def fallback_change_point(y: np.ndarray, z_min: float = 4.0, share_min: float = 0.5,
                          min_size: float = 0.0, rises_only: bool = False) -> ChangePoint | None:
    """The largest single step of ``y`` (the largest rise with ``rises_only``) when it is a jump, else None.

    Probe curves have few points (one per snapshot), so instead of a segmentation search we test the one candidate
    that matters: the step j with the largest change. Its excess over the typical step (the median of the other
    steps, which removes a linear trend) must exceed ``z_min`` noise units, with the noise scale σ̂ =
    1.4826·MAD(Δy)/√2 of SPEC §4 taken from the other steps, and must carry at least ``share_min`` of the curve's
    detrended total variation. A smooth ramp, however steep, has no such step. A step smaller than ``min_size``
    never counts: between identical snapshots the noise is zero, and any change would otherwise be infinitely
    significant.
    """
    y = np.asarray(y, dtype=float)
    if y.size < 4 or not np.isfinite(y).all():
        return None  # too few snapshots to tell a jump from the trend (or a missing score)
    dy = np.diff(y)
    dev = dy - np.median(dy)
    j = int(np.argmax(dev if rises_only else np.abs(dev)))
    if rises_only and dy[j] <= 0:
        return None  # the curve never rises more than its trend: nothing emerged
    others = np.delete(dy, j)
    trend = np.median(others)
    excess = abs(dy[j] - trend)
    sigma = 1.4826 * np.median(np.abs(others - trend)) / np.sqrt(2)
    detrended_tv = np.abs(dy - trend).sum()
    z = excess / (np.sqrt(2) * sigma) if sigma > 0 else np.inf
    share = excess / detrended_tv if detrended_tv > 0 else 0.0
    # numerical guard: a flat curve (every step equal) has no jump, not a 0/0 one
    if excess <= max(min_size, 1e-12 * max(1.0, np.abs(y).max())) or z < z_min or share < share_min:
        return None
    return ChangePoint(index=j + 1, size=float(dy[j]), z=float(z), share=float(share))


def change_point(y: np.ndarray, min_size: float = 0.0, rises_only: bool = False) -> ChangePoint | None:
    """Change point of a score curve (only upward ones with ``rises_only``).

    Curves long enough for the analysis jump detector (``discrepancy.analysis.changepoints.jumps``, SPEC §4) use
    it, and the largest detected jump is reported; shorter curves use :func:`fallback_change_point`, which is built
    for a handful of snapshots.
    """
    y = np.asarray(y, dtype=float)
    if y.size < MIN_POINTS or not np.isfinite(y).all():
        return fallback_change_point(y, min_size=min_size, rises_only=rises_only)
    try:
        found = [int(i) for i in detect_jumps(y) if 0 < int(i) < y.size]
    except Exception as exc:  # a detector failure must not stop probing
        warnings.warn(f"jump detector failed on a probe curve ({exc}); using the fallback test", stacklevel=2)
        return fallback_change_point(y, min_size=min_size, rises_only=rises_only)
    found = [i for i in found if abs(y[i] - y[i - 1]) > min_size and (y[i] > y[i - 1] or not rises_only)]
    if not found:
        return None
    idx = max(found, key=lambda i: abs(y[i] - y[i - 1]))
    dy = np.diff(y)
    others = np.delete(dy, idx - 1)
    sigma = 1.4826 * np.median(np.abs(others - np.median(others))) / np.sqrt(2)
    z = abs(dy[idx - 1]) / (np.sqrt(2) * sigma) if sigma > 0 else np.inf
    tv = np.abs(dy).sum()
    return ChangePoint(idx, float(dy[idx - 1]), float(z), float(abs(dy[idx - 1]) / tv) if tv > 0 else 0.0)


def em_rise(e: np.ndarray, min_rise: float = 0.25, share: float = 0.5) -> tuple[int, float, float, bool, bool]:
    """Best step fit of exact match: (index, mean before, mean after, persistent, sharp)."""
    e = np.asarray(e, dtype=float)
    if e.size < 2:
        return 0, np.nan, np.nan, False, False
    if e.size < 3:
        return 1, float(e[0]), float(e[-1]), False, False  # a rise needs two snapshots after it
    gains = [e[j:].mean() - e[:j].mean() for j in range(1, e.size - 1)]  # at least two snapshots after j
    j = int(np.argmax(gains)) + 1
    before, after = float(e[:j].mean()), float(e[j:].mean())
    persistent = after - before >= min_rise and e[j:].min() >= before + min_rise / 2
    rng = e.max() - e.min()
    sharp = persistent and rng > 0 and (e[j] - e[j - 1]) >= share * rng
    return j, before, after, bool(persistent), bool(sharp)


def classify_curve(steps: np.ndarray, logprob: np.ndarray, em: np.ndarray | None, suite: str = "", skill: str = "",
                   min_rise: float = 0.25, tol: int = 1, min_jump: float = 0.1) -> Emergence:
    """Classify one skill from its two curves (same length, ordered by step); see the module docstring.

    ``min_jump`` (nats per answer token) is the smallest log-prob rise that can count as a change point. ``em`` is
    None (or all NaN) when exact match was not measured: then only latent or none can be told.
    """
    steps = np.asarray(steps, dtype=float)
    cp = change_point(logprob, min_size=min_jump, rises_only=True)
    lp_step = steps[cp.index] if cp else np.nan
    lp_txt = (f"log-prob jump {cp.size:+.3g} at step {lp_step:g} (z={cp.z:.3g}, {cp.share:.0%} of variation)"
              if cp else "log-prob smooth (no upward change point)")
    jump = float(cp.size) if cp else np.nan
    if em is None or not np.isfinite(np.asarray(em, dtype=float)).any():
        kind, step = ("latent", lp_step) if cp else ("none", np.nan)
        return Emergence(suite, skill, kind, float(step), float(lp_step), jump, np.nan, np.nan, np.nan,
                         f"{lp_txt}; exact match not measured (scored without generation)")
    em = np.nan_to_num(np.asarray(em, dtype=float), nan=0.0)  # a snapshot without a graded answer scores 0
    j, before, after, persistent, sharp = em_rise(em, min_rise)
    em_step = steps[j] if persistent else np.nan
    em_txt = (f"exact match {before:.2f}→{after:.2f} from step {em_step:g}" + (" (sharp)" if sharp else " (gradual)")
              if persistent else f"exact match flat (best rise {after - before:+.2f} < {min_rise})")
    if cp and persistent and abs(cp.index - j) <= tol:
        kind, step = "genuine", em_step
    elif persistent:  # no log-prob jump, or one too far from the rise of exact match to explain it
        kind, step = ("mirage" if sharp else "gradual"), em_step
        if cp:
            em_txt += f"; the log-prob jump is {abs(cp.index - j)} snapshots away, so it does not match the rise"
    elif cp:
        kind, step = "latent", lp_step
    else:
        kind, step = "none", np.nan
    return Emergence(suite, skill, kind, float(step), float(lp_step), jump, float(em_step), before, after,
                     f"{lp_txt}; {em_txt}")


def classify_skills(table: pd.DataFrame, min_rise: float = 0.25, tol: int = 1, min_jump: float = 0.1) -> pd.DataFrame:
    """One row per (suite, skill) from a tidy table with columns step, suite, skill, metric, value.

    Skills without exact match (log-prob only scoring) are judged on log-prob alone (latent or none), and their
    exact-match fields stay NaN: not measured is not zero.
    """
    rows = []
    for (suite, skill), g in table.groupby(["suite", "skill"], sort=False):
        wide = g.pivot_table(index="step", columns="metric", values="value", dropna=False).sort_index()
        if "logprob" not in wide:
            continue
        em = wide["exact_match"].to_numpy(dtype=float) if "exact_match" in wide else None
        rows.append(asdict(classify_curve(wide.index.to_numpy(), wide["logprob"].to_numpy(), em,
                                          str(suite), str(skill), min_rise, tol, min_jump)))
    return pd.DataFrame(rows, columns=EMERGENCE_COLUMNS)  # Emergence's fields, as probe_emergence.csv declares
