"""Early warning inside `train_run`: a console line and an events-array row per event, `stop_on="critical"` stops
cleanly at the planted step with a checkpoint and the run resumes to the end, and the user's command can neither
stop nor slow training beyond its timeout (a failing and a hanging command)."""

from __future__ import annotations

import math
import sys
import time

import pytest

from discrepancy.analysis.online import EVENTS_ARRAY, VALUES_ARRAY, check_names
from discrepancy.analysis.online.actions import EventHook
from discrepancy.analysis.online.events import Event, recorded_events
from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers import run as run_module
from discrepancy.trainers.checkpoint import checkpoint_path
from discrepancy.trainers.run import train_run

# The fast test config's 8-token completions are often all truncated: a true all_truncated event, not planted here.
QUIET_TRUNCATION = "early_warning.truncated_steps=100000"


@pytest.fixture()
def planted(monkeypatch):
    """Make the recorded grad_norm NaN at the steps in the returned set (training itself is untouched)."""
    steps: set[int] = set()
    real = run_module.grpo_step

    def step(state):
        result = real(state)
        if state.step in steps:
            result.metrics["grad_norm"] = math.nan
        return result

    monkeypatch.setattr(run_module, "grpo_step", step)
    return steps


def test_stop_on_critical_stops_cleanly_and_resumes(tmp_path, fast_train_config, planted) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "instruments.grad_noise=false", QUIET_TRUNCATION])
    planted.add(3)
    lines: list[str] = []
    out = tmp_path / "run.h5"
    summary = train_run(cfg, out, notify=lines.append, events=lambda ev: lines.append(ev.line()), stop_on="critical")
    assert (summary.status, summary.steps) == ("interrupted", 3)
    assert summary.stop_reason and "non_finite" in summary.stop_reason and summary.stop_signal is None
    assert [ln for ln in lines if ln.startswith("[early warning]")] == [
        "[early warning] step 3 critical non_finite: grad_norm is NaN/inf after finite values"]
    assert checkpoint_path(out).is_file()
    with open_run(out) as run:
        assert run.status == "interrupted"
        assert "stopped by early warning at step 3: critical non_finite" in run.status_message
        assert "--resume" in run.status_message
        codes, values = run.array(EVENTS_ARRAY), run.array(VALUES_ARRAY)
        assert list(codes.columns) == check_names(cfg.early_warning)
        assert recorded_events(codes, values)[0][:3] == (3, "non_finite", "critical")
        assert run.snapshot_steps[-1] == 3
    planted.clear()
    lines.clear()
    resumed = train_run(cfg, out, resume=True, notify=lines.append, events=lambda ev: lines.append(ev.line()),
                        stop_on="critical")
    assert (resumed.status, resumed.steps, resumed.stop_reason) == ("finished", 6, None)
    assert not [ln for ln in lines if ln.startswith("[early warning]")]  # the replayed streak does not fire again
    with open_run(out) as run:
        assert run.status == "finished" and list(run.steps) == list(range(1, 7))


def test_events_never_stop_a_run_without_stop_on(tmp_path, fast_train_config, planted) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=4", "instruments.grad_noise=false", QUIET_TRUNCATION])
    planted.update({2, 4})  # two streaks: the rule re-arms at step 3
    lines: list[str] = []
    summary = train_run(cfg, tmp_path / "run.h5", events=lambda ev: lines.append(ev.line()))
    assert (summary.status, summary.steps) == ("finished", 4)
    warned = [ln for ln in lines if ln.startswith("[early warning]")]
    assert [ln.split()[3] for ln in warned] == ["2", "4"]


@pytest.mark.parametrize("command", ["false", f"{sys.executable} -c \"import time; time.sleep(30)\"",
                                     "no-such-command-anywhere {event}"])
def test_user_command_can_neither_stop_nor_slow_training(tmp_path, fast_train_config, planted, command) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=3", "instruments.grad_noise=false", QUIET_TRUNCATION,
                                              "early_warning.on_event_timeout=1.0"])
    cfg.early_warning.on_event = command + " {event} {step}"
    planted.add(2)
    lines: list[str] = []
    t0 = time.perf_counter()
    summary = train_run(cfg, tmp_path / "run.h5", notify=lines.append)
    assert summary.status == "finished" and summary.steps == 3
    assert time.perf_counter() - t0 < 25.0  # the 30 s command was killed after its 1 s timeout
    notes = [ln for ln in lines if ln.startswith("early_warning.on_event")]
    assert len(notes) == 1 and any(w in notes[0] for w in ("exited with 1", "killed", "could not start"))


def test_hook_returns_at_once_and_kills_after_its_timeout(tmp_path) -> None:
    marker = tmp_path / "ran"
    notes: list[str] = []
    hook = EventHook(f"{sys.executable} -c \"import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text("
                     f"sys.argv[2]); time.sleep(30)\" {marker} {{event}}@{{step}}", timeout=0.5, notify=notes.append)
    ev = Event(7, "kl_blowup", "critical", "kl", 3.0, 1.5, 6, "x; rm -rf /")  # text is never given to a shell
    t0 = time.perf_counter()
    hook.fire(ev)
    assert time.perf_counter() - t0 < 0.5
    proc = hook.running[0][0]
    hook.close()
    assert proc.poll() is not None and time.perf_counter() - t0 < 3.0
    assert marker.read_text() == "kl_blowup@7"
    assert any("killed" in n for n in notes)


def test_bad_stop_on_is_one_line() -> None:
    from typer.testing import CliRunner

    from discrepancy.cli import app

    res = CliRunner().invoke(app, ["train", "--stop-on", "sometimes", "--print-config"])
    assert res.exit_code != 0 and res.stderr.strip() == "error: --stop-on must be never, warning or critical, got " \
                                                        "'sometimes'"


def test_dossier_keeps_every_completion_and_snapshots_that_rebuild_their_step(tmp_path, fast_train_config,
                                                                              planted) -> None:
    import numpy as np

    cfg = apply_overrides(fast_train_config, ["run.steps=6", "instruments.grad_noise=false", QUIET_TRUNCATION,
                                              "early_warning.dossier_steps=2", "run.snapshot_every=100"])
    planted.add(2)
    train_run(cfg, tmp_path / "a.h5")
    planted.clear()
    train_run(cfg, tmp_path / "b.h5", stop_at=2)  # the same run stopped at the event: its model at step 2
    per_step = cfg.grpo.num_prompts * cfg.grpo.group_size
    with open_run(tmp_path / "a.h5") as a, open_run(tmp_path / "b.h5") as b:
        assert a.snapshot_steps == [0, 2, 4, 6]  # start, the event, the end of its window, the end of the run
        counts = a.samples().groupby("step").size().to_dict()
        assert counts == {1: 2, 2: per_step, 3: per_step, 4: per_step, 5: 2, 6: 2}
        assert set(cfg.rewards.names) <= set(a.samples().columns)  # with each completion's reward components
        snap_a, snap_b = a.snapshot(2), b.snapshot(2)
        assert snap_a.keys() == snap_b.keys()
        for name in snap_a:
            np.testing.assert_array_equal(snap_a[name], snap_b[name])
    from discrepancy.report.training_events import training_events_section

    section = training_events_section(tmp_path / "a.h5")  # the report's section shows the dossier
    assert "Events while training" in section and "critical non_finite at step 2" in section
    assert f"completions recorded at its step: {per_step}" in section and "snapshots near it: 0, 2, 4, 6" in section
    assert training_events_section(None) == ""
    from discrepancy.analysis.pipeline import analyze
    from discrepancy.report.headline import where_to_look
    from discrepancy.report.training_events import serious_events

    assert serious_events(tmp_path / "a.h5")[0] == (2, "non_finite", "critical")
    assert "non_finite (critical) at step 2" in where_to_look(analyze(tmp_path / "a.h5"))[0]  # on the first screen


def test_a_run_created_before_the_events_arrays_resumes_with_console_lines(tmp_path, fast_train_config, planted,
                                                                           monkeypatch) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=4", "instruments.grad_noise=false", QUIET_TRUNCATION])
    with monkeypatch.context() as m:  # the run file of an older version: no early_warning arrays in its schema
        m.setattr(run_module, "event_arrays", lambda columns: {})
        train_run(cfg, tmp_path / "old.h5", stop_at=2)
    planted.add(3)
    lines: list[str] = []
    cfg = apply_overrides(cfg, ["run.steps=4"])
    summary = train_run(cfg, tmp_path / "old.h5", resume=True, events=lambda ev: lines.append(ev.line()))
    assert summary.status == "finished" and [ln.split()[3] for ln in lines] == ["3"]
    with open_run(tmp_path / "old.h5") as run:
        assert EVENTS_ARRAY not in run.schema.arrays
