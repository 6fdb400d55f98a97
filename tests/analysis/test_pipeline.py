"""analyze(): grouped phase transitions, too-short runs, families, live runs (its files and report: tests/report)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.changepoints.events import group_transitions
from discrepancy.analysis.pipeline import analyze, analyze_series, family_of

from sample_runs import DROP  # the planted phase transition


def test_group_transitions_hand_case():
    jumps = pd.DataFrame({"signal": ["a", "b", "c", "a", "a", "d"], "step": [100, 103, 98, 500, 900, 905],
                          "z": [5.0, -9.0, 6.0, 7.0, 8.0, 4.0]})
    t = group_transitions(jumps, tolerance=5)  # no family column: every signal its own family
    # {98,100,103} spans a,b,c; {500} is one signal; {900,905} spans a,d
    assert list(t["n_signals"]) == [3, 2]
    assert t.iloc[0]["signals"] == "b,c,a"  # strongest |z| first
    assert (t.iloc[0]["first_step"], t.iloc[0]["last_step"], t.iloc[0]["step"]) == (98, 103, 100)
    assert t.iloc[1]["step"] == 902 and list(t["event"]) == ["T1", "T2"]
    later = group_transitions(jumps.assign(step=[900, 903, 898, 500, 100, 105]), tolerance=5)
    assert list(later["step"]) == [900, 102] and list(later["event"]) == ["T2", "T1"]  # strongest first, ids by step


def test_transitions_need_two_families_or_three_signals():
    # three moments, each a group of jumps within 5 steps (hand-made):
    # 100: loss + loss_ewma (one family, two signals)      -> coincidence, dropped by default
    # 500: loss + reward_mean (two families)               -> transition
    # 900: loss + loss_ewma + policy_loss (one family, 3)  -> transition
    sig = ["loss", "loss_ewma", "loss", "reward_mean", "loss", "loss_ewma", "policy_loss"]
    fam = ["L", "L", "L", "R", "L", "L", "L"]
    jumps = pd.DataFrame({"signal": sig, "family": fam, "step": [100, 102, 500, 501, 900, 901, 903],
                          "z": [9.0, 8.0, 5.0, 6.0, 4.0, 4.0, 4.0]})
    t = group_transitions(jumps)
    assert sorted(t["step"]) == [500, 901]
    assert dict(zip(t["step"], t["n_families"])) == {500: 2, 901: 1}
    strict = group_transitions(jumps, min_signals=4, min_families=3)  # nothing qualifies
    assert strict.empty
    loose = group_transitions(jumps, min_signals=2)  # the old rule: any two signals
    assert sorted(loose["step"]) == [101, 500, 901]
    # one signal jumping twice in a window is never a transition, whatever the family rule says
    twice = pd.DataFrame({"signal": ["a", "a"], "family": ["A", "A"], "step": [10, 11], "z": [5.0, 5.0]})
    assert group_transitions(twice, min_families=1).empty


def test_families_by_name():
    assert family_of("reward_mean") == "rewards"
    assert family_of("loss_post") == "losses and D_t/ρ" and family_of("rho") == "losses and D_t/ρ"
    assert family_of("noise_trace_ewma") == "gradient noise"
    assert family_of("kl_realised") == "KL and entropy" and family_of("entropy_change_obs") == "KL and entropy"
    assert family_of("completion_length_mean") == "lengths"
    assert family_of("lr") == "other"


def test_multi_signal_jump_is_one_phase_transition(run_file: Path):
    res = analyze(run_file)
    assert res.status == "finished" and res.num_steps == 1000
    first = res.transitions.iloc[0]
    assert first["n_signals"] == 3
    assert set(first["signals"].split(",")) == {"loss", "reward_mean", "kl_realised"}
    assert abs(first["step"] - DROP) <= 2
    ev = res.events()
    assert ev.iloc[0]["kind"] == "phase_transition"  # transitions listed first
    loss_plateau = res.plateaus[res.plateaus["signal"] == "loss"].iloc[0]
    assert abs(loss_plateau["end_step"] - DROP) <= 2 and loss_plateau["drop"] == pytest.approx(-1.0, abs=0.1)
    # no spurious events in the flat series; the all-NaN series is reported, not analysed
    assert res.jumps[res.jumps["signal"].isin(["lr", "completion_length_mean"])].empty
    assert any("rho" in n for n in res.notes) and "rho" not in set(res.signals["signal"])


def test_too_few_steps_gives_a_note_not_an_error(short_run: Path):
    res = analyze(short_run)
    assert res.num_steps == 6 and res.jumps.empty and res.transitions.empty
    assert "at least" in res.notes[0]


def test_long_run_reduction_keeps_jump_positions():
    rng = np.random.default_rng(0)
    n = 120_000
    y = 0.05 * rng.standard_normal(n)
    y[77_777:] += 0.5
    r = 0.05 * rng.standard_normal(n)  # its own noise: −y would be one quantity twice, which counts once
    r[77_777:] -= 0.5
    frame = pd.DataFrame({"loss": y, "reward_mean": r}, index=pd.Index(np.arange(n), name="step"))  # 2 families
    res = analyze_series(frame, max_points=20_000)  # blocks of 6 steps
    steps = sorted(res.jumps.loc[res.jumps["signal"] == "loss", "step"])
    assert any(abs(s - 77_777) <= 2 for s in steps)
    assert res.transitions.iloc[0]["n_signals"] == 2


def test_early_jump_seen_on_log_axis_only():
    rng = np.random.default_rng(1)
    n = 20_000
    y = 0.05 * rng.standard_normal(n)
    y[40:] += 1.0  # inside the first window of the linear axis (w = 50)
    frame = pd.DataFrame({"loss": y}, index=pd.Index(np.arange(n), name="step"))
    with_log = analyze_series(frame)
    without = analyze_series(frame, log_axis=False)
    assert without.jumps.empty
    assert list(with_log.jumps["axis"]) == ["log"] and abs(with_log.jumps["step"].iloc[0] - 40) <= 1


@pytest.mark.slow
def test_live_run_is_analysed_while_written(tmp_path: Path):
    path = tmp_path / "live.h5"
    script = textwrap.dedent(f"""
        import time
        import numpy as np
        from discrepancy.runfile import Recorder, RunSchema
        # write 800 steps, keep the file open (status running) and wait to be killed
        rec = Recorder.create({str(path)!r}, RunSchema(series={{"loss": "l", "reward_mean": "r"}}), flush_every=50)
        rng = np.random.default_rng(0)
        for i in range(800):
            rec.log_step(i, {{"loss": 1.0 - 0.5 * (i >= 500) + 0.02 * rng.standard_normal(),
                             "reward_mean": 0.1 + 0.6 * (i >= 500) + 0.02 * rng.standard_normal()}})
        rec.flush()
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        res = analyze(path)
        assert res.status == "running" and res.num_steps == 800
        assert abs(res.transitions.iloc[0]["step"] - 500) <= 2
    finally:
        proc.kill()
        proc.wait()


def test_forked_workers_give_the_serial_result(monkeypatch: pytest.MonkeyPatch):
    import discrepancy.analysis.pipeline as pipeline

    rng = np.random.default_rng(3)
    n = 3000
    base = 0.05 * rng.standard_normal((n, 3))
    base[1200:, :2] += [0.6, -0.4]
    frame = pd.DataFrame(base, columns=["loss", "reward_mean", "lr"], index=pd.Index(np.arange(n), name="step"))
    frame.loc[:, "lr"] = np.nan  # the skipped-series note must come back from a worker too
    serial = analyze_series(frame)
    monkeypatch.setattr(pipeline, "PARALLEL_VALUES", 0)
    forked = analyze_series(frame)
    pd.testing.assert_frame_equal(forked.jumps, serial.jumps)
    pd.testing.assert_frame_equal(forked.plateaus, serial.plateaus)
    pd.testing.assert_frame_equal(forked.transitions, serial.transitions)
    assert forked.notes == serial.notes and any("lr" in note for note in serial.notes)
    assert abs(serial.transitions.iloc[0]["step"] - 1200) <= 2


def test_row_medians_equal_numpy_median():
    from discrepancy.analysis.changepoints.axes import row_medians

    rng = np.random.default_rng(7)
    for f in (1, 2, 3, 20, 21, 64, 65, 200):
        a = np.round(rng.standard_normal((301, f)), 1)  # repeated values too
        np.testing.assert_array_equal(row_medians(a), np.median(a, axis=1))


def test_timing_series_plotted_but_not_searched_unless_asked():
    rng = np.random.default_rng(3)
    n = 400
    step = np.r_[np.zeros(200), np.ones(200)]  # every series jumps by 1 at step 200 (20 σ)
    frame = pd.DataFrame({name: step + 0.05 * rng.standard_normal(n)
                          for name in ("loss", "reward_mean", "step_time", "time_grad_noise")},
                         index=pd.Index(np.arange(n), name="step"))
    assert family_of("time_grad_noise") == "timing" and family_of("step_time") == "timing"  # their own figure
    assert all(family_of(n) == "timing" for n in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second"))
    default = analyze_series(frame)
    assert set(default.jumps["signal"]) == {"loss", "reward_mean"}
    assert default.plateaus["signal"].isin(["step_time", "time_grad_noise"]).sum() == 0
    assert set(default.signals["signal"]) == set(frame.columns)  # still in the figures
    assert "time_grad_noise" not in default.transitions.iloc[0]["signals"]
    asked = analyze_series(frame, timing_jumps=True)
    assert set(asked.jumps["signal"]) == set(frame.columns)
    assert all(abs(s - 200) <= 2 for s in asked.jumps["step"])
    assert asked.transitions.iloc[0]["n_signals"] == 4


def test_schedules_smoothed_copies_and_duplicates_do_not_make_transitions():
    """A warm-up kink of lr, an EWMA of a spiky series, and one quantity logged twice: no phase transition."""
    rng = np.random.default_rng(3)
    n = 150
    lr = np.minimum(np.arange(1, n + 1) / 10, 1.0) * 1e-4  # warm-up: a kink set by the config
    raw = 0.4 + 0.05 * rng.standard_normal(n)
    raw[100] = 16.0  # one spike: the raw series drops it, its EWMA would turn it into a step
    ewma = pd.Series(raw).ewm(alpha=0.1).mean().to_numpy()
    loss = 0.1 * rng.standard_normal(n)
    loss[90:] += 2.0  # a real jump, but of one quantity logged twice
    frame = pd.DataFrame({"lr": lr, "noise_trace": raw, "noise_trace_ewma": ewma, "loss": loss, "loss_pre": loss.copy()},
                         index=pd.Index(np.arange(1, n + 1), name="step"))
    res = analyze_series(frame, min_signals=2)
    assert set(res.jumps["signal"]) == {"loss", "loss_pre"}  # lr and the EWMA are not searched, the spike is no jump
    assert res.transitions.empty  # loss and loss_pre count once
    noisy = frame.assign(loss_pre=loss + 0.1 * rng.standard_normal(n))  # a second, independent measurement
    assert len(analyze_series(noisy, min_signals=2).transitions) == 1
    assert family_of("len_correct") == family_of("len_incorrect") == "lengths"
    assert family_of("reward_correctness") == "rewards"


def test_events_steps_are_inclusive_for_every_kind(run_file: Path):
    res = analyze(run_file)
    ev = res.events()
    steps = set(res.series.index)
    assert (ev["start_step"] <= ev["end_step"]).all() and set(ev["end_step"]) <= steps  # logged steps, inclusive
    plats = ev[ev["kind"] == "plateau"].reset_index(drop=True)
    assert (plats["end_step"].to_numpy() < res.plateaus["end_step"].to_numpy()).all()  # the table's end is exclusive
    tr = ev[ev["kind"] == "phase_transition"]
    assert (tr["n_families"] >= 1).all() and (tr["start_step"] <= tr["step"]).all()


def test_duplicate_groups_join_copies_not_two_trends():
    """A rescaled copy counts once; two separately noisy quantities sharing a trend (level correlation > 0.999)
    stay two signals, since their step-by-step changes are unrelated."""
    from discrepancy.analysis.pipeline import duplicate_groups

    rng = np.random.default_rng(0)
    t = np.arange(300.0)
    frame = pd.DataFrame({"a": t + rng.normal(0, 0.5, 300), "b": 1.01 * t + rng.normal(0, 0.5, 300)})
    frame["copy"] = -2.0 * frame["a"] + 1.0
    assert np.corrcoef(frame["a"], frame["b"])[0, 1] > 0.999
    assert duplicate_groups(frame, ["a", "b", "copy"]) == {"a": ["copy"]}


def test_constant_series_are_neither_searched_nor_drawn_and_said_once():
    """Clip ratios ≡ 0, the ratio ≡ 1 at one inner iteration, skipped ≡ 0: no plateau, no figure, one note."""
    rng = np.random.default_rng(12)
    n = 300
    frame = pd.DataFrame({"loss": rng.standard_normal(n), "clip_ratio_low": np.zeros(n), "ratio_mean": np.ones(n),
                          "skipped": np.zeros(n), "beta": np.full(n, 0.01)}, index=pd.Index(np.arange(n), name="step"))
    frame.loc[5, "skipped"] = np.nan  # a gap does not make a constant series variable
    res = analyze_series(frame)
    assert res.constant == {"clip_ratio_low": 0.0, "ratio_mean": 1.0, "skipped": 0.0, "beta": 0.01}
    assert list(res.signals["signal"]) == ["loss"] and res.plateaus["signal"].isin(list(res.constant)).sum() == 0
    notes = [n for n in res.notes if "constant" in n]
    assert len(notes) == 1 and "ratio_mean ≡ 1" in notes[0] and "beta ≡ 0.01" in notes[0]
    one_step = frame.assign(skipped=(np.arange(n) == 150).astype(float))  # one skipped update: searched, found
    found = analyze_series(one_step).transients
    assert list(found.loc[found["signal"] == "skipped", "step"]) == [150]


def test_controller_decisions_are_drawn_not_searched():
    """The controllers' multipliers and their decision flags (a sum of bits) are the trainer's settings, like lr:
    no jump, plateau or transient of theirs, drawn all the same."""
    from discrepancy.analysis.selection import not_searched

    names = ["loss", "ctl_action", "ctl_beta_scale", "ctl_lr_scale", "ctl_temperature_scale", "ctl_batch_scale"]
    assert not_searched(names) == {n: "schedule" for n in names[1:]}


def test_measurement_bookkeeping_is_neither_searched_nor_drawn():
    """Which micro-batch the post-step measurements read (a 0/1 rotation, NaN between measured steps) and how many
    rows: not in the analysed frame (so not drawn), not searched, said once."""
    n = 200
    micro = np.where(np.arange(n) % 4 == 0, (np.arange(n) // 4) % 2, np.nan)
    frame = pd.DataFrame({"loss": np.random.default_rng(3).standard_normal(n), "discrepancy_micro": micro,
                          "discrepancy_rows": np.where(np.isfinite(micro), 32.0, np.nan)},
                         index=pd.Index(np.arange(1, n + 1), name="step"))
    res = analyze_series(frame)
    assert list(res.series.columns) == ["loss"] and list(res.signals["signal"]) == ["loss"]
    notes = [n for n in res.notes if "bookkeeping" in n]
    assert len(notes) == 1 and "discrepancy_micro, discrepancy_rows" in notes[0]


def test_events_columns_mean_one_thing_for_every_kind(run_file: Path):
    from discrepancy.runfile.results import EVENT_COLUMNS, EVENT_DOCS

    res = analyze(run_file)
    ev = res.events()
    assert set(EVENT_DOCS) >= set(EVENT_COLUMNS) and ev["event"].str.len().min() >= 2  # every row has an id
    jumps = ev[ev["kind"] == "jump"]
    assert (jumps["signals"] == jumps["signal"]).all() and (jumps["n_families"] == 1).all()
    assert np.allclose(jumps["score"], res.jumps["z"].abs())  # strength ≥ 0; the direction is in size
    plats = ev[ev["kind"] == "plateau"].reset_index(drop=True)
    sigma = res.signals.set_index("signal")["sigma"]
    expected = res.plateaus["drop"].abs().to_numpy() / res.plateaus["signal"].map(sigma).to_numpy()
    assert np.allclose(plats["score"], expected, equal_nan=True)  # |change that ended it| / σ̂, not its level


def test_jumps_at_consecutive_steps_are_one_transition_however_long():
    """A group spans at most the tolerance from its first jump, but a run of jumps without a gap is one event: jumps
    at steps 97..107 (one a step) group into one transition, while the same jumps two steps apart split in two."""
    steps = list(range(97, 108))
    chain = pd.DataFrame({"signal": [f"s{i}" for i in range(len(steps))], "step": steps, "z": 5.0})
    one = group_transitions(chain, tolerance=5)
    assert len(one) == 1 and (one["first_step"].iloc[0], one["last_step"].iloc[0]) == (97, 107)
    spaced = chain.assign(step=[97 + 2 * i for i in range(len(steps))])
    assert len(group_transitions(spaced, tolerance=5)) >= 2


def test_units_come_from_descriptions_then_names_and_weights_have_none():
    """Axis units: a description's words first, then the name; a reward weight or a controller's multiplier is
    dimensionless even when its name holds "length" or "kl"."""
    from discrepancy.analysis.units import unit_of

    assert unit_of("x", "seconds spent sampling") == "s" and unit_of("completion_length_mean") == "tokens"
    assert unit_of("kl") == "nats" and unit_of("reward_mean") == "reward"
    assert unit_of("reward_weight_length") == unit_of("ctl_temperature_scale") == unit_of("reward_weight_kl") == ""
