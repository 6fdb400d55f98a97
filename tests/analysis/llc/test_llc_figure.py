"""The LLC figure (llc.png): its step axis starts at the first snapshot (never at negative steps) and a curriculum
run's phase switches are drawn as on the analysis' figures (green dash-dot, labelled with the phase entered)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from discrepancy.analysis.llc.health import with_health  # noqa: E402
from discrepancy.analysis.llc.over_run import llc_figure, plot_llc, run_switches  # noqa: E402
from discrepancy.analysis.step_axis import SWITCH_STYLE  # noqa: E402
from discrepancy.runfile import Recorder, RunSchema, open_run  # noqa: E402

CONFIG = '[[curriculum.phases]]\nname = "warm"\nmax_steps = 30\n\n[[curriculum.phases]]\nname = "main"\n'


def _table(steps: list[int]) -> pd.DataFrame:
    values = [1.0 + 0.1 * i for i in range(len(steps))]
    return with_health(pd.DataFrame({"step": steps, "llc_mean": values, "llc_std": 0.1, "warnings": "",
                                     "llc_per_chain": [json.dumps([v, v + 0.05]) for v in values]}), dim=1000)


def _switch_xs(ax) -> list[float]:  # noqa: ANN001
    """x of every full-height line drawn in the phase switches' style."""
    return [float(line.get_xdata()[0]) for line in ax.get_lines()
            if line.get_linestyle() == SWITCH_STYLE["ls"] and line.get_color() == SWITCH_STYLE["color"]]


def test_the_step_axis_starts_at_the_first_snapshot_and_shows_the_switches(tmp_path: Path) -> None:
    switches = pd.DataFrame([{"event": "W1", "step": 31, "from_phase": "warm", "phase": "main", "trigger": "max_steps",
                              "rule": "max_steps = 30"}])
    fig = llc_figure(_table(list(range(0, 201, 20))), switches)  # evenly spaced: a linear axis
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 200.0)  # matplotlib's margin put it at -10 before
    assert _switch_xs(ax) == [31.0]
    assert "W1 main" in [t.get_text() for t in ax.texts]
    assert "phase switch" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    late = llc_figure(_table(list(range(40, 241, 20))))  # a run whose first snapshot is not at step 0
    assert late.axes[0].get_xlim()[0] == 40.0 and _switch_xs(late.axes[0]) == []
    assert "phase switch" not in [t.get_text() for t in late.axes[0].get_legend().get_texts()]
    plt.close(late)
    spread = llc_figure(_table([0, 1, 10, 100, 1000]), switches)  # over decades: symlog from step 0
    assert spread.axes[0].get_xscale() == "symlog" and spread.axes[0].get_xlim()[0] == 0.0
    assert _switch_xs(spread.axes[0]) == [31.0]
    plt.close(spread)
    assert plot_llc(_table([0, 10, 20]), tmp_path / "llc.png", switches).stat().st_size > 0


def test_a_curriculum_runs_switches_are_read_from_its_phase_series(tmp_path: Path) -> None:
    phase = np.where(np.arange(60) < 31, 0.0, 1.0)
    trigger = np.where(np.arange(60) == 31, 1.0, 0.0)
    schema = RunSchema(series={"phase": "curriculum phase", "phase_trigger": "what ended the phase", "loss": "loss"})
    with Recorder.create(tmp_path / "run.h5", schema, config_toml=CONFIG) as rec:
        for step in range(60):
            rec.log_step(step, {"phase": phase[step], "phase_trigger": trigger[step], "loss": 1.0})
        rec.finish()
    with open_run(tmp_path / "run.h5") as run:
        switches = run_switches(run)
    assert switches[["event", "step", "from_phase", "phase", "trigger"]].values.tolist() == [
        ["W1", 31, "warm", "main", "max_steps"]]
    flat = RunSchema(series={"loss": "loss"})  # no curriculum: no switches, and no error
    with Recorder.create(tmp_path / "flat.h5", flat) as rec:
        rec.log_step(0, {"loss": 1.0})
        rec.finish()
    with open_run(tmp_path / "flat.h5") as run:
        assert run_switches(run).empty
