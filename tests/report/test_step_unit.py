"""A log whose steps lie on a lattice (0, 0.5, 1.0, …) is analysed on integer steps counting in units of 0.5 of the
log's step (``meta["step_unit"]``, docs/interop.md): every step axis the report draws says so, and its text says it
once; a log on integer steps keeps the plain "step"."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from discrepancy.analysis.overview import jump_map, overview_figure  # noqa: E402
from discrepancy.analysis.pipeline import analyze  # noqa: E402
from discrepancy.analysis.plots import FAMILY_FILES, family_figure, family_pages  # noqa: E402
from discrepancy.analysis.step_axis import step_label  # noqa: E402
from discrepancy.report import write_outputs  # noqa: E402

UNIT = "× 0.5 = the log's step"


def _log(path: Path, step_unit: float) -> Path:
    """A CSV log of 300 rows whose loss and reward jump at row 200, its steps 0, q, 2q, …"""
    rng = np.random.default_rng(0)
    t = np.arange(300)
    pd.DataFrame({"step": t * step_unit, "loss": 2.0 - 1.0 * (t >= 200) + 0.05 * rng.standard_normal(300),
                  "reward": 0.2 + 0.5 * (t >= 200) + 0.05 * rng.standard_normal(300)}).to_csv(path, index=False)
    return path


def test_every_step_axis_of_the_report_says_the_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = analyze(_log(tmp_path / "half.csv", 0.5))
    assert res.meta["step_unit"] == 0.5
    labels: list[str] = []
    set_xlabel = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, text, *a, **kw: (labels.append(text),
                                                                        set_xlabel(ax, text, *a, **kw))[1])
    families = [f for f in FAMILY_FILES if family_pages(res, f)]
    assert len(families) >= 2
    for family in families:  # drawn here, not in forked workers, so every label is seen
        family_figure(res, family, tmp_path)
    overview_figure(res, tmp_path)
    for log_step in (False, True):
        plt.close(jump_map(res, log_step=log_step))
    steps = [label for label in labels if "step" in label]
    assert len(steps) >= 2 * len(families) + 1 + 2  # linear and log panel per family, key curves, two jump maps
    assert all(UNIT in label for label in steps), steps
    assert "step + 1 (log scale; step × 0.5 = the log's step)" in steps


def test_the_report_text_says_the_unit_once_and_an_integer_log_not_at_all(tmp_path: Path) -> None:
    half = analyze(_log(tmp_path / "half.csv", 0.5))
    page = write_outputs(half, tmp_path / "half", figures=False)["report"].read_text(encoding="utf-8")
    assert page.count("units of 0.5 of the log") == 1 and "step 20 here is the log&#x27;s step 10" in page
    whole = analyze(_log(tmp_path / "whole.csv", 1.0))
    assert "step_unit" not in whole.meta
    page = write_outputs(whole, tmp_path / "whole", figures=False)["report"].read_text(encoding="utf-8")
    assert "the log&#x27;s step" not in page and "step-unit" not in page


def test_labels_without_a_unit_stay_plain() -> None:
    assert step_label({}) == "step" and step_label({"step_unit": 1.0}) == "step"
    assert step_label({}, "step + 1", "log scale") == "step + 1 (log scale)"
    assert step_label({"step_unit": "junk"}) == "step"  # a meta value from a file never costs a figure
    assert step_label({"step_unit": 0.25}) == "step (× 0.25 = the log's step)"
