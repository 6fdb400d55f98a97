"""Figure data: spikes survive thinning, bands keep rows apart, compact step labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.plot_curves import BAND, PLOT_POINTS
from discrepancy.analysis.plot_curves import Band as _Band
from discrepancy.analysis.plot_curves import curves as _curves
from discrepancy.analysis.plot_curves import limits as _limits
from discrepancy.analysis.plots import _step_label


def test_envelope_keeps_a_single_spike_and_the_true_range():
    rng = np.random.default_rng(0)
    n = 200_000
    y = 0.1 * rng.standard_normal(n)
    y[123_457] = 50.0  # one step in 200 k: block means or medians would hide it
    steps = np.arange(n, dtype=np.float64)
    linear, log = _curves(steps, y)
    assert linear.x.size <= PLOT_POINTS + 1 and log.x.size <= PLOT_POINTS + 1  # + the last step, drawn to the end
    assert linear.x[-1] == log.x[-1] == steps[-1]
    for c in (linear, log):  # the envelope spans exactly the data: max is the spike, min the true minimum
        assert c.hi.max() == 50.0 and c.lo.min() == y.min()
        assert c.mid.min() >= y.min() and c.mid.max() < 0.5  # the centre line is not pulled up by the spike
    # the bin that holds the spike starts at or before it and the next one after it
    i = np.searchsorted(linear.x, 123_457, side="right") - 1
    assert linear.hi[i] == 50.0
    # log axis: the first bins are single steps (one value each)
    assert np.array_equal(log.x[:5], steps[:5]) and np.array_equal(log.lo[:5], y[:5])


def test_nan_only_series_has_no_curve():
    assert _curves(np.arange(10.0), np.full(10, np.nan)) is None


def test_band_limits_ignore_a_spike_and_clip_to_the_row():
    rng = np.random.default_rng(1)
    y = rng.uniform(-1, 1, 100_000)
    y[500] = 1e6
    linear, _ = _curves(np.arange(y.size, dtype=np.float64), y)
    band = _Band(3.0, *_limits(linear))
    assert band.hi < 2.0  # the 1 % tails of the envelope, not the spike
    mapped = band(linear.hi)
    assert mapped.max() <= 3.0 + BAND + 1e-12 and band(np.array([band.lo]))[0] == 3.0


def test_step_labels():
    assert [_step_label(v) for v in (0, 500, 2_000, 250_000, 1_000_000, 1_500_000)] == [
        "0", "500", "2k", "250k", "1M", "1.5M"]


def test_a_family_over_max_rows_continues_on_further_pages(tmp_path):
    import pandas as pd
    from matplotlib.image import imread

    from discrepancy.analysis.pipeline import analyze_series
    from discrepancy.analysis.plots import MAX_ROWS, all_figures

    rng = np.random.default_rng(2)
    n_signals = MAX_ROWS + 3
    frame = pd.DataFrame({f"custom_{i}": rng.standard_normal(300) for i in range(n_signals)},
                         index=pd.Index(np.arange(300), name="step"))
    res = analyze_series(frame)
    assert (res.signals["family"] == "other").sum() == n_signals
    paths = all_figures(res, tmp_path, workers=1)
    assert [p.name for p in paths] == ["other.png", "other_2.png"]  # every signal drawn: 16 + 3 panels
    heights = [imread(p).shape[0] for p in paths]
    assert heights[0] > 3 * heights[1]  # 16 rows against 3


def test_family_pngs_of_an_earlier_analysis_are_removed(tmp_path):
    """Family figures and their pages go; other jobs' PNGs (llc.png, probe_*.png) and look-alikes stay."""
    from discrepancy.analysis.plots import FAMILY_FILES, remove_family_pngs

    stale = [tmp_path / f"{stem}{suffix}.png" for stem in FAMILY_FILES.values() for suffix in ("", "_2", "_13")]
    kept = [tmp_path / name for name in ("llc.png", "probe_skills.png", "rewards_old.png", "other_x2.png")]
    for p in stale + kept:
        p.write_bytes(b"png")
    assert sorted(remove_family_pngs(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_tick_labels_tell_every_tick_apart():
    """A ratio median of 1 ± 10⁻⁶ had ticks labelled "1, 1, 1"."""
    from discrepancy.analysis.plots import tick_labels

    for ticks in ([0.99999, 1.0, 1.00001], [1 - 2e-9, 1.0, 1 + 2e-9], [0.0, 0.5, 1.0], [1234.5, 1234.6]):
        labels = tick_labels(ticks)
        assert len(set(labels)) == len(labels), labels
        spacing = ticks[1] - ticks[0]
        for lab, t in zip(labels, ticks):  # "1+2e-09" reads back as 1 + 2e-09: each label names its tick
            assert abs(eval(lab) - t) <= 0.05 * spacing, (lab, t)
    assert tick_labels([0.0, 0.5, 1.0]) == ["0", "0.5", "1"]


def test_band_titles_give_units_and_never_nan():
    import pandas as pd

    from discrepancy.analysis.plots import _title

    row = pd.Series({"n_jumps": 1, "n_plateaus": 0, "n_transients": 2, "jump_fraction": float("nan")})
    assert _title("kl", row, "nats", None) == "kl [nats]: 1 jump, 0 plateaus, 2 transients"
    assert _title("lr", row, "", "config schedule") == "lr: config schedule, not searched"
    assert "nan" not in _title("x", row, "", None)


def test_timing_series_get_their_own_figure(tmp_path):
    import pandas as pd

    from discrepancy.analysis.pipeline import analyze_series
    from discrepancy.analysis.plots import all_figures, family_pages

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"reward_mean": rng.standard_normal(200), "step_time": rng.gamma(2.0, 1.0, 200),
                          "time_kl_start": rng.gamma(2.0, 1.0, 200), "ratio_mean": np.ones(200)},
                         index=pd.Index(np.arange(200), name="step"))
    res = analyze_series(frame)
    assert family_pages(res, "rewards") == 1 and family_pages(res, "timing") == 1 and family_pages(res, "other") == 0
    names = [p.name for p in all_figures(res, tmp_path, workers=1)]
    assert names == ["rewards.png", "timing.png"]  # ratio_mean ≡ 1: not drawn at all


def test_a_series_recorded_every_nth_step_says_so_in_its_panel_title() -> None:
    from discrepancy.analysis.plots import recorded_every

    steps = pd.RangeIndex(1, 101)
    every4 = pd.Series([float(s) if (s - 1) % 4 == 0 else np.nan for s in steps], index=steps)
    assert recorded_every(every4) == 4
    assert recorded_every(pd.Series(np.arange(100.0), index=steps)) == 1
    holes = pd.Series(np.arange(100.0), index=steps)
    holes.iloc[[10, 40, 70]] = np.nan  # an undefined ratio now and then is no schedule
    assert recorded_every(holes) == 1


def test_short_run_series_too_sparse_to_search_share_one_note() -> None:
    from discrepancy.analysis.pipeline import analyze_series

    steps = pd.RangeIndex(1, 21)
    rng = np.random.default_rng(0)
    sparse = {f"m{i}": [rng.normal() if (s - 1) % 4 == 0 else np.nan for s in steps] for i in range(3)}
    frame = pd.DataFrame({"reward_mean": rng.normal(size=20), **sparse}, index=steps)
    res = analyze_series(frame)
    few = [n for n in res.notes if "too few finite values" in n]
    assert len(few) == 1 and all(f"m{i} (5)" in few[0] for i in range(3)), res.notes


def test_series_are_drawn_up_to_their_last_step_on_both_axes():
    """20 steps: every value at its own step on both axes. 5000 steps on a log axis: the last geometric bin spans
    many steps, and the line, drawn from each bin's first step, still reaches the last one."""
    steps = np.arange(1, 21, dtype=np.float64)
    linear, log = _curves(steps, np.sin(steps))
    assert linear.x[-1] == log.x[-1] == 20.0 and np.array_equal(log.x, steps)
    steps = np.arange(1, 5001, dtype=np.float64)
    linear, log = _curves(steps, np.sin(steps))
    assert linear.x[-1] == log.x[-1] == 5000.0 and log.mid[-1] == log.mid[-2] and log.x[-2] < 4950
