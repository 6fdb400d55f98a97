"""What every figure of a run puts on its step axis: the axis label, and the curriculum's phase switches.

Label: a log read from another trainer whose steps lie on a lattice (0, 0.5, 1.0, …) is analysed on integer steps
that count in units of q (``meta["step_unit"]``, docs/interop.md), so the axis says so ("step (× 0.5 = the log's
step)"); a run's own steps are plain "step". Switches: the phase switches of a curriculum run (``phases``), drawn the
same way on the family figures, the key curves, the jump map and the LLC curve, so a reader tells a switch the
trainer made from a change the run went through by its look alone. matplotlib is imported by the callers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

SWITCH_STYLE = {"color": "tab:green", "ls": "-.", "lw": 1.1}  # curriculum phase switches, on every figure


def step_unit(meta: Mapping[str, Any]) -> float | None:
    """The log's step per analysed step (q) when it is not 1, else None (a run file, or a log on integer steps)."""
    q = meta.get("step_unit")
    try:
        q = float(q) if q is not None else None
    except (TypeError, ValueError):  # a meta value from a file: never a reason to lose a figure
        return None
    return q if q is not None and math.isfinite(q) and q > 0 and q != 1 else None


def step_label(meta: Mapping[str, Any], prefix: str = "step", scale: str = "") -> str:
    """The step axis' label: ``prefix`` ("step", "step + 1") and ``scale`` ("log scale") in brackets, with the unit
    when a step is not the log's step: "step (× 0.5 = the log's step)", "step + 1 (log scale; step × 0.5 = …)"."""
    q = step_unit(meta)
    said = [scale] if scale else []
    if q is not None:
        said.append(f"{'' if prefix == 'step' else 'step '}× {q:g} = the log's step")
    return f"{prefix} ({'; '.join(said)})" if said else prefix


def step_unit_sentence(meta: Mapping[str, Any]) -> str:
    """One sentence for the report's text saying what a step is ('' when it is the log's own step)."""
    q = step_unit(meta)
    if q is None:
        return ""
    return (f"Steps here count in units of {q:g} of the log's step (the log's steps are multiples of {q:g}): "
            f"step {round(10 / q)} here is the log's step 10, and every step axis says so.")


def switch_lines(ax, switches: pd.DataFrame, shift: float = 0.0, label: bool = True) -> None:  # noqa: ANN001
    """The curriculum's phase switches as full-height green dash-dot lines, labelled with the phase entered."""
    for w in switches.itertuples():
        ax.axvline(w.step + shift, **SWITCH_STYLE, zorder=1)
        if label:
            ax.annotate(f"{w.event} {w.phase}", (w.step + shift, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7.5, color="tab:green", ha="right", va="top", rotation=90,
                        xytext=(-2, -14), textcoords="offset points")


def switch_handle():  # noqa: ANN201 - a matplotlib Line2D
    """The legend entry of the phase switches."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **SWITCH_STYLE, label="phase switch")
