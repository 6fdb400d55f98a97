"""Emergence and forgetting of a skill across snapshots (docs/definitions.md §6, Schaeffer et al. 2023).

Two curves per skill over the snapshot steps: the continuous score c (mean gold-answer log-prob per answer token) and
exact match e.

- A *change point* of c: a level change that the short-series test of the analysis (``changepoints.steptest``: a
  permutation test at level ``alpha`` = 0.05 from 8 snapshots on, the same statistic against its exact Gaussian null
  below 8; a step, not a trend) finds significant and that is at least ``min_jump`` nats (0.1 by default: between
  identical snapshots the noise is zero, and any change would otherwise be infinitely significant). Rises and falls
  are told apart: a rise can be emergence, a fall is a skill getting worse.
- A *persistent rise* of e at index j: mean(e[j:]) − mean(e[:j]) ≥ ``min_rise``, seen at two snapshots at least
  (j ≤ n − 2), with ≥ 80 % of the later e ≥ mean(e[:j]) + ``min_rise``/2 (it does not fall back; a greedy answer
  near its threshold may flicker at a snapshot or two); *sharp* when the step of e into j carries ≥ ``share`` of its
  range. A *persistent drop* is the same, mirrored, and needs the skill seen at two snapshots before it.

Verdicts. Rises: **genuine** = change point in c and persistent rise of e within ``tol`` snapshots of each other;
**mirage** = sharp persistent rise of e while c has no rising change point (a thresholded metric of a smooth score);
**latent** = rising change point in c while e has no persistent rise; **gradual** = persistent but smooth rise of e
with smooth c. Drops: **forgetting** = persistent drop of e (the evidence says whether c fell abruptly with it);
**regression** = falling change point in c while e has no persistent drop (the model became less sure of the right
answer before it lost it). **none** = nothing moves. When a curve both rises and drops, the larger change of e (or
of c, when e moves in neither direction) sets the verdict and the evidence names the other. When e was not measured
(log-prob only scoring, ``--no-generate``), the verdict is latent, regression or none, and the evidence says so. The
step is the first snapshot after the change.

Evidence names the step, the size and the test: p-value and statistic of the log-prob change, and whether the
permutation or the Gaussian small-sample null was used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.steptest import ALPHA, StepTest, segment_steps
from discrepancy.runfile.results import EMERGENCE_COLUMNS

KINDS = ("genuine", "mirage", "latent", "gradual", "forgetting", "regression", "none")
HOLD = 0.8  # a persistent change: ≥ 80 % of the snapshots on the far side stay beyond half of it


@dataclass(frozen=True)
class ChangePoint:
    """A level change between snapshot index − 1 and index: its size (after − before), the test's statistic and
    p-value, and which null the p-value is against ("permutation" or "gaussian")."""

    index: int
    size: float
    statistic: float
    p_value: float
    method: str


@dataclass(frozen=True)
class Emergence:
    """The verdict for one skill with the numbers behind it."""

    suite: str
    skill: str
    kind: str
    step: float  # NaN when nothing changed
    logprob_jump_step: float
    logprob_jump: float
    em_rise_step: float  # the step of the persistent change of exact match (a rise, or for forgetting the drop)
    em_before: float
    em_after: float
    evidence: str


def change_points(y: np.ndarray, min_size: float = 0.0, alpha: float = ALPHA) -> list[ChangePoint]:
    """Significant abrupt level changes of a score curve, in order (none for fewer than 4 values or any NaN)."""
    y = np.asarray(y, dtype=float)
    if y.size < 4 or not np.isfinite(y).all():
        return []  # too few snapshots to tell a step from noise (or a missing score)
    # a floor keeps float rounding of identical snapshots from becoming an infinitely significant step
    floor = max(min_size, 1e-12 * max(1.0, float(np.abs(y).max())))
    return [_cp(s) for s in segment_steps(y, alpha=alpha, min_side=2, floor=floor)]


def _cp(s: StepTest) -> ChangePoint:
    return ChangePoint(s.index, s.size, s.statistic, s.p_value, s.method)


def change_point(y: np.ndarray, min_size: float = 0.0, rises_only: bool = False, falls_only: bool = False
                 ) -> ChangePoint | None:
    """The largest significant change point of ``y`` (only rises, or only falls, when asked), or None."""
    found = [c for c in change_points(y, min_size) if not (rises_only and c.size <= 0) and not (falls_only and c.size >= 0)]
    return max(found, key=lambda c: abs(c.size)) if found else None


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
    persistent = after - before >= min_rise and np.mean(e[j:] >= before + min_rise / 2) >= HOLD
    rng = e.max() - e.min()
    sharp = persistent and rng > 0 and (e[j] - e[j - 1]) >= share * rng
    return j, before, after, bool(persistent), bool(sharp)


def em_drop(e: np.ndarray, min_rise: float = 0.25, share: float = 0.5) -> tuple[int, float, float, bool, bool]:
    """``em_rise`` of the mirrored curve: (index, mean before, mean after, persistent, sharp) of a drop, which also
    needs the skill to have been there: two snapshots at least before it, every one of them ≥ the level after +
    ``min_rise``/2 (a one-snapshot blip of exact match is not a skill that was lost)."""
    e = np.asarray(e, dtype=float)
    if e.size < 4:
        return 0, np.nan, np.nan, False, False
    j, before, after, persistent, sharp = em_rise(-e[1:], min_rise, share)  # j ≥ 1 in e[1:]: two snapshots before
    j += 1
    before, after = float(e[:j].mean()), float(e[j:].mean())
    persistent = persistent and np.mean(e[:j] >= after + min_rise / 2) >= HOLD and before - after >= min_rise
    return j, before, after, bool(persistent), bool(sharp and persistent)


def _lp_text(cp: ChangePoint | None, steps: np.ndarray, direction: str) -> str:
    if cp is None:
        return f"log-prob smooth (no {direction} change point)"
    null = "permutation" if cp.method == "permutation" else "Gaussian small-sample"
    return (f"log-prob {'jump' if cp.size > 0 else 'drop'} {cp.size:+.3g} at step {steps[cp.index]:g} "
            f"({null} test p = {cp.p_value:.2g}, statistic {cp.statistic:.3g})")


def _em_text(j: int, before: float, after: float, persistent: bool, sharp: bool, steps: np.ndarray,
             min_rise: float, word: str) -> str:
    if not persistent:
        return f"exact match flat (best {word} {after - before:+.2f}, needs {min_rise})"
    return f"exact match {before:.2f}→{after:.2f} from step {steps[j]:g}" + (" (sharp)" if sharp else " (gradual)")


def classify_curve(steps: np.ndarray, logprob: np.ndarray, em: np.ndarray | None, suite: str = "", skill: str = "",
                   min_rise: float = 0.25, tol: int = 1, min_jump: float = 0.1) -> Emergence:
    """Classify one skill from its two curves (same length, ordered by step); see the module docstring.

    ``min_jump`` (nats per answer token) is the smallest log-prob change that can count as a change point. ``em`` is
    None (or all NaN) when exact match was not measured: then only latent, regression or none can be told.
    """
    steps = np.asarray(steps, dtype=float)
    rise = change_point(logprob, min_size=min_jump, rises_only=True)
    fall = change_point(logprob, min_size=min_jump, falls_only=True)
    if em is None or not np.isfinite(np.asarray(em, dtype=float)).any():
        cp = max((c for c in (rise, fall) if c), key=lambda c: abs(c.size), default=None)
        kind = "none" if cp is None else ("latent" if cp.size > 0 else "regression")
        lp_step = float(steps[cp.index]) if cp else np.nan
        return Emergence(suite, skill, kind, lp_step, lp_step, float(cp.size) if cp else np.nan, np.nan, np.nan,
                         np.nan, f"{_lp_text(cp, steps, 'upward' if kind != 'regression' else 'downward')}; exact "
                         "match not measured (scored without generation)")
    em = np.nan_to_num(np.asarray(em, dtype=float), nan=0.0)  # a snapshot without a graded answer scores 0
    up, down = em_rise(em, min_rise), em_drop(em, min_rise)
    gain, loss = (up[2] - up[1]) if up[3] else 0.0, (down[1] - down[2]) if down[3] else 0.0
    if loss > gain or (not up[3] and not down[3] and fall and (not rise or abs(fall.size) > abs(rise.size))):
        return _dropped(steps, fall, down, suite, skill, min_rise, other=_lp_text(rise, steps, "upward") if rise else "")
    return _rose(steps, rise, up, suite, skill, min_rise, tol)


def _rose(steps: np.ndarray, cp: ChangePoint | None, up: tuple, suite: str, skill: str, min_rise: float,
          tol: int) -> Emergence:
    """Verdict of a rise (genuine, mirage, latent, gradual) or of nothing (none)."""
    j, before, after, persistent, sharp = up
    lp_step = float(steps[cp.index]) if cp else np.nan
    em_step = float(steps[j]) if persistent else np.nan
    lp_txt, em_txt = _lp_text(cp, steps, "upward"), _em_text(j, before, after, persistent, sharp, steps, min_rise,
                                                              "rise")
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
    return Emergence(suite, skill, kind, float(step), lp_step, float(cp.size) if cp else np.nan, em_step, before,
                     after, f"{lp_txt}; {em_txt}")


def _dropped(steps: np.ndarray, cp: ChangePoint | None, down: tuple, suite: str, skill: str, min_rise: float,
             other: str) -> Emergence:
    """Verdict of a drop: forgetting (exact match falls and stays down) or regression (only log-prob falls)."""
    j, before, after, persistent, sharp = down
    lp_step = float(steps[cp.index]) if cp else np.nan
    em_step = float(steps[j]) if persistent else np.nan
    kind, step = ("forgetting", em_step) if persistent else ("regression", lp_step)
    text = f"{_lp_text(cp, steps, 'downward')}; {_em_text(j, before, after, persistent, sharp, steps, min_rise, 'drop')}"
    return Emergence(suite, skill, kind, float(step), lp_step, float(cp.size) if cp else np.nan, em_step, before,
                     after, text + (f"; also {other}" if other else ""))


def classify_skills(table: pd.DataFrame, min_rise: float = 0.25, tol: int = 1, min_jump: float = 0.1) -> pd.DataFrame:
    """One row per (suite, skill) from a tidy table with columns step, suite, skill, metric, value.

    Skills without exact match (log-prob only scoring) are judged on log-prob alone (latent, regression or none),
    and their exact-match fields stay NaN: not measured is not zero.
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
