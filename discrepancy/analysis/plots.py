"""PNG figures of an analysis: one per signal family, linear-step panel left, log-step panel right.

Each panel stacks the family's signals in horizontal bands, each band with its own value ticks. What a reader sees:
the logged values as a grey min–max envelope per pixel column (spikes stay visible), a running median (blue),
detected jumps (red lines: solid when seen on the linear axis, dashed when only the log-spaced pass resolves them),
plateaus (shaded blue), and phase transitions (black dotted lines labelled T1, T2, ... in the bands of the signals
that take part). A band shows the bulk of its values (``plot_curves.limits``); a value past it is drawn at the edge
under an open triangle pointing out of the band, the farthest one labelled with its value. A series with few values
(short, or logged every k-th step) is drawn on the log axis value by value, never averaged. Drawing cost is kept far below the analysis': ≤ 1000 x positions per line (~2 per pixel column),
one matplotlib artist per kind of mark per panel, two axes per figure, fixed margins, plain-text tick labels.
matplotlib is imported lazily (Agg backend, no display needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.plot_curves import (  # noqa: F401 - BEYOND_STYLE: imported from here too
    BAND, BEYOND_STYLE, Band, Curve, beyond_marks, curves, limits,
)
from discrepancy.analysis.selection import not_searched
from discrepancy.analysis.step_axis import step_label, switch_handle, switch_lines
from discrepancy.analysis.units import unit_of
from discrepancy.runfile.results import atomic_path, family_png, family_pngs

FAMILY_FILES = {  # family -> file stem (results.FAMILY_STEMS, and "timing": wall-clock series, drawn last)
    "rewards": "rewards", "losses and D_t/ρ": "losses", "gradient noise": "gradient_noise",
    "KL and entropy": "kl_entropy", "lengths": "lengths", "other": "other", "timing": "timing",
}
MAX_ROWS = 16  # panels per figure; a family with more signals continues in <family>_2.png, <family>_3.png, ...
DPI = 80
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


binned_curves = curves  # the same binning for other figures (``overview``)


def _step_label(v: float, _pos: object = None) -> str:
    """Compact step numbers (250k, 1.5M): no offset text to lay out, readable at a glance."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    return f"{v / 1e3:g}k" if a >= 1e3 else f"{v:g}"


def _log_ticks(ax, lo: float, hi: float) -> None:  # noqa: ANN001
    """Decade ticks labelled 10⁰, 10³, ... in plain text: the default log labels are mathtext, parsed per label."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    k = np.arange(np.floor(np.log10(max(lo, 1e-12))), np.ceil(np.log10(max(hi, 1.0))) + 1).astype(int)
    ax.xaxis.set_major_locator(FixedLocator(10.0 ** k))
    ax.xaxis.set_major_formatter(FixedFormatter([f"10{str(e).translate(SUPERSCRIPT)}" for e in k]))
    ax.xaxis.set_minor_locator(NullLocator())


@dataclass(frozen=True)
class _Events:
    """Events of one signal, split out once per figure (not filtered from the full tables per panel)."""

    jumps: dict[str, np.ndarray]  # axis ("linear"/"log") -> steps
    plateaus: np.ndarray  # [k, 2] start, end steps
    transitions: list[tuple[str, float]]  # (event, step) the signal takes part in
    transients: np.ndarray  # [k, 2] peak step, value at the peak


def _events_of(res: AnalysisResult, names: list[str]) -> dict[str, _Events]:
    jumps = {k: g for k, g in res.jumps.groupby("signal")}
    plats = {k: g for k, g in res.plateaus.groupby("signal")}
    spikes = {k: g for k, g in res.transients.groupby("signal")}
    empty = pd.DataFrame(columns=["step", "axis", "start_step", "end_step", "size"])
    out = {}
    for name in names:
        js, ps, ts = jumps.get(name, empty), plats.get(name, empty), spikes.get(name, empty)
        out[name] = _Events(
            {a: js.loc[js["axis"] == a, "step"].to_numpy(dtype=np.float64) for a in ("linear", "log")},
            ps[["start_step", "end_step"]].to_numpy(dtype=np.float64).reshape(-1, 2),
            [(t.event, float(t.step)) for t in res.transitions.itertuples() if name in t.signals.split(",")],
            np.column_stack([ts["step"].to_numpy(dtype=np.float64),
                             (ts["size"] + ts["baseline"]).to_numpy(dtype=np.float64) if len(ts) else []]),
        )
    return out


def _stacked_panel(  # noqa: PLR0913 - one panel needs all of these
    ax, rows: list[tuple[str, Curve | None, _Events]], limits: list[tuple[float, float]],  # noqa: ANN001
    titles: list[str], log: bool, shift: float,
) -> bool:
    """All signals of a family in one axes, one horizontal band each (top row first), every kind of mark one artist;
    True when some value lies beyond its band (marked at the edge).

    Why not one axes per signal: matplotlib spends ~80 ms of CPU per axes (ticks, spines, layout), which made the
    figures of a 40-series run cost more than its analysis; a band per signal with its own value ticks reads the same.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    n = len(rows)
    env, mids, plats, marks = [], [], [], {"linear": [], "log": [], "transition": []}
    spikes: list[tuple[float, float]] = []  # x, y (in the band) of each transient's peak
    yticks, ylabels, xs, past = [], [], [], []
    for r, ((_, c, ev), lim, title) in enumerate(zip(rows, limits, titles)):
        base = float(n - 1 - r)
        ax.text(0.002, base + BAND + 0.04, title, transform=ax.get_yaxis_transform(), fontsize=8.5, va="bottom")
        if c is None:
            ax.text(0.5, base + BAND / 2, "no finite values", transform=ax.get_yaxis_transform(), ha="center")
            continue
        b, x = Band(base, *lim), c.x + shift
        xs += [x[0], x[-1]]
        env.append(np.concatenate([np.column_stack([x, b(c.hi)]), np.column_stack([x, b(c.lo)])[::-1]]))
        mids.append(np.column_stack([x, b(c.mid)]))
        past.append((b, b.beyond(c), [] if log else [step for _, step in ev.transitions]))  # tags: linear only
        plats += [[(s + shift, base), (s + shift, base + BAND), (e + shift, base + BAND), (e + shift, base)]
                  for s, e in ev.plateaus]
        for axis in ("linear", "log"):
            marks[axis] += [[(j + shift, base), (j + shift, base + BAND)] for j in ev.jumps[axis]]
        spikes += [(x_ + shift, float(b(np.array([v]))[0])) for x_, v in ev.transients]  # at the peak
        for label, step in ev.transitions:
            marks["transition"].append([(step + shift, base), (step + shift, base + BAND)])
            if not log:
                ax.text(step, base + BAND - 0.02, f" {label}", fontsize=7.5, ha="left", va="top",
                        bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.8))
        ticks = _value_ticks(b.lo, b.hi)
        yticks += list(b(np.array(ticks, dtype=np.float64)))
        ylabels += tick_labels(ticks)
    ax.add_collection(PolyCollection(plats, facecolors="tab:cyan", alpha=0.2, lw=0))
    ax.add_collection(PolyCollection(env, facecolors="0.8", edgecolors="0.72", lw=0.4))
    ax.add_collection(LineCollection(mids, colors="tab:blue", lw=1.2))
    ax.add_collection(LineCollection(marks["linear"], colors="tab:red", lw=1.1, alpha=0.9))
    ax.add_collection(LineCollection(marks["log"], colors="tab:red", lw=1.1, alpha=0.9, linestyles="--"))
    ax.add_collection(LineCollection(marks["transition"], colors="black", lw=0.9, linestyles=":"))
    pts = np.array(spikes).reshape(-1, 2)
    ax.scatter(pts[:, 0], pts[:, 1], marker="o", s=30, facecolors="none", edgecolors="tab:orange", lw=1.3, zorder=5)
    ax.hlines(np.arange(1, n) - 0.04, 0, 1, transform=ax.get_yaxis_transform(), colors="0.85", lw=0.6)  # row gaps
    ax.set_ylim(-0.08, n - 1 + BAND + 0.2)
    _panel_axes(ax, log, yticks, ylabels, xs)
    return beyond_marks(ax, past, shift, log)


def _value_ticks(lo: float, hi: float) -> list[float]:
    """Up to 3 round values inside a band's limits."""
    from matplotlib.ticker import MaxNLocator

    return [t for t in MaxNLocator(3).tick_values(lo, hi) if lo <= t <= hi]


def _panel_axes(ax, log: bool, yticks: list[float], ylabels: list[str], xs: list[float]) -> None:  # noqa: ANN001
    """Ticks and limits of a stacked panel: value ticks on the linear panel only (the log panel beside it has the
    same value scale, and ticks cost ~2 ms each), step ticks on both."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    if log:
        ax.yaxis.set_major_locator(NullLocator())
        ax.set_xscale("log")
        _log_ticks(ax, min(xs, default=1.0), max(xs, default=10.0))
    else:
        ax.yaxis.set_major_locator(FixedLocator(yticks))
        ax.yaxis.set_major_formatter(FixedFormatter(ylabels))
        ax.tick_params(axis="y", labelsize=7, length=2, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(7, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    ax.grid(axis="x", color="0.9", lw=0.6)
    if xs:
        ax.set_xlim(min(xs), max(xs))


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels that tell every tick apart and name it to 5 % of the tick spacing: the fewest significant digits
    (3 to 8) that do, else an offset form ("1+2e-06") for ticks that differ far below their size (a ratio median of
    1 ± 10⁻⁶ was labelled "1, 1, 1")."""
    if not ticks:
        return []
    gap = float(np.min(np.diff(ticks))) if len(ticks) > 1 else abs(float(ticks[0])) or 1.0
    for digits in range(3, 9):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels) and all(abs(float(x) - t) <= 0.05 * gap for x, t in zip(labels, ticks)):
            return labels
    ref = float(np.median(ticks))
    return [f"{ref:.6g}{t - ref:+.2g}" if t != ref else f"{ref:.6g}" for t in ticks]


def recorded_every(values: pd.Series) -> int:
    """k when the series' finite values come every k-th step (k > 1: most gaps between them are k steps, as for the
    post-step measurements of ``instruments.discrepancy_every``), else 1."""
    steps = values.index[np.isfinite(values.to_numpy(dtype=np.float64))].to_numpy(dtype=np.int64)
    if steps.size < 3:
        return 1
    gaps = np.diff(steps)
    k = int(np.median(gaps))
    return k if k > 1 and np.mean(gaps == k) >= 0.8 else 1


def _title(name: str, row: pd.Series, unit: str, why: str | None, every: int = 1) -> str:
    """Left-panel title of one band: name, unit, how often it was recorded when not every step, counts of events,
    or why it was not searched."""
    head = (f"{name} [{unit}]" if unit else name) + (f" (every {every} steps)" if every > 1 else "")
    if why is not None:
        return f"{head}: {why}, not searched"
    counts = [f"{k} {w}{'s' if k != 1 else ''}" for k, w in ((int(row.n_jumps), "jump"),
                                                             (int(row.n_plateaus), "plateau"),
                                                             (int(getattr(row, "n_transients", 0)), "transient"))]
    return f"{head}: " + ", ".join(counts)


WHY = {"timing": "wall-clock timing", "schedule": "set by the config or trainer", "smoothed": "smoothed copy"}


def family_pages(res: AnalysisResult, family: str) -> int:
    """How many figures a family needs at `MAX_ROWS` signals each (0 when it has no analysed signal)."""
    return -(-int((res.signals["family"] == family).sum()) // MAX_ROWS)


# A family's title names what it holds: "losses and D_t/ρ" groups the losses with this project's D_t measurements
# (pipeline.FAMILIES), which another tool's log lacks; there it is "losses". The family itself (its key in events,
# its file) stays one name, so a transition counts the same families whatever the log.
HELD: dict[str, tuple[str, str]] = {"losses and D_t/ρ": ("losses", r"^disc|^rho|kappa|lin_error|step_norm|cos_grad")}


def family_title(family: str, names: list[str]) -> str:
    """The title of a family's figure for the series ``names`` it holds: the family's name, or the shorter name of
    ``HELD`` when none of its series is of the part that name adds."""
    short, pattern = HELD.get(family, (family, ""))
    return family if not pattern or any(re.search(pattern, n) for n in names) else short


def family_figure(res: AnalysisResult, family: str, out: Path, page: int = 0) -> Path | None:
    """Draw one page of a family's PNG (linear-step panel left, log-step panel right); None when it has no signal
    there. Page 0 is ``<family>.png``, page k ``<family>_<k+1>.png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    every = [s for s in res.signals.loc[res.signals["family"] == family, "signal"]]
    names = every[page * MAX_ROWS : (page + 1) * MAX_ROWS]
    if not names:
        return None
    steps = res.series.index.to_numpy(dtype=np.float64)
    shift = 1.0 if steps.size and steps.min() <= 0 else 0.0  # a log axis cannot show step 0
    events = _events_of(res, names)
    info = res.signals.set_index("signal")
    drawn = {name: curves(steps, res.series[name].to_numpy(dtype=np.float64)) for name in names}
    height = 1.45 * len(names) + 1.0
    fig, axes = plt.subplots(1, 2, figsize=(13, height), squeeze=False, dpi=DPI)  # measured as saved
    # fixed margins instead of tight_layout, which measures every tick label
    fig.subplots_adjust(left=0.055, right=0.995, top=1 - 0.55 / height, bottom=0.45 / height, wspace=0.09)
    bands = [limits(drawn[name][0]) if drawn[name] is not None else (0.0, 1.0) for name in names]
    why = {k: WHY[v] for k, v in not_searched(list(res.series.columns)).items()
           if k in names and np.isnan(info.loc[k, "jump_fraction"])}
    past = False  # some value drawn at its band's edge
    for col, log in enumerate((False, True)):
        rows = [(name, None if drawn[name] is None else drawn[name][col], events[name]) for name in names]
        titles = [_description(res, name) if log else
                  _title(name, info.loc[name], unit_of(name, res.descriptions.get(name, "")), why.get(name),
                         recorded_every(res.series[name]))
                  for name in names]
        past |= _stacked_panel(axes[0, col], rows, bands, titles, log, shift if log else 0.0)
        switch_lines(axes[0, col], res.switches, shift if log else 0.0, label=not log)
    axes[0, 0].set_xlabel(step_label(res.meta))
    _value_label(fig, axes[0, 0])
    axes[0, 1].set_xlabel(step_label(res.meta, "step + 1" if shift else "step", "log scale"))
    pages = family_pages(res, family)
    title = fig.text(0.01, 1 - 0.08 / height, family_title(family, every) + (f" ({page + 1}/{pages})" if pages > 1
                                                                               else ""),
                     fontsize=12, ha="left", va="top")
    _legend(fig, title, switches=len(res.switches) > 0, beyond=past)
    path = out / family_png(FAMILY_FILES.get(family, "other"), page)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path


def _description(res: AnalysisResult, name: str, width: int = 95) -> str:
    """Right-panel title of one band: what the series measures (the run's description), shortened to fit."""
    text = res.descriptions.get(name, "") or f"{name} (log-step axis)"
    return text if len(text) <= width else text[: width - 1] + "…"


VALUE_LABELS = ("value (each band on its own scale; unit in its title)", "value (own scale per band)", "value")


def _value_label(fig, ax) -> None:  # noqa: ANN001
    """The value axis' label: the longest of ``VALUE_LABELS`` that fits the panel's height. A rotated label longer
    than its axes runs past them, over the figure's title on a one-row figure; one text measured per try."""
    renderer = fig.canvas.get_renderer()
    room = ax.get_window_extent(renderer).height
    for text in VALUE_LABELS:
        label = ax.set_ylabel(text, fontsize=8)
        if label.get_window_extent(renderer).height <= room:
            return


def _legend(fig, title, switches: bool = False, beyond: bool = False) -> None:  # noqa: ANN001
    """The figure's key, top right in one row, or in two when one row would reach the figure's title."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color="0.75", label="values (min–max per pixel)"),
        Line2D([], [], color="tab:blue", lw=1.4, label="running median"),
        Line2D([], [], color="tab:red", label="jump"), Line2D([], [], color="tab:red", ls="--", label="jump (log axis only)"),
        Patch(color="tab:cyan", alpha=0.3, label="plateau"), Line2D([], [], color="black", ls=":", label="phase transition"),
        Line2D([], [], color="tab:orange", marker="o", mfc="none", ls="", label="transient (peak)"),
    ]
    if beyond:  # said once per figure, only where some value is drawn at its band's edge
        handles.append(Line2D([], [], marker="^", mfc="none", mec="black", ls="", label="beyond the axis"))
    if switches:
        handles.append(switch_handle())
    def key(ncol: int):  # noqa: ANN202 - a matplotlib Legend
        return fig.legend(handles=handles, loc="upper right", ncol=ncol, fontsize=8, frameon=False,
                          bbox_to_anchor=(0.99, 1.0))

    renderer = fig.canvas.get_renderer()
    one_row = key(len(handles))
    if one_row.get_window_extent(renderer).x0 < title.get_window_extent(renderer).x1 + 10:  # it reaches the title
        one_row.remove()
        key(-(-len(handles) // 2))


_SHARED: AnalysisResult | None = None  # the result a forked worker draws from (inherited, never pickled)


def _draw_shared(job: tuple[str, Path, int]) -> Path | None:
    assert _SHARED is not None
    return family_figure(_SHARED, *job)


def remove_family_pngs(out: Path) -> list[Path]:
    """Delete the family PNGs (``<family>.png`` and pages ``<family>_<k>.png``) an earlier analysis left in ``out``.

    A re-run into the same folder may draw fewer families or pages; their old files would otherwise sit next to
    the new report as if current. Other PNGs (llc.png, probe_*.png) belong to other jobs and are kept.
    """
    gone = sorted(set(family_pngs(out)))
    for old in gone:
        old.unlink()
    return gone


def all_figures(res: AnalysisResult, out: Path, workers: int | None = None) -> list[Path]:
    """One PNG per family present in the analysis, in the fixed family order; a family with more than `MAX_ROWS`
    signals continues on further pages.

    Drawing is matplotlib's per-axes work (~50–90 ms of CPU per panel, two panels per signal), so with several
    families and cores the figures are drawn in forked worker processes: they inherit the result instead of
    receiving a pickled copy of a series table that can hold hundreds of MB. Where fork is unavailable, or for
    one family, they are drawn here.
    """
    global _SHARED
    import multiprocessing as mp
    import os

    out.mkdir(parents=True, exist_ok=True)
    remove_family_pngs(out)
    jobs = [(f, out, page) for f in FAMILY_FILES for page in range(family_pages(res, f))]  # fixed family order
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers > 1 and "fork" in mp.get_all_start_methods():
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot  # noqa: F401 - imported once here, inherited by the workers (~1 s each otherwise)

        _SHARED = res
        try:
            # largest figure first, so the last one to start is a small one (workers finish together)
            order = sorted(jobs, key=lambda job: -_page_rows(res, job[0], job[2]))
            with mp.get_context("fork").Pool(workers) as pool:
                drawn = dict(zip(order, pool.map(_draw_shared, order, chunksize=1)))
            paths = [drawn[job] for job in jobs]
        finally:
            _SHARED = None
    else:
        paths = [family_figure(res, *job) for job in jobs]
    return [p for p in paths if p is not None]


def _page_rows(res: AnalysisResult, family: str, page: int) -> int:
    """Signals drawn on one page of a family."""
    return min(MAX_ROWS, int((res.signals["family"] == family).sum()) - page * MAX_ROWS)
