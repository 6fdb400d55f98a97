"""Level changes in short series (8 to a few hundred points): a permutation test with a stated level.

The long-series detector (``jumps``) compares two local line fits against a threshold tuned for thousands of points;
on a series of 8–60 points there is nothing to tune it on, and its windows do not fit. Here the question is asked
once for the whole series, as a test:

* **statistic** — for every split k (both sides ≥ ``min_side`` points) the standardised Mann–Whitney statistic
  Z(k) = (Σ ranks of y[:k] − k(n+1)/2) / √(k(n−k)(n+1)/12); T = max_k |Z(k)|. Ranks make one spike count like any
  other large value, so heavy tails and outliers cannot manufacture a change.
* **null and level** — no change: the values are exchangeable (independent noise around one level, any
  distribution). The p-value is the share of random permutations of the series whose T reaches the observed one,
  (1 + #{T_π ≥ T}) / (1 + B), B = 1999, stopped early once 20 reach it (Besag & Clifford 1991), so P(p ≤ α) ≤ α
  exactly under that null (Monte Carlo error ≈ √(α(1−α)/B) ≈ 0.005 at α = 0.05). Below
  ``PERMUTATION_MIN`` points no permutation p-value can reach 0.05 (with n = 7 and the split 3|4, 2/35 = 0.057),
  so there the same split is tested with the two-sample t statistic against its exact null under Gaussian noise
  (a pivotal distribution, simulated once per n): level exact for Gaussian noise only, and said so in ``method``.
* **abrupt, not a trend** — exchangeability also fails for a smooth trend, which is not a jump. The change is kept
  only when two constant levels split at k describe the series better than a straight line and than a parabola,
  by a margin that grows with n (``abrupt_margin``), and when the change happens at k (``concentrated``: the
  medians of the 3 points on either side differ by half the size). A linear or saturating drift fails the first,
  the knee of a fast decay into a flat stretch the second; a step passes both by its whole size.
* **several changes** — binary segmentation: after a significant change each side is tested again, at the same
  level, while it has at least ``2·PERMUTATION_MIN`` points; a bump (up, then down) in ≤ 100 points is split on
  trial and kept when its levels beat a line and a parabola (``segment_steps``).

Written by hand: the permutations are one [B, n] array of ranks and one cumulative sum (O(B·n)); scipy's
``permutation_test`` would recompute a Python statistic per resample and has no scan over the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discrepancy.analysis.changepoints.trendstep import half_window, trend_step

PERMUTATION_MIN = 8  # fewest points for which a permutation p-value can fall below 0.05 (8: 2·4!·4!/8! = 0.029)
GAUSSIAN_MIN = 4  # fewest points for the Gaussian fallback (a split of 2|2)
PERMUTATIONS = 1999
BATCH, EXCEED = 100, 20  # sequential Monte Carlo: stop once 20 permutations reach the observed statistic
ALPHA = 0.05


@dataclass(frozen=True)
class StepTest:
    """One tested level change: ``index`` is the first point of the new level, ``size`` = mean after − mean before,
    ``statistic`` the max standardised rank (or t) statistic, ``p_value`` its p-value under the no-change null,
    ``method`` "permutation" or "gaussian"; ``abrupt`` whether two levels beat a line and a parabola."""

    index: int
    size: float
    statistic: float
    p_value: float
    method: str
    abrupt: bool

    def significant(self, alpha: float = ALPHA) -> bool:
        """A change at level ``alpha`` that is a step, not a trend."""
        return self.p_value <= alpha and self.abrupt


def _ranks(y: np.ndarray) -> np.ndarray:
    """Average ranks 1..n (ties share their mean rank): the Mann–Whitney convention."""
    order = np.argsort(y, kind="stable")
    ranks = np.empty(y.size)
    ranks[order] = np.arange(1, y.size + 1, dtype=np.float64)
    sy = y[order]
    starts = np.flatnonzero(np.r_[True, sy[1:] != sy[:-1]])  # first position of each run of equal values
    ends = np.r_[starts[1:], y.size]
    for a, b in zip(starts, ends):
        if b - a > 1:
            ranks[order[a:b]] = (a + b + 1) / 2.0
    return ranks


def _rank_scan(r: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """|Z(k)| for k in [lo, hi] of rank rows ``r`` [..., n] → [..., hi−lo+1]."""
    n = r.shape[-1]
    k = np.arange(lo, hi + 1, dtype=np.float64)
    s = np.cumsum(r, axis=-1)[..., lo - 1 : hi]  # Σ ranks of the first k
    return np.abs(s - k * (n + 1) / 2.0) / np.sqrt(k * (n - k) * (n + 1) / 12.0)


def _t_scan(y: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """|two-sample t (pooled variance)| for k in [lo, hi] of rows ``y`` [..., n] → [..., hi−lo+1]."""
    n = y.shape[-1]
    k = np.arange(lo, hi + 1, dtype=np.float64)
    c1 = np.cumsum(y, axis=-1)
    c2 = np.cumsum(y * y, axis=-1)
    s1, s2 = c1[..., lo - 1 : hi], c2[..., lo - 1 : hi]
    t1, t2 = c1[..., -1:], c2[..., -1:]
    rss = (s2 - s1**2 / k) + ((t2 - s2) - (t1 - s1) ** 2 / (n - k))
    sp = np.sqrt(np.maximum(rss, 0.0) / (n - 2))
    diff = (t1 - s1) / (n - k) - s1 / k
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(diff) / (sp * np.sqrt(1.0 / k + 1.0 / (n - k)))
    return np.where(np.abs(diff) > 0, t, 0.0)  # 0/0 (a constant series) is no change


_GAUSS_NULL: dict[tuple[int, int], np.ndarray] = {}


def _gaussian_null(n: int, side: int, draws: int = 20_000) -> np.ndarray:
    """Sorted max_k |t(k)| of ``draws`` iid Gaussian series of length n: the statistic's exact null (up to Monte
    Carlo), the same for every level and scale. Fixed seed, cached per (n, side)."""
    key = (n, side)
    if key not in _GAUSS_NULL:
        z = np.random.default_rng(12345 + n).standard_normal((draws, n))
        _GAUSS_NULL[key] = np.sort(_t_scan(z, side, n - side).max(axis=1))
    return _GAUSS_NULL[key]


def abrupt_margin(n: int) -> float:
    """How much better than a line or parabola two levels must fit, in units of their residual variance.

    (RSS_smooth − RSS_step) / (RSS_step/(n−2)) ≥ margin. Under a linear drift that the rank test calls significant
    its 95th percentile is 5–9 at every n from 8 to 256 (simulated), while a step of 5σ in the middle gives ≥ 17
    from n = 24 on but only −0.1 at its 5th percentile at n = 8: so the margin grows from −1 at 8 points (a step
    and a drift cannot be told apart there; the permutation level holds for noise around one level) to 8 by 26 points,
    then like 2 ln n + 2, the scan's own growth, so long weak drifts do not pass.
    """
    return float(np.clip(0.5 * (n - 10), -1.0, max(8.0, 2.0 * np.log(n) + 2.0)))


def levels_gap(y: np.ndarray, cuts: list[int]) -> float:
    """(RSS of the best line or parabola − RSS of constant levels between ``cuts``) / that RSS's variance."""
    bounds = [0, *sorted(cuts), y.size]
    rss = sum(float(np.sum((y[a:b] - y[a:b].mean()) ** 2)) for a, b in zip(bounds[:-1], bounds[1:]))
    x = np.linspace(-1.0, 1.0, y.size)
    smooth = min(float(np.sum((y - np.polyval(np.polyfit(x, y, d), x)) ** 2)) for d in (1, 2))
    if rss <= 0.0:
        return np.inf if smooth > 0.0 else 0.0
    return (smooth - rss) / (rss / max(y.size - len(bounds) + 1, 1))


def smooth_gap(y: np.ndarray, k: int) -> float:
    """(RSS of the best line or parabola − RSS of two levels split at k) / residual variance of the two levels."""
    return levels_gap(y, [k])


def concentrated(y: np.ndarray, k: int, size: float, s: int = 3) -> bool:
    """The change happens at k: medians of the s points after and before k differ by at least half the two-level
    size, in its direction. A smooth decay into a flat stretch fits two levels well too, but at its knee the
    level moves by a slope's worth over s points, not by the whole change."""
    s = max(1, min(s, k, y.size - k))
    local = float(np.median(y[k : k + s]) - np.median(y[k - s : k]))
    return local * np.sign(size) >= 0.5 * abs(size)


def _permutation_p(r: np.ndarray, stat: float, lo: int, hi: int, permutations: int, rng: np.random.Generator
                   ) -> float:
    """Permutation p-value of the rank scan's maximum, with Besag & Clifford's (1991) sequential stop: draw
    permutations in batches until EXCEED of them reach ``stat`` (then p = EXCEED / drawn) or all are drawn (then
    p = (1 + exceedances) / (1 + permutations)). Both are valid p-values; a series far from significant stops
    after ~2·EXCEED draws instead of PERMUTATIONS, which is most of the cost of the window test's stretches."""
    done = hits = 0
    while done < permutations:
        size = min(BATCH, permutations - done)
        perm = rng.permuted(np.broadcast_to(r, (size, r.size)), axis=1)  # [size, n]
        hits += int(np.count_nonzero(_rank_scan(perm, lo, hi).max(axis=1) >= stat - 1e-12))
        done += size
        if hits >= EXCEED:
            return hits / done
    return (1.0 + hits) / (1.0 + permutations)


def step_test(y: np.ndarray, *, min_side: int = 2, permutations: int = PERMUTATIONS, seed: int = 0,
              floor: float = 0.0) -> StepTest | None:
    """Test one level change in ``y`` (finite values, n ≥ GAUSSIAN_MIN); None when too short or constant.

    ``floor``: changes no larger than this are never significant (p = 1), e.g. the resolution of the data.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    side = max(1, min_side)
    if n < max(GAUSSIAN_MIN, 2 * side) or np.ptp(y) == 0:
        return None
    lo, hi = side, n - side
    if n >= PERMUTATION_MIN:
        r = _ranks(y)
        obs = _rank_scan(r, lo, hi)  # [hi-lo+1]
        k = lo + int(np.argmax(obs))
        stat, method = float(obs.max()), "permutation"
        p = _permutation_p(r, stat, lo, hi, permutations, np.random.default_rng(seed))
    else:
        obs = _t_scan(y, lo, hi)
        k = lo + int(np.argmax(obs))
        null = _gaussian_null(n, side)
        stat, method = float(obs.max()), "gaussian"
        p = (1.0 + null.size - np.searchsorted(null, stat, side="left")) / (1.0 + null.size)
    size = float(y[k:].mean() - y[:k].mean())
    if abs(size) <= floor:
        p = 1.0
    return StepTest(index=k, size=size, statistic=stat, p_value=float(p), method=method,
                    abrupt=smooth_gap(y, k) >= abrupt_margin(n) and concentrated(y, k, size))


def segment_steps(y: np.ndarray, *, alpha: float = ALPHA, min_side: int = 2, floor: float = 0.0,
                  max_changes: int = 8, trend: bool = False) -> list[StepTest]:
    """Significant abrupt level changes of ``y`` by binary segmentation, sorted by index (indices into ``y``).

    The first test has level ``alpha`` under the no-change null; each side of a change is tested again at the same
    level while it has ≥ 2·PERMUTATION_MIN points. A significant change that is not a step over its stretch (a bump,
    up then down, which a parabola fits as well as two levels) is split once more on trial; the steps found in its
    halves are kept only if, together, their levels fit the whole stretch better than a line and a parabola by the
    same margin a single step needs (a rise and a fall are two steps; a trend cut in two is still a trend).

    ``trend``: a significant change that is not a step between two levels is first tested as a level break on
    top of a local trend (``trendstep.trend_step``, same level, run only after the rank test rejected); a break
    found so (``method`` "trend", size = the discontinuity between the two local lines, p = the larger of the two
    p-values) splits the stretch like a step. Trend breaks are resolved to the line window h: one closer than h to
    a trend break already found is not reported (``_unresolved``).
    """
    y = np.asarray(y, dtype=np.float64)
    found: dict[int, StepTest] = {}
    trials: list[tuple[int, int, StepTest, list[int]]] = []  # stretches split on trial: the split, the steps found
    stack: list[tuple[int, int, int]] = [(0, y.size, -1)]  # (start, end, index of the trial it belongs to or −1)
    resolved: list[tuple[int, int]] = []  # (trend break, line window h of the stretch it was found in)
    while stack and len(found) < max_changes:
        a, b, trial = stack.pop()
        res = step_test(y[a:b], min_side=min_side, floor=floor)
        if res is None or res.p_value > alpha:
            continue
        k = a + res.index
        brk = None if res.abrupt or not trend else _trend_break(y[a:b], a, res.p_value, alpha)
        if brk is not None and _unresolved(brk.index, resolved):
            continue  # inside the line window of a trend break already found: the same event seen again
        if brk is not None:
            found[brk.index] = brk
            resolved.append((brk.index, half_window(b - a)))
            stack += [(s, e, trial) for s, e in ((a, brk.index), (brk.index, b)) if e - s >= 2 * PERMUTATION_MIN]
        elif res.abrupt:
            found[k] = StepTest(k, res.size, res.statistic, res.p_value, res.method, res.abrupt)
            if trial >= 0:
                trials[trial][3].append(k)
            stack += [(s, e, trial) for s, e in ((a, k), (k, b)) if e - s >= 2 * PERMUTATION_MIN]
        elif trial < 0 and b - a <= TRIAL_MAX:
            trials.append((a, b, StepTest(k, res.size, res.statistic, res.p_value, res.method, False), []))
            stack += [(s, e, len(trials) - 1) for s, e in ((a, k), (k, b)) if e - s >= PERMUTATION_MIN]
    for a, b, split, ks in trials:
        if not ks:
            continue
        cuts = sorted({split.index, *ks})
        if levels_gap(y[a:b], [k - a for k in cuts]) >= abrupt_margin(b - a):
            found.setdefault(split.index, StepTest(split.index, split.size, split.statistic, split.p_value,
                                                   split.method, True))
        else:
            for k in ks:
                found.pop(k, None)
    bounds = [0, *sorted(found), y.size]  # sizes between the neighbouring steps, not over a tested stretch
    out = [found[k] if found[k].method == "trend" else
           StepTest(k, float(y[k:c].mean() - y[a:k].mean()), found[k].statistic, found[k].p_value,
                    found[k].method, True) for a, k, c in zip(bounds[:-2], bounds[1:-1], bounds[2:])]
    # a spike at a tested stretch's end is no step (a trend break carries its own test of that)
    return [s for s in out if s.method == "trend" or concentrated(y, s.index, s.size)]


def _unresolved(k: int, resolved: list[tuple[int, int]]) -> bool:
    """A trend break at ``k`` lies closer than the line window h to a trend break already found (each with the h
    of the stretch it was found in): the trend test's resolution.

    A break at j was found with straight lines through the h points on either side of it; a second break within h
    of j lies inside one of those lines, so the two cannot both be level breaks under the model that found the
    first. What does give such a pair is one bend seen twice: around a peak or a kink, d(k) is zero at the bend and
    of opposite signs a few points either side (a sharp peak in 54 points, h = 8: two breaks closer than h in 37 of 40
    planted series without this rule, in none with it, and a change reported at the peak in all 40 either way;
    tests/analysis/changepoints/test_trendstep.py). The first found, the one tested on the longer stretch, is kept."""
    return any(abs(k - j) < h for j, h in resolved)


def _trend_break(y: np.ndarray, offset: int, p_rank: float, alpha: float) -> StepTest | None:
    """A level break on top of a local trend in ``y`` (``trendstep``), at level ``alpha``, or None."""
    res = trend_step(y)
    if res is None:
        return None
    k, d, stat, p, abrupt = res
    if p > alpha or not abrupt:
        return None
    return StepTest(offset + k, d, stat, max(p, p_rank), "trend", True)


TRIAL_MAX = 100  # bumps are split on trial in stretches up to a probe curve's length (longer: the window test)
SEGMENT_MAX = 1000  # longer stretches are left to the window test, which has the power there (and no quadratic cost)
SEGMENT_SIDE = 3  # a level needs 3 points: a one- or two-point excursion at a stretch's end is a spike, not a level


def segment_jumps(x: np.ndarray, found: list[int], *, alpha: float = ALPHA, floor: float = 0.0,
                  trend: bool = False) -> list[StepTest]:
    """Level changes the window test missed: ``segment_steps`` on every stretch of PERMUTATION_MIN–SEGMENT_MAX
    points between the jumps already ``found`` (the whole series when there are none), indices into ``x``.

    The window test needs thousands of points to reach its power (a 5σ step in 100 points is found in half of the
    trials); a test of the whole stretch at once finds it in all of them, at its stated level.

    One false-alarm level per series: a stretch of m of the n points is tested at ``alpha``·m/n, so the levels of
    the disjoint stretches add up to at most ``alpha`` (Bonferroni, the share spent where the points are), as the
    whole series is tested at ``alpha`` when the window test found nothing. Testing each stretch at ``alpha``
    instead made the series' level grow with the number of jumps the window test found (k + 1 stretches: up to
    (k + 1)·``alpha``). A stretch whose share falls below 1/(1 + PERMUTATIONS) = 0.0005, the permutation p-value's
    resolution (m/n < 1 % at 5 %: a stretch of 100 points in a series of over 10,000, every stretch in one of over
    100,000), is never called a change: it is left to the window test, which has its power at those lengths.
    """
    bounds = [0, *sorted(found), x.size]
    out: list[StepTest] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if PERMUTATION_MIN <= b - a <= SEGMENT_MAX:
            level = alpha * (b - a) / x.size
            if level < 1.0 / (1 + PERMUTATIONS):
                continue  # no permutation p-value reaches it: the same output, without the cost
            for s in segment_steps(x[a:b], alpha=level, min_side=SEGMENT_SIDE, floor=floor, trend=trend):
                out.append(StepTest(a + s.index, s.size, s.statistic, s.p_value, s.method, s.abrupt))
    return out
