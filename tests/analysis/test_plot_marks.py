"""Family figures: values past a band are marked at its edge, sparse series are never averaged on the log axis, the
value label and the key leave the figure's title free."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from discrepancy.analysis import plots  # noqa: E402
from discrepancy.analysis.plot_curves import BAND, LOG_POINTS, Band, curves, limits  # noqa: E402


def _spiky(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A noisy series with a strong spike (0.0331 at step 101), a weaker one inside the band, and a dip below it."""
    y = 0.01 + 0.002 * np.sin(np.arange(n) / 3.0)
    y[100], y[101] = 0.030, 0.0331  # two neighbouring values past the top: one mark, at the higher
    y[250] = -0.02
    return np.arange(1, n + 1, dtype=np.float64), y


def test_values_past_a_band_get_one_mark_per_excursion_at_its_extreme() -> None:
    steps, y = _spiky()
    linear, _ = curves(steps, y)
    band = Band(0.0, *limits(linear))
    assert band.hi < 0.03 and band.lo > -0.02  # the band is the bulk: the spike would flatten the curve
    out = band.beyond(linear)
    assert list(zip(out.x, out.value, out.above)) == [(102.0, 0.0331, True), (251.0, -0.02, False)]
    assert band(np.array([0.0331]))[0] == BAND  # drawn at the edge, where the mark says it lies beyond
    inside = Band(0.0, -1.0, 1.0).beyond(linear)
    assert inside.x.size == 0


def _panel(log: bool) -> tuple[plt.Figure, plt.Axes, bool]:
    steps, y = _spiky()
    c = curves(steps, y)
    events = plots._Events({"linear": np.array([]), "log": np.array([])}, np.empty((0, 2)), [],
                           np.array([[102.0, 0.0331]]))  # the spike is a transient: its circle sits at the edge too
    fig, ax = plt.subplots()
    past = plots._stacked_panel(ax, [("kl_realised", c[int(log)], events)], [limits(c[0])], ["kl_realised"], log,
                                0.0)
    return fig, ax, past


@pytest.mark.parametrize("log", [False, True])
def test_a_clipped_peak_is_drawn_at_the_edge_under_a_triangle_with_its_value(log: bool) -> None:
    fig, ax, past = _panel(log)
    assert past
    triangles = [c for c in ax.collections if c.get_zorder() == plots.BEYOND_STYLE["zorder"]]
    assert [c.get_offsets().tolist() for c in triangles] == [[[102.0, BAND]], [[251.0, 0.0]]]  # top, bottom edge
    labels = [t.get_text() for t in ax.texts]
    assert "0.0331" in labels and "-0.02" in labels  # the farthest value past each edge, said
    assert "0.03" not in labels  # its neighbour past the same edge shares its mark
    plt.close(fig)


def test_the_key_says_beyond_the_axis_once_and_only_when_a_value_is(tmp_path: Path, monkeypatch) -> None:
    from discrepancy.analysis.pipeline import analyze_series

    said = []
    legend = plots._legend
    monkeypatch.setattr(plots, "_legend", lambda fig, title, **kw: said.append(kw) or legend(fig, title, **kw))
    steps, y = _spiky()
    frame = pd.DataFrame({"kl_realised": y, "entropy": np.linspace(0.5, 0.6, y.size)},
                         index=pd.Index(steps.astype(int), name="step"))
    res = analyze_series(frame)
    plots.family_figure(res, "KL and entropy", tmp_path)
    quiet = analyze_series(frame[["entropy"]])
    plots.family_figure(quiet, "KL and entropy", tmp_path)
    assert [kw["beyond"] for kw in said] == [True, False]


def _trainer_state(path: Path) -> Path:
    """An HF trainer_state.json: loss every 5 steps, eval_loss every 25, flat at 2.1 until step 175, then 1.3."""
    history = []
    for step in range(5, 401, 5):
        history.append({"step": step, "epoch": step / 400, "loss": 2.5 * np.exp(-step / 150) + 0.8})
        if step % 25 == 0:
            history.append({"step": step, "epoch": step / 400, "eval_loss": 2.1 if step < 175 else 1.3})
    path.write_text(json.dumps({"log_history": history, "global_step": 400}), encoding="utf-8")
    return path


def test_a_sparse_eval_loss_is_drawn_value_by_value_on_the_log_axis(tmp_path: Path) -> None:
    """Log-spaced bins of the row index merged steps 150–250 into one mean: a decline from step ~50 while the loss
    was flat at 2.1 until 175."""
    from discrepancy.analysis.pipeline import analyze

    res = analyze(_trainer_state(tmp_path / "trainer_state.json"))
    s = res.series["eval_loss"].dropna()
    _, log = curves(s.index.to_numpy(dtype=np.float64), s.to_numpy())
    assert np.array_equal(log.x, np.arange(25.0, 401.0, 25.0))  # every logged value at its own step
    assert np.array_equal(log.lo, log.hi)  # nothing merged
    assert set(log.mid[log.x < 175]) == {2.1} and set(log.mid[log.x >= 175]) == {1.3}  # flat, then the drop


def test_long_series_bin_by_step_so_a_bin_never_spans_a_gap_between_logs() -> None:
    """A long series logged every 25 steps after a dense start: a log-axis bin holds values of about one pixel
    column of the axis (a step range under 3 % of its first step) or one value, so a drop stays a drop."""
    steps = np.concatenate([np.arange(1.0, 201.0), np.arange(225.0, 50_001.0, 25.0)])  # [2191]
    y = np.where(steps < 1000, 2.1, 1.3)
    _, log = curves(steps, y)
    assert steps.size > LOG_POINTS and log.x.size <= LOG_POINTS + 1
    levels = {float(v) for v in np.round(np.concatenate([log.mid, log.lo, log.hi]), 12)}
    assert levels == {2.1, 1.3}  # no value between the two levels: nothing averaged across the drop
    assert log.mid[log.x < 1000].max() == 2.1 and (log.lo[log.x < 1000] == 2.1).all()  # no bin crosses the drop
    first = np.searchsorted(steps, np.unique(log.x))  # [m] first row of each bin
    end = np.append(first[1:], steps.size)  # [m] one past its last row
    reach = steps[end - 1] - steps[first]  # [m] steps between its first and last value
    assert ((end - first == 1) | (reach < 0.03 * steps[first])).all()
    assert (end - first > 1).sum() > 50  # the test binds: many bins merge values


@pytest.mark.parametrize("rows", [1, 2, 6])
def test_the_value_label_fits_its_panel_and_the_key_leaves_the_title_free(rows: int, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """A rotated label longer than a one-row panel ran over the figure's title."""
    from discrepancy.analysis.pipeline import analyze_series

    drawn = {}
    value_label = plots._value_label
    monkeypatch.setattr(plots, "_value_label", lambda fig, ax: drawn.update(fig=fig, ax=ax) or value_label(fig, ax))
    rng = np.random.default_rng(rows)
    frame = pd.DataFrame({f"custom_{i}": rng.standard_normal(200) for i in range(rows)},
                         index=pd.Index(np.arange(1, 201), name="step"))
    frame["custom_0"] += np.linspace(0, 50, 200) ** 2 / 100  # a long run of values beyond: the key grows
    plots.family_figure(analyze_series(frame), "other", tmp_path)
    fig, ax = drawn["fig"], drawn["ax"]
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure is closed once saved
    label, panel = ax.yaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
    title = next(t for t in fig.texts if t.get_text() == "other").get_window_extent(renderer)
    assert panel.y0 - 1 <= label.y0 and label.y1 <= panel.y1 + 1  # within its panel's height
    assert label.y1 < title.y0  # below the title
    assert all(key.get_window_extent(renderer).x0 > title.x1 for key in fig.legends)
    assert (ax.yaxis.label.get_text() == plots.VALUE_LABELS[0]) == (rows >= 3)  # the full text where it fits
