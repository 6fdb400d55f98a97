"""Family figures: the value of a clipped peak never prints over a phase-transition tag, and a family's title names
what it holds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from discrepancy.analysis import plots  # noqa: E402
from discrepancy.analysis.plot_curves import curves, limits  # noqa: E402


@pytest.mark.parametrize("tag_step", [104.0, 99.0, 300.0])  # just right of the peak, just left, far away
def test_a_clipped_peaks_value_never_prints_over_a_transition_tag(tag_step: float) -> None:
    """Planted: a peak past the band's top at step 101 (0.0331) and a transition of the series at ``tag_step``."""
    steps = np.arange(1, 401, dtype=np.float64)
    y = 0.01 + 0.002 * np.sin(steps / 3.0)
    y[100] = 0.0331
    c = curves(steps, y)
    events = plots._Events({"linear": np.array([]), "log": np.array([])}, np.empty((0, 2)), [("T3", tag_step)],
                           np.empty((0, 2)))
    fig, ax = plt.subplots(figsize=(13, 2.5), dpi=80)
    plots._stacked_panel(ax, [("completion_length_mean", c[0], events)], [limits(c[0])], ["title"], False, 0.0)
    fig.canvas.draw()
    box = {t.get_text().strip(): t.get_window_extent() for t in ax.texts}
    assert {"0.0331", "T3"} <= set(box)
    assert not box["0.0331"].overlaps(box["T3"])
    plt.close(fig)


def test_a_familys_title_names_what_it_holds() -> None:
    assert plots.family_title("losses and D_t/ρ", ["loss", "eval_loss"]) == "losses"  # another tool's log
    assert plots.family_title("losses and D_t/ρ", ["loss_pre", "disc", "rho"]) == "losses and D_t/ρ"
    assert plots.family_title("rewards", ["reward"]) == "rewards"
