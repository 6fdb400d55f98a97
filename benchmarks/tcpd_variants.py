"""Variants of the jump detector tried against its per-series losses on TCPD and not kept (``bench_tcpd.py``).

Each variant is the default detector with one internal rule swapped for the run (``mock.patch`` on the module that
holds it), so the package keeps one code path; ``bench_tcpd.py`` scores them beside the kept detector, on all 13
series, the split halves and the quality-control series, and docs/changepoints.md says why each was tried and why it
was dropped. None has a number chosen among values: each rule is the one stated in its docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from unittest import mock

import numpy as np
from scipy import ndimage, stats

from discrepancy.analysis.changepoints import jumps as jumps_mod
from discrepancy.analysis.changepoints import seasonal as seasonal_mod
from discrepancy.analysis.changepoints import steptest as step_mod
from discrepancy.analysis.changepoints import trendstep as trend_mod
from discrepancy.analysis.changepoints.noise import blockwise_mad_scale, local_scale, noise_floor

_SEGMENT_JUMPS = jumps_mod.segment_jumps
_STEP_TEST = step_mod.step_test
_LINES_FIT = trend_mod._lines_fit


def _wandering_guard(x: np.ndarray, found: list[int], **kw: object) -> list:
    """Rank-test steps in a stretch that wanders (integrated noise model) kept only if the two-line discontinuity
    at their split is also significant under the trend-break test's integrated AR(1) null."""
    out, bounds = _SEGMENT_JUMPS(x, found, **kw), [0, *sorted(found), x.size]
    keep = []
    for st in out:
        i = int(np.searchsorted(bounds, st.index, side="right"))
        seg = x[bounds[i - 1] : bounds[i]]
        rho, integrated = trend_mod.noise_model(seg)
        k, _, z = trend_mod.discontinuity_scan(seg)
        near = np.abs(np.nan_to_num(z[np.abs(k - (st.index - bounds[i - 1])) <= 1]))
        if st.method != "permutation" or not integrated or near.size == 0:
            keep.append(st)
            continue
        null = trend_mod.null_maxima(seg.size, rho, True)
        if (1 + null.size - np.searchsorted(null, near.max())) / (1 + null.size) <= kw.get("alpha", 0.05):
            keep.append(st)
    return keep


def _kappa_off_changes(d: np.ndarray, x: np.ndarray, w: int) -> np.ndarray:
    """The window test's z with κ re-estimated (≤ 5 rounds) without ±w around every |z| > 5 (a noise scale not
    inflated by the changes themselves)."""
    z, ok = np.full(d.size, np.nan), np.isfinite(d)
    if ok.sum() < 3:
        return z
    dscale = local_scale(np.diff(x), 16 * w)
    sparse = bool(np.any(dscale > blockwise_mad_scale(np.diff(x), 16 * w)[1]))
    se = np.maximum(np.append(dscale, dscale[-1])[ok] / np.sqrt(2.0), noise_floor(x)) * np.sqrt(8.0 / w)
    r = (d[ok] - blockwise_mad_scale(d[ok], 16 * w)[0]) / se
    use = np.ones(r.size, dtype=bool)
    for _ in range(5):
        kappa = max(float(local_scale(r[use], int(use.sum()))[0]), 1.0 if sparse else jumps_mod.KAPPA_MIN)
        new = np.ones(r.size, dtype=bool)
        for b in np.flatnonzero(np.abs(r / kappa) > 5.0):
            new[max(0, b - w) : b + w + 1] = False
        if new.sum() < r.size / 4 or np.array_equal(new, use):
            break
        use = new
    z[ok] = r / max(float(local_scale(r[use], int(use.sum()))[0]), 1.0 if sparse else jumps_mod.KAPPA_MIN)
    return z


def _scan_with_sigma(sigma_of: Callable) -> Callable:
    """The trend-break scan with σ̂ at each split from ``sigma_of(sums, n, h, k, a, b)`` ([..., K]); its null is
    simulated with the same statistic (the variants empty the null cache for their run)."""
    def scan(y: np.ndarray, side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.asarray(y, dtype=np.float64)
        n = y.shape[-1]
        h, side = min(trend_mod.half_window(n), n), trend_mod.min_side(n) if side is None else side
        k = np.arange(side, n - side + 1)
        sums = trend_mod._sums(y - y[..., :1])
        a, b = np.maximum(k - h, 0), np.minimum(k + h, n)
        lv, lvar, _ = trend_mod._line_at(sums, a, k, k - 0.5)
        rv, rvar, _ = trend_mod._line_at(sums, k, b, k - 0.5)
        sigma = sigma_of(sums, n, h, k, a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return k, rv - lv, np.where(sigma > 0, (rv - lv) / (sigma * np.sqrt(lvar + rvar)), 0.0)
    return scan


def _chow_sigma(floor_global: bool) -> Callable:
    """σ̂ from the two lines' own residuals at each split (a Chow-type t), optionally at least the global σ̂."""
    def sigma_of(sums: tuple, n: int, h: int, k: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lrss = trend_mod._line_at(sums, a, k, k - 0.5)[2]
        rrss = trend_mod._line_at(sums, k, b, k - 0.5)[2]
        sigma = np.sqrt((lrss + rrss) / np.maximum(b - a - 4, 1))
        return np.maximum(sigma, trend_mod._sigma(sums, n, h)[..., None]) if floor_global else sigma
    return sigma_of


def _wide_local_sigma(sums: tuple, n: int, h: int, k: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """σ̂ at each split: the median of the h-point windows' RSS/(h − 2) over the 8h + 1 windows centred on it (the
    window test's block of 16 windows of w = h/2), made unbiased as the global σ̂ is: heteroscedastic noise taken
    locally, each σ̂ from ~8 independent windows rather than the two lines' own residuals."""
    starts = np.arange(0, n - h + 1)
    rss = trend_mod._line_at(sums, starts, starts + h, starts.astype(np.float64))[2] / (h - 2)  # [..., n-h+1]
    size = (1,) * (rss.ndim - 1) + (8 * h + 1,)
    med = ndimage.median_filter(rss, size=size, mode="nearest")
    centred = np.clip(k - h // 2, 0, n - h)  # the window centred on each split
    return np.sqrt(med[..., centred] / (stats.chi2.median(h - 2) / (h - 2)))


def _affine_seasonal_profile(y: np.ndarray, period: int) -> np.ndarray:
    """The seasonal component with an amplitude affine in the local level, (α + β·level)·s: the multiplicative
    model y = T·S written so that it survives the standardisation a log transform would not (α, β by least
    squares, the additive profile s as before; β = 0 is the additive model)."""
    level = ndimage.median_filter(y, size=period + 1 - period % 2, mode="nearest")
    resid = y - level
    phase = np.array([np.median(resid[i::period]) for i in range(period)])
    s = np.resize(phase - phase.mean(), y.size)
    centred = level - level.mean()
    coef = np.linalg.lstsq(np.stack([s, centred * s], axis=1), resid, rcond=None)[0]
    return np.maximum(coef[0] + coef[1] * centred, 0.0) * s


def _walk_null_step_test(y: np.ndarray, **kw: object) -> step_mod.StepTest | None:
    """On a stretch the noise model calls integrated (it wanders), the rank scan's p-value also under a random
    walk with exchangeable increments (Δy permuted, the walk rebuilt, B = 1999, Besag–Clifford stop); the larger
    p-value is kept. A level step in a random walk is one outsized increment, which this null keeps in its walks."""
    res = _STEP_TEST(y, **kw)
    if res is None or res.method != "permutation" or res.p_value > step_mod.ALPHA:
        return res
    y = np.asarray(y, dtype=np.float64)
    if not trend_mod.noise_model(y)[1]:
        return res
    side = max(1, int(kw.get("min_side", 2)))
    lo, hi, dy, rng = side, y.size - side, np.diff(y), np.random.default_rng(0)
    done = hits = 0
    while done < step_mod.PERMUTATIONS and hits < step_mod.EXCEED:
        perm = rng.permuted(np.broadcast_to(dy, (step_mod.BATCH, dy.size)), axis=1)
        walks = np.concatenate([np.zeros((step_mod.BATCH, 1)), np.cumsum(perm, axis=1)], axis=1)
        ranks = np.argsort(np.argsort(walks, axis=1), axis=1) + 1.0
        hits += int(np.count_nonzero(step_mod._rank_scan(ranks, lo, hi).max(axis=1) >= res.statistic - 1e-12))
        done += step_mod.BATCH
    p = hits / done if hits >= step_mod.EXCEED else (1.0 + hits) / (1.0 + done)
    return step_mod.StepTest(res.index, res.size, res.statistic, max(res.p_value, p), res.method, res.abrupt)


def _residual_rho(y: np.ndarray, k: int) -> float:
    """Lag-1 autocorrelation of the residuals of two levels split at k, clipped to [0, 0.95]."""
    r = np.r_[y[:k] - y[:k].mean(), y[k:] - y[k:].mean()]
    den = float(np.sum(r * r))
    return float(np.clip(np.sum(r[1:] * r[:-1]) / den, 0.0, 0.95)) if den > 0 else 0.0


def _ess_step_test(y: np.ndarray, **kw: object) -> step_mod.StepTest | None:
    """The rank scan's maximum divided by √((1 + ρ)/(1 − ρ)), ρ the lag-1 autocorrelation of the residuals at the
    split: the Mann–Whitney statistic's variance inflation under AR(1) noise (effective sample size n(1 − ρ)/(1 + ρ)),
    its p-value from the same permutations."""
    res = _STEP_TEST(y, **kw)
    if res is None or res.method != "permutation" or res.p_value > step_mod.ALPHA:
        return res
    y = np.asarray(y, dtype=np.float64)
    rho = _residual_rho(y, res.index)
    side = max(1, int(kw.get("min_side", 2)))
    p = step_mod._permutation_p(step_mod._ranks(y), res.statistic / np.sqrt((1 + rho) / (1 - rho)), side,
                                y.size - side, step_mod.PERMUTATIONS, np.random.default_rng(0))
    return step_mod.StepTest(res.index, res.size, res.statistic, max(res.p_value, p), res.method, res.abrupt)


def _ess_margin_step_test(y: np.ndarray, **kw: object) -> step_mod.StepTest | None:
    """The abruptness margin (two levels beat a line and a parabola by 2 ln n + 2 residual variances) times
    (1 + ρ)/(1 − ρ): an mBIC-style penalty counted in effective, not nominal, observations under AR(1) noise."""
    res = _STEP_TEST(y, **kw)
    if res is None or not res.abrupt:
        return res
    y = np.asarray(y, dtype=np.float64)
    rho, margin = _residual_rho(y, res.index), step_mod.abrupt_margin(y.size)
    ok = step_mod.smooth_gap(y, res.index) >= max(margin, 0.0) * (1 + rho) / (1 - rho) + min(margin, 0.0)
    return step_mod.StepTest(res.index, res.size, res.statistic, res.p_value, res.method, bool(ok))


def _next_split_trend_step(y: np.ndarray) -> tuple[int, float, float, float, bool] | None:
    """The trend-break test, but when the largest |z| fails the abruptness rules (a kink or a spike), the largest
    |z| farther than h from every rejected split is tested next, each against the null of the maximum over all
    splits (a subset's maximum is never larger, so the level stays ≤ α)."""
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 2 * trend_mod.min_side(n) + 2 or np.ptp(y) == 0:
        return None
    k, d, z = trend_mod.discontinuity_scan(y)
    z, h, first = np.abs(np.nan_to_num(z)), trend_mod.half_window(n), None
    null = trend_mod.null_maxima(n, *trend_mod.noise_model(y))
    while True:
        i = int(np.argmax(z))
        stat, kk, dd = float(z[i]), int(k[i]), float(d[i])
        first = first or (kk, dd, stat)
        p = (1.0 + null.size - np.searchsorted(null, stat, side="left")) / (1.0 + null.size)
        if p > step_mod.ALPHA:
            return (*first, 1.0, False)
        if trend_mod._abrupt(y, kk, dd) and trend_mod._lines_fit(y, kk):
            return kk, dd, stat, float(p), True
        z[np.abs(k - kk) < h] = 0.0


def _survives_deletion(y: np.ndarray, kk: int, dd: float) -> bool:
    """The break at kk stays, by half and in its direction, when any a points before kk and b after it are left out
    of the two lines (a + b ≤ the spike width): an outlier run beside the split is what deleting it removes, and a
    steep trend into a break keeps its height, where a running median cuts the top of the ramp off."""
    n = y.size
    h, width = trend_mod.half_window(n), trend_mod.spike_width(n)
    sums = trend_mod._sums(y - y[0])
    for a in range(width + 1):
        for b in range(width + 1 - a):
            lo, hi = kk - a, kk + b
            if (a or b) and (lo - max(lo - h, 0) < 2 or min(hi + h, n) - hi < 2):
                return False
            left = trend_mod._line_at(sums, np.array(max(lo - h, 0)), np.array(lo), np.array(kk - 0.5))[0]
            right = trend_mod._line_at(sums, np.array(hi), np.array(min(hi + h, n)), np.array(kk - 0.5))[0]
            if (a or b) and (right - left) * np.sign(dd) < 0.5 * abs(dd):
                return False
    return True


def _beats_bend(y: np.ndarray, kk: int) -> bool:
    """Two lines broken at kk fit the 2h points around it better than any continuous bend there, by
    ``abrupt_margin`` residual variances (the step test's rule for two levels against a line or a parabola, with
    broken lines against bends). The bends: a parabola, and two lines joined at any point of the window (a hinge).
    z(k) already compares broken lines with lines joined *at k*; the knee of a curve (the end of a warm-up, the
    bend into a decay) is joined a few points away from the split where |z| peaks, so there the hinge fits as well
    as the break, and a level break fits no bend."""
    n = y.size
    h = min(trend_mod.half_window(n), n)
    a, b = max(kk - h, 0), min(kk + h, n)
    m = b - a
    if kk - a < 3 or b - kk < 3:
        return True
    x = (np.arange(a, b, dtype=np.float64) - kk) / h
    v = y[a:b]

    def rss(cols: list[np.ndarray]) -> float:
        basis = np.stack(cols, axis=1)
        return float(np.sum((v - basis @ np.linalg.lstsq(basis, v, rcond=None)[0]) ** 2))

    one, right = np.ones(m), (x >= -0.5 / h).astype(np.float64)  # right: the points from kk on
    broken = rss([one, x, right, right * x])
    bends = [rss([one, x, x * x])] + [rss([one, x, np.maximum(x - x[j], 0.0)]) for j in range(2, m - 2)]
    if broken <= 0.0:
        return min(bends) > 0.0
    return (min(bends) - broken) / (broken / max(m - 4, 1)) >= step_mod.abrupt_margin(m)


def _lines_fit_and_beat_bends(y: np.ndarray, kk: int) -> bool:
    """The kept rule (both lines fit) and ``_beats_bend``."""
    return _LINES_FIT(y, kk) and _beats_bend(y, kk)


def _patch(module: object, name: str, new: object, fresh_null: bool = False) -> Callable[[ExitStack], None]:
    def enter(stack: ExitStack) -> None:
        if fresh_null:
            stack.enter_context(mock.patch.dict(trend_mod._NULL, clear=True))
        stack.enter_context(mock.patch.object(module, name, new))
    return enter


VARIANTS: dict[str, Callable[[ExitStack], None]] = {
    "rank steps on wandering stretches must be trend-test breaks too": _patch(jumps_mod, "segment_jumps",
                                                                               _wandering_guard),
    "window test: κ without the changes' neighbourhoods": _patch(jumps_mod, "_standardise", _kappa_off_changes),
    "trend-break test: local σ̂ at each split": _patch(trend_mod, "discontinuity_scan",
                                                      _scan_with_sigma(_chow_sigma(False)), True),
    "trend-break test: local σ̂, at least the global": _patch(trend_mod, "discontinuity_scan",
                                                              _scan_with_sigma(_chow_sigma(True)), True),
    "trend-break test: σ̂ over the 8h windows around each split": _patch(trend_mod, "discontinuity_scan",
                                                                         _scan_with_sigma(_wide_local_sigma), True),
    "seasonal amplitude affine in the level": _patch(seasonal_mod, "seasonal_profile", _affine_seasonal_profile),
    "rank steps on wandering stretches: random-walk null too": _patch(step_mod, "step_test", _walk_null_step_test),
    "rank test: AR(1) effective sample size": _patch(step_mod, "step_test", _ess_step_test),
    "abruptness margin in effective observations": _patch(step_mod, "step_test", _ess_margin_step_test),
    "trend-break test: next split outside a rejected one": _patch(step_mod, "trend_step", _next_split_trend_step),
    "seasonal profile from 7 neighbouring cycles on every swing (no test that it changes)": _patch(
        seasonal_mod, "changing", lambda resid, period: True),
    "trend-break test: spike check by leaving ≤ 3 points beside the split out, not by a running median": _patch(
        trend_mod, "_survives_spike_filter", _survives_deletion),
    "trend-break test: broken lines must beat every bend (a parabola, a hinge anywhere in the 2h window)": _patch(
        trend_mod, "_lines_fit", _lines_fit_and_beat_bends),
}
