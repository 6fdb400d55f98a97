"""Figures of the probes: skill curves with emergence steps, unit symmetries over steps, attribution heat maps.

Built on ``matplotlib.figure.Figure`` directly (no pyplot), so plotting never touches a global backend or GUI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discrepancy.runfile.results import atomic_path

def _save(fig: Any, path: Path) -> Path:
    """Write a figure into the analysis folder atomically (a crash never leaves half a PNG)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


_METRICS = (("exact_match", "exact match"), ("logprob", "gold-answer mean log-prob"),
            ("discrimination", "distractor discrimination"))


def plot_skill_curves(skills: pd.DataFrame, emergence: pd.DataFrame, path: Path) -> Path:
    """One panel per metric, one line per skill over steps; dashed verticals at each skill's emergence step."""
    from matplotlib.figure import Figure

    metrics = [(m, label) for m, label in _METRICS if (skills["metric"] == m).any()]
    fig = Figure(figsize=(7, 2.4 * max(1, len(metrics))), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 1, sharex=True, squeeze=False)[:, 0]
    keys = list(dict.fromkeys(zip(skills["suite"], skills["skill"])))
    colors = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    em = {(r.suite, r.skill): r for r in emergence.itertuples()} if len(emergence) else {}
    for ax, (metric, label) in zip(axes, metrics):
        sel = skills[skills["metric"] == metric]
        for key, g in sel.groupby(["suite", "skill"], sort=False):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], marker=".", color=colors[key], label=f"{key[1]}")
            verdict = em.get(key)
            if verdict is not None and np.isfinite(verdict.step):
                ax.axvline(verdict.step, color=colors[key], ls="--", lw=1)
                ax.annotate(verdict.kind, (verdict.step, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                            color=colors[key], rotation=90, va="top", ha="right")
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xlabel("step")
    axes[0].legend(fontsize=7, ncol=3, loc="best")
    return _save(fig, path)


def plot_units(units: pd.DataFrame, path: Path, llc: pd.Series | None = None) -> Path:
    """Dead and bypassed fractions per layer over steps; the LLC curve on a second axis when given."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    for layer, g in units.groupby("layer"):
        g = g.sort_values("step")
        ax.plot(g["step"], g["dead_frac"], color=f"C{int(layer) % 10}", label=f"dead L{layer}")
        ax.plot(g["step"], g["bypassed_frac"], color=f"C{int(layer) % 10}", ls=":", label=f"bypassed L{layer}")
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of MLP units")
    if llc is not None and len(llc):
        ax2 = ax.twinx()
        ax2.plot(llc.index, llc.to_numpy(), color="k", lw=1.5, label="LLC")
        ax2.set_ylabel("LLC")
        ax2.legend(fontsize=7, loc="upper right")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return _save(fig, path)


def plot_attribution(tokens: list[str], before: np.ndarray, after: np.ndarray, title: str, path: Path) -> Path:
    """Heat map of one item: rows before / after / change, one column per prompt token, symmetric colour scale."""
    from matplotlib.figure import Figure

    data = np.vstack([before, after, after - before])  # [3, T]
    lim = float(np.abs(data).max()) or 1.0
    fig = Figure(figsize=(max(4, 0.25 * len(tokens) + 1.5), 2.2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(data, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(3), ["before", "after", "change"], fontsize=7)
    labels = [t.replace("\n", "⏎").replace(" ", "␣") or "·" for t in tokens]  # whitespace made visible
    ax.set_xticks(range(len(tokens)), labels, fontsize=6, rotation=90)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)
