"""What a family figure draws of one series: its curve on the linear and on the log step axis, and the band of values
a panel row shows, with the values that lie beyond it.

Linear axis: up to ``PLOT_POINTS`` equal blocks of rows, each drawn as its min–max (a grey envelope: spikes stay
visible) and a running median of the block means. Log axis: a series with at most ``LOG_POINTS`` values is drawn
as on the linear axis, every value at its own step; a longer one in geometric bins *of the step* (one step each at
the start), so a bin merges only values within about one pixel column of the log axis. Binning the row index
instead merged, for a series logged every 25 steps, values 100 steps apart on both sides of a drop into one falling
bin mean. The band: the bulk of the values (1st to 99th percentile of the envelope) fills a row, so one spike does
not flatten the curve; what lies beyond it is drawn at the row's edge and marked there (``Beyond``,
``beyond_marks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PLOT_POINTS = 1000  # x positions per line: ~2 per pixel column of a panel at DPI (no line needs more)
LOG_POINTS = PLOT_POINTS // 2  # geometric step bins of a log panel: about one per pixel column
BAND = 0.72  # share of a row that its signal's values use; the rest holds the row title and a gap


@dataclass(frozen=True)
class Curve:
    """What one panel draws: a grey min/max envelope per x position (spikes stay visible) and a central line."""

    x: np.ndarray  # [m] first step of each bin
    lo: np.ndarray  # [m] bin minimum
    hi: np.ndarray  # [m] bin maximum
    mid: np.ndarray  # [m] bin centre (running median of bin means)


def curves(steps: np.ndarray, y: np.ndarray) -> tuple[Curve, Curve] | None:
    """Linear-axis and log-axis curves of one series (NaNs dropped); None when nothing is finite."""
    ok = np.isfinite(y)
    if not ok.all():  # copies only for series with gaps
        steps, y = steps[ok], y[ok]
    if y.size == 0:
        return None
    starts = np.unique(np.linspace(0, y.size, min(PLOT_POINTS, y.size), endpoint=False).astype(np.int64))  # [m]
    mid = np.add.reduceat(y, starts) / np.diff(np.append(starts, y.size))  # [m] bin means (the rolling median
    # below removes what spikes leave in them; bin medians would cost a partition of every bin)
    k = _window(starts.size)
    linear = _to_end(Curve(steps[starts], np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts),
                           pd.Series(mid).rolling(k, center=True, min_periods=1).median().to_numpy()), steps[-1])
    return linear, _log_curve(steps, y, linear)


def _window(bins: int) -> int:
    """Bins per running median: about 2 % of the axis, at least 5, and odd, so that at a level change between two
    equal halves the median is one of the levels, never their mean."""
    return max(5, bins // 50) | 1


def _log_curve(steps: np.ndarray, y: np.ndarray, linear: Curve) -> Curve:
    """The log-axis curve: the linear one when every value has its own x position there (a sparse or short series:
    its values joined by lines, never averaged), else geometric bins of the step (module docstring)."""
    if y.size <= LOG_POINTS:
        return linear
    rel = steps - steps[0] + 1.0  # [n] ≥ 1, increasing: the first logged step is the log axis' first bin
    edges = np.geomspace(1.0, rel[-1] + 1.0, LOG_POINTS + 1)[:-1]  # [LOG_POINTS] lower edge of each bin
    starts = np.unique(np.searchsorted(rel, edges, side="left"))  # [m] first row of each non-empty bin
    starts = starts[starts < y.size]
    means = np.add.reduceat(y, starts) / np.diff(np.append(starts, y.size))  # [m]
    # a running median of neighbouring bins, as on the linear axis: a spike in a one-step bin at the start does not
    # move the line, a level change stays a step
    k = _window(starts.size)
    mid = pd.Series(means).rolling(k, center=True, min_periods=1).median().to_numpy()
    return _to_end(Curve(steps[starts], np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts), mid),
                   steps[-1])


def _to_end(curve: Curve, last: float) -> Curve:
    """The curve drawn up to the last step: each bin is drawn from its first step, so without this the last bin
    (up to a fifth of a log axis) would end the line early."""
    if curve.x[-1] >= last:
        return curve
    return Curve(np.append(curve.x, last), np.append(curve.lo, curve.lo[-1]), np.append(curve.hi, curve.hi[-1]),
                 np.append(curve.mid, curve.mid[-1]))


@dataclass(frozen=True)
class Beyond:
    """Values past a band's edge, one mark per run of neighbouring x positions beyond it, at the run's extreme."""

    x: np.ndarray  # [k] step of each mark
    value: np.ndarray  # [k] the value there (past the edge)
    above: np.ndarray  # [k] bool: past the top edge (else the bottom one)


@dataclass(frozen=True)
class Band:
    """Where one signal sits in a stacked panel: rows [base, base + BAND] show values [lo, hi]."""

    base: float
    lo: float
    hi: float

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """Values to panel y, clipped to the band: a value past its limits is drawn at the edge (and marked there,
        ``beyond``) instead of crossing into the next row."""
        return self.base + (np.clip(v, self.lo, self.hi) - self.lo) * (BAND / (self.hi - self.lo))

    def beyond(self, c: Curve) -> Beyond:
        """The values of ``c`` past the band's edges: one mark per run of neighbouring bins past the same edge,
        at the bin whose value lies farthest out."""
        xs, values, above = [], [], []
        for past, v, up in ((c.hi > self.hi, c.hi, True), (c.lo < self.lo, c.lo, False)):
            idx = np.flatnonzero(past)  # [j] bins past this edge
            for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []:
                i = run[np.argmax(v[run])] if up else run[np.argmin(v[run])]
                xs.append(float(c.x[i]))
                values.append(float(v[i]))
                above.append(up)
        return Beyond(np.array(xs, dtype=np.float64), np.array(values, dtype=np.float64), np.array(above, dtype=bool))


def limits(c: Curve) -> tuple[float, float]:
    """Value range of a band, from the bulk of the envelope, so an isolated spike does not flatten the curve."""
    lo, hi = float(np.percentile(c.lo, 1)), float(np.percentile(c.hi, 99))
    lo, hi = min(lo, float(np.min(c.mid))), max(hi, float(np.max(c.mid)))
    pad = 0.06 * (hi - lo) if hi > lo else (0.05 * abs(hi) if hi != 0 else 1.0)  # constant series: a narrow band
    return lo - pad, hi + pad


BEYOND_STYLE = {"facecolors": "none", "edgecolors": "black", "lw": 1.0, "s": 28, "zorder": 6}


TAG_CLEAR = 0.08  # share of the step axis within which a value label past the top and a transition tag would touch
BELOW_TAGS = -11.0  # points: a label past the top moves under the tags' row (7.5 pt text) when one is that near


def beyond_marks(ax, past: list[tuple[Band, Beyond, list[float]]], shift: float, log: bool) -> bool:  # noqa: ANN001
    """Values drawn at their band's edge because they lie past it: an open triangle at the edge pointing out of the
    band (one per run of such values), and the value of the farthest one past each edge of a band as a small label,
    so a clipped peak never reads as high as a lower one. A label past the top edge shares that edge with the band's
    transition tags (T1, T2, ... written rightwards from the steps in ``past``): with one just right of the triangle
    the label goes to its left, with one just left of it under the tags' row. True when there was any."""
    up, down = [], []
    lo, hi = ax.get_xlim()
    scale = np.log10 if log else (lambda v: v)
    for b, out, tags in past:
        for above, pts, y, pick in ((True, up, b.base + BAND, np.argmax), (False, down, b.base, np.argmin)):
            sel = out.above == above
            if not sel.any():
                continue
            pts += [(x + shift, y) for x in out.x[sel]]
            i = int(pick(out.value[sel]))
            x = float(out.x[sel][i]) + shift
            right = (scale(x) - scale(lo)) > 0.85 * (scale(hi) - scale(lo))  # near the right end: label to its left
            gap = [(scale(t) - scale(x)) / (scale(hi) - scale(lo)) for t in tags] if above else []  # [tags]
            right |= any(0 <= g < TAG_CLEAR for g in gap)  # a tag (its text runs rightwards) just right: go left
            below = any(-TAG_CLEAR < g < 0 for g in gap)  # a tag just left, its text over the triangle: go under it
            dy = BELOW_TAGS if below else -1 if above else 1  # points: just inside the edge, or under the tags' row
            ax.annotate(f"{out.value[sel][i]:.3g}", (x, y), xytext=(-5 if right else 5, dy),
                        textcoords="offset points", ha="right" if right else "left", va="top" if above else "bottom",
                        fontsize=7, bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.8), zorder=6)
    for pts, marker in ((up, "^"), (down, "v")):
        if pts:
            xy = np.array(pts)
            ax.scatter(xy[:, 0], xy[:, 1], marker=marker, clip_on=False, **BEYOND_STYLE)
    return bool(up or down)
