"""``discrepancy watch``: the events of a finished run, and of a live run written by another process as they come
(SWMR), with the trainer's event lines; bad input is one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import Recorder, RunSchema

PLANT = 30  # truncated_frac = 1 from this step: all_truncated fires at PLANT + 2 (patience 3)

WRITER = textwrap.dedent("""
    import sys, time
    from discrepancy.runfile import Recorder, RunSchema
    path, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    schema = RunSchema(series={"truncated_frac": "share truncated", "reward_mean": "reward"})
    with Recorder.create(path, schema, flush_every=1) as rec:
        for step in range(1, steps + 1):
            rec.log_step(step, {"truncated_frac": 1.0 if step >= %d else 0.0, "reward_mean": 0.5})
            time.sleep(pause)
        rec.finish()
""" % PLANT)


def write_run(path, steps: int) -> None:
    schema = RunSchema(series={"truncated_frac": "share truncated", "reward_mean": "reward"})
    with Recorder.create(path, schema, flush_every=1) as rec:
        for step in range(1, steps + 1):
            rec.log_step(step, {"truncated_frac": 1.0 if step >= PLANT else 0.0, "reward_mean": 0.5})
        rec.finish()


def test_finished_run(tmp_path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, 50)
    res = CliRunner().invoke(app, ["watch", str(path), "--once"])
    assert res.exit_code == 4, res.output  # a critical event was printed (--fail-on critical)
    assert res.stdout.splitlines() == [
        f"[early warning] step {PLANT + 2} critical all_truncated: every completion hits max_completion_length "
        "(truncated_frac 1 ≥ 0.999) for 3 steps"]
    assert "run finished after step 50" in res.stderr


def test_live_run_written_by_another_process(tmp_path) -> None:
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "60", "0.05"])
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:  # created under a temporary name, then renamed
            time.sleep(0.05)
        res = CliRunner().invoke(app, ["watch", str(path), "--interval", "0.1"])
    finally:
        writer.wait(60)
    assert res.exit_code == 4, res.output
    assert [ln.split()[3] for ln in res.stdout.splitlines()] == [str(PLANT + 2)]
    assert "run finished after step 60" in res.stderr


def test_not_a_run_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    res = CliRunner().invoke(app, ["watch", str(bad), "--once"])
    assert res.exit_code != 0 and res.stderr.count("\n") == 1 and res.stderr.startswith("error:")
    assert "Traceback" not in res.output


def test_exit_code_says_whether_a_critical_event_was_seen(tmp_path) -> None:
    """Exit 4 after a critical event (the default --fail-on), 0 with --fail-on never; a bad --fail-on is a usage
    error (exit 2, as every option's)."""
    path = tmp_path / "run.h5"
    write_run(path, 50)
    assert CliRunner().invoke(app, ["watch", str(path), "--once", "--fail-on", "never"]).exit_code == 0
    res = CliRunner().invoke(app, ["watch", str(path), "--once", "--fail-on", "sometimes"])
    assert res.exit_code == 2 and "sometimes" in res.output and "Traceback" not in res.output


def test_a_run_that_does_not_exist_yet_is_waited_for(tmp_path) -> None:
    """Started before the trainer has created its file: said once, then followed when it appears; after --wait
    seconds without it, one line and exit 3."""
    path = tmp_path / "late.h5"
    res = CliRunner().invoke(app, ["watch", str(path), "--wait", "0.3", "--interval", "0.1"])
    assert res.exit_code == 3 and "no such file after waiting 0.3 s" in res.stderr
    writer = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(1.0); exec({WRITER!r})", str(path),
                               "40", "0.01"])
    try:
        res = CliRunner().invoke(app, ["watch", str(path), "--wait", "60", "--interval", "0.1"])
    finally:
        writer.wait(60)
    assert res.exit_code == 4 and "waiting up to 60 s" in res.stderr and "run finished after step 40" in res.stderr
