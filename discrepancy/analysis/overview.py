"""The two figures a reader looks at first: the run's key curves (``overview.png``) and its jump map (``jump_map.png``).

Key curves: reward, correctness, format, KL, entropy and completion length (whichever the run logged), each in its
own small axes with its unit, the logged values (grey, min–max per pixel column as in the family figures), their
running median (blue), transients (orange circles at
their peaks), episodes (shaded orange) and phase transitions (dotted black, labelled). Jump map: one row per series
with any event, one dot per jump (red: rose, blue: fell; size ∝ |z|), one circle per transient, the same episode
shading and transition lines: where in the run things happened, across every series at once.
matplotlib is imported lazily (Agg backend).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.analysis.keys import (  # noqa: F401 - the key series' rules, imported from here too
    KEY_ALIASES, KEY_SERIES, POLICY_GRADIENT, SUPERVISED_SERIES, key_names, key_of, summary_names,
)
from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.plots import binned_curves
from discrepancy.analysis.step_axis import step_label, switch_lines
from discrepancy.analysis.units import unit_of
from discrepancy.runfile.results import atomic_path

OVERVIEW_PNG, JUMP_MAP_PNG = "overview.png", "jump_map.png"
DPI = 80


@dataclass(frozen=True)
class Stall:
    """A plateau of a series that ends in its largest level change: "stalled at ``level`` over steps ``first``–
    ``last``, then dropped by |``size``| at ``step``"."""

    signal: str
    level: float  # the plateau's level (the detector's, in the series' units)
    first_step: int
    last_step: int  # last logged step of the plateau
    size: float  # the jump that ends it (signed)
    step: int  # the jump's step

    def plateau(self) -> str:
        """"stalled at 2 over steps 17–180" (plain text: the caller escapes it for HTML)."""
        span = f"step {self.first_step}" if self.first_step == self.last_step else \
            f"steps {self.first_step}–{self.last_step}"
        return f"stalled at {self.level:.3g} over {span}"

    def text(self) -> str:
        """The sentence a summary says: "loss stalled at 2 over steps 17–180, then dropped by 0.802 at step 181"."""
        return (f"{self.signal} {self.plateau()}, then {'rose' if self.size > 0 else 'dropped'} by "
                f"{abs(self.size):.3g} at step {self.step}")


# The stall-then-transition story belongs to what training optimises: a loss, a reward, an accuracy that sat on a
# level until the model learned something. A length, an entropy or a KL dips and recovers as often as not.
STALL_SERIES = re.compile(r"loss|reward|correct|accura", flags=re.IGNORECASE)
HOLDS = 0.5  # the end level lies past the plateau's level, in the jump's direction, by ≥ this share of the jump
TAIL = 0.2  # share of the logged steps whose median is the series' end level (the headline's "end" window)


def key_stalls(res: AnalysisResult, names: list[str]) -> dict[str, Stall]:
    """{series: Stall} for the loss-, reward- and accuracy-like series among ``names`` (``STALL_SERIES``) whose
    largest level change (the linear-axis jump of largest |z|) ends one of the plateaus the analysis found (the
    plateau's end within the steps that count as the same moment: 0.5 % of the run, at least 2) and holds: the
    median of the last TAIL of the run lies past the plateau's level by ≥ HOLDS of the jump, in its direction. A
    loss that sat at 2.0 for 160 steps before it fell is told so ("went 2.16 → 1.2" alone hides the stall, often
    the run's main story); a dip that came back is no stall, only half of a transient."""
    out: dict[str, Stall] = {}
    if not names or res.plateaus.empty or res.jumps.empty or not len(res.series):
        return out
    steps = res.series.index.to_numpy()
    near = max(2, int(0.005 * (steps.max() - steps.min() + 1)))
    for name in (n for n in names if STALL_SERIES.search(key_of(n)) or STALL_SERIES.search(n)):
        j = res.jumps[(res.jumps["signal"] == name) & (res.jumps["axis"] == "linear")]
        p = res.plateaus[res.plateaus["signal"] == name]
        if j.empty or p.empty:
            continue
        top = j.loc[j["z"].abs().idxmax()]
        ends = p[(p["end_step"] - top["step"]).abs() <= near]
        if ends.empty:
            continue
        plat = ends.loc[(ends["end_step"] - top["step"]).abs().idxmin()]
        inside = steps[(steps >= plat["start_step"]) & (steps < plat["end_step"])]  # [logged steps of the plateau]
        if not inside.size or not _holds(res.series[name], float(plat["level"]), float(top["size"])):
            continue
        out[name] = Stall(name, float(plat["level"]), int(inside[0]), int(inside[-1]), float(top["size"]),
                          int(top["step"]))
    return out


def _holds(y: pd.Series, level: float, size: float) -> bool:
    """Whether the series ends past ``level`` in the direction of ``size`` by ≥ HOLDS·|size| (median of the last
    TAIL of its finite values): the level the jump reached is where the run stayed."""
    v = y.dropna().to_numpy(dtype=np.float64)
    if not v.size:
        return False
    end = float(np.median(v[-max(1, int(round(TAIL * v.size))):]))
    return (end - level) * np.sign(size) >= HOLDS * abs(size)


def key_series(res: AnalysisResult, limit: int = 6) -> list[str]:
    """The series the overview draws: KEY_SERIES the run has (not constant), else its first searched series."""
    return summary_names(res, limit=limit)[:limit]


def display_median(y: pd.Series, n: int) -> pd.Series:
    """Centred running median of max(5, n/30) steps, at most 101 (NaNs skipped): the curve a reader sees as the
    level of a short run; a long run's figures bin it instead (``plots.binned_curves``)."""
    return y.rolling(min(max(5, n // 30), 101) | 1, center=True, min_periods=1).median()


def _marks(ax, res: AnalysisResult, label: bool) -> None:  # noqa: ANN001
    """Episodes (shaded) and phase transitions (dotted, labelled when ``label``) on one axes."""
    for e in res.episodes.itertuples():
        ax.axvspan(e.first_step - 0.5, e.last_step + 0.5, color="tab:orange", alpha=0.15, lw=0)
        if label:  # at the foot of the band: phase-transition labels take the top
            ax.annotate(e.event, (e.step, 0.0), xycoords=("data", "axes fraction"), fontsize=7.5, ha="center",
                        va="bottom", color="tab:orange", xytext=(0, 2), textcoords="offset points")
    for t in res.transitions.itertuples():
        ax.axvline(t.step, color="black", ls=":", lw=0.9)
    if label:  # inside the top edge (the title sits above it), transitions a few steps apart share one label
        for step, text in _merged_labels(res.transitions, res.series.index):
            ax.annotate(text, (step, 1.0), xycoords=("data", "axes fraction"), fontsize=7.5, ha="left", va="top",
                        xytext=(1, -1), textcoords="offset points",
                        bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.8))


def _merged_labels(transitions: pd.DataFrame, steps: pd.Index, share: float = 0.04) -> list[tuple[float, str]]:
    """(step, "T3/T7") labels: transitions closer than ``share`` of the step range are named together, at the
    first one, so their labels do not print over each other."""
    if transitions.empty or not len(steps):
        return []
    gap = share * max(float(steps.max() - steps.min()), 1.0)
    out: list[tuple[float, list[str]]] = []
    for t in transitions.sort_values("step").itertuples():
        if out and t.step - out[-1][0] < gap:
            out[-1][1].append(t.event)
        else:
            out.append((float(t.step), [t.event]))
    return [(step, "/".join(names)) for step, names in out]


def overview_figure(res: AnalysisResult, out: Path) -> Path | None:
    """Draw ``overview.png`` in ``out``: the key curves, two columns; None when the run has none of them."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = key_series(res)
    if not names or res.num_steps == 0:
        return None
    rows = -(-len(names) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 0.6 + 2.0 * rows), sharex=True, squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.45 / (0.6 + 2.0 * rows), bottom=0.5 / (0.6 + 2.0 * rows),
                        hspace=0.38, wspace=0.14)
    spikes = {k: g for k, g in res.transients.groupby("signal")}
    steps = res.series.index.to_numpy(dtype=np.float64)
    for ax, name in zip(axes.ravel(), names):
        curves = binned_curves(steps, res.series[name].to_numpy(dtype=np.float64))  # ≤ 1000 x positions, spikes kept
        if curves is not None:
            c = curves[0]
            ax.fill_between(c.x, c.lo, c.hi, color="0.85", lw=0)
            ax.plot(c.x, c.lo, c.x, c.hi, color="0.65", lw=0.6)  # one line where a bin holds one step
            ax.plot(c.x, c.mid, color="tab:blue", lw=1.4)
        ts = spikes.get(name)
        if ts is not None:
            ax.scatter(ts["step"], ts["size"] + ts["baseline"], s=36, facecolors="none", edgecolors="tab:orange",
                       lw=1.4, zorder=5)
        _marks(ax, res, label=ax in axes[0])
        switch_lines(ax, res.switches, label=ax in axes[0])
        unit = unit_of(name, res.descriptions.get(name, ""))
        ax.set_title(name, loc="left", fontsize=9.5)
        ax.set_ylabel(unit or "value", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(color="0.92", lw=0.6)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(step_label(res.meta), fontsize=8.5)
    fig.text(0.01, 1 - 0.08 / (0.6 + 2.0 * rows), "Key curves: grey logged, blue running median, orange circles "
             "transients, orange bands episodes, dotted phase transitions"
             + (", green dash-dot curriculum phase switches" if len(res.switches) else ""), fontsize=9, va="top")
    return _save(fig, out / OVERVIEW_PNG)


def jump_map(res: AnalysisResult, log_step: bool = False):  # noqa: ANN201 - a matplotlib Figure
    """The jump map as a matplotlib Figure (``analysis/phase_transitions.py`` draws it for any run)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    events = pd.concat([res.jumps[["signal", "step"]], res.transients[["signal", "step"]]], ignore_index=True)
    order = list(dict.fromkeys(events.sort_values("step", kind="stable")["signal"]))
    row = {s: i for i, s in enumerate(order)}
    fig, ax = plt.subplots(figsize=(13, 1.3 + 0.24 * max(len(order), 1)))
    j, t = res.jumps, res.transients
    num = lambda df, col: df[col].to_numpy(dtype=np.float64)  # noqa: E731 - empty tables hold object columns
    ax.scatter(num(j, "step"), j["signal"].map(row).to_numpy(dtype=np.float64),
               s=14 + 5 * np.minimum(np.abs(num(j, "z")), 40), c=np.where(num(j, "size") > 0, "tab:red", "tab:blue"),
               alpha=0.85, zorder=4, label="jump")
    ax.scatter(num(t, "step"), t["signal"].map(row).to_numpy(dtype=np.float64), s=14 + 3 * np.minimum(num(t, "z"), 40),
               facecolors="none", edgecolors="tab:orange", lw=1.3, zorder=3, label="transient")
    _marks(ax, res, label=True)
    switch_lines(ax, res.switches, label=False)  # labelled on the key curves above
    steps = res.series.index
    if len(steps):
        ax.set_xlim(max(1, steps.min()) if log_step else steps.min() - 0.5, steps.max() + 0.5)
    if log_step:
        ax.set_xscale("log")
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel(step_label(res.meta, scale="log scale" if log_step else ""), fontsize=9)
    ax.grid(axis="x", color="0.92", lw=0.6)
    ax.set_title("Jump map: jumps (red rose, blue fell; size ∝ |z|), transients (orange circles), episodes (orange "
                 "bands), phase transitions (dotted)" + (", phase switches (green)" if len(res.switches) else ""),
                 loc="left", fontsize=9.5, pad=14)
    fig.tight_layout()
    return fig


def jump_map_figure(res: AnalysisResult, out: Path) -> Path | None:
    """Draw ``jump_map.png`` in ``out``; None when no series has a jump or a transient."""
    if res.jumps.empty and res.transients.empty:
        return None
    return _save(jump_map(res), out / JUMP_MAP_PNG)


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path
