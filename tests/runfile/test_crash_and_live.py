"""Crash safety and live reading, with real writer processes (kill -9, SIGTERM) and a second reader process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from discrepancy.runfile import Recorder, RunFileError, RunSchema, open_run, recover


@pytest.mark.parametrize("steps,flush_every", [(25, 10), (7, 3), (3, 10)])
def test_kill_9_keeps_every_flushed_step(tmp_path, writer, steps, flush_every):
    path = tmp_path / "run.h5"
    proc, flushed = writer(path, steps, flush_every)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_run(path) as run:
        assert run.status == "incomplete"  # stored "running", writer gone
        assert run.stored_status == "running"
        assert run.num_steps == flushed
        df = run.series()
        # Values are exactly what the writer logged, for every flushed step.
        np.testing.assert_array_equal(df.index.to_numpy(), np.arange(flushed))
        np.testing.assert_array_equal(df["s3"].to_numpy(), np.arange(flushed) * 10 + 3)
        np.testing.assert_array_equal(run.array("norm")["b"].to_numpy(), -np.arange(flushed))
        assert run.snapshot_steps == [0]
        np.testing.assert_array_equal(run.snapshot(0)["lora_A"], np.zeros((2, 3)))
    if steps == 25:  # inspect says what to do with it
        from typer.testing import CliRunner

        from discrepancy.cli import app

        shown = CliRunner().invoke(app, ["inspect", str(path)]).output
        assert "writer stopped without finishing" in " ".join(shown.split()) and "discrepancy recover" in shown
    # recover writes a clean closed copy that a plain (non-SWMR) open accepts and that can be resumed.
    result = recover(path)
    assert (result.num_steps, result.status_before, result.status_after) == (flushed, "incomplete", "interrupted")
    with open_run(result.out) as run:
        assert run.status == "interrupted" and run.num_steps == flushed
        # The writer logs a step's samples after the step row that triggers the flush, so the last flushed
        # step's samples may still have been in memory: every earlier step's samples must be there.
        completions = list(run.samples()["completion"])
        assert completions == [f"c{s}" for s in range(len(completions))]
        assert flushed - 1 <= len(completions) <= flushed
    with Recorder.resume(result.out, from_step=flushed) as rec:
        rec.log_step(flushed, {"s0": -1.0})
        rec.finish()
    with open_run(result.out) as run:
        assert run.status == "finished" and run.num_steps == flushed + 1
        assert run.series()["s0"].iloc[-1] == -1.0


def test_sigterm_closes_with_status_interrupted(tmp_path, writer):
    path = tmp_path / "run.h5"
    proc, _ = writer(path, 13, 5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    with open_run(path) as run:
        assert run.status == "interrupted"
        assert "Terminated" in run.status_message
        assert run.num_steps == 13  # a clean close flushes the buffered steps too


def test_finished_run(tmp_path, writer):
    path = tmp_path / "run.h5"
    proc, _ = writer(path, 12, 5, mode="finish")
    assert proc.wait(timeout=30) == 0
    with open_run(path) as run:
        assert run.status == "finished" and run.num_steps == 12


_READER = """
import json, sys
from discrepancy.runfile import open_run
with open_run(sys.argv[1]) as run:
    print(json.dumps({"status": run.status, "steps": run.num_steps, "last": float(run.series()["a"].iloc[-1])}))
"""


def test_live_run_is_readable_from_another_process(tmp_path):
    from discrepancy.runfile import RunSchema

    path = tmp_path / "live.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}), flush_every=4) as rec:
        seen = []
        for step in range(12):
            rec.log_step(step, {"a": step * 2.0})
            if step in (4, 9):
                out = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True,
                                     timeout=60)
                assert out.returncode == 0, out.stderr
                seen.append(json.loads(out.stdout))
        rec.finish()
    # At step 4 the writer had flushed 4 rows (0..3), at step 9 eight rows (0..7): exactly the flushed prefix.
    assert seen == [{"status": "running", "steps": 4, "last": 6.0}, {"status": "running", "steps": 8, "last": 14.0}]


def test_same_process_reader_follows_a_live_writer(tmp_path):
    from discrepancy.runfile import RunSchema

    path = tmp_path / "live.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}), flush_every=2) as rec:
        rec.log_step(0, {"a": 1.0})
        with open_run(path) as run:
            assert run.num_steps == 0
            rec.log_step(1, {"a": 2.0})
            assert run.num_steps == 2  # refresh() inside num_steps sees the new flush
        rec.finish()


def test_resume_continues_a_crashed_run_and_refuses_a_live_one(tmp_path, writer):
    """Resuming rewrites the kept records into a new file (a kill cannot leave the run half-truncated), so a run
    whose writer was killed resumes directly; one whose writer is alive is refused, naming it."""
    path = tmp_path / "run.h5"
    proc, flushed = writer(path, 5, 2)
    assert flushed == 5  # the snapshot of step 0 flushes too
    with pytest.raises(RunFileError, match="still being written"):
        Recorder.resume(path, from_step=2)
    proc.kill()
    proc.wait()
    with Recorder.resume(path, from_step=2) as rec:
        rec.log_step(2, {"s0": -1.0})
        rec.finish()
    with open_run(path) as run:
        assert run.status == "finished" and list(run.steps) == [0, 1, 2]
        assert run.series()["s0"].tolist() == [0.0, 10.0, -1.0]
        assert list(run.samples()["completion"]) == ["c0", "c1"]  # samples of dropped steps go too
        assert run.snapshot_steps == [0]


@pytest.mark.slow
def test_sample_strings_of_a_live_run_always_read(tmp_path):
    """HDF5's SWMR mode does not cover variable-length strings: a reader can see new sample rows before their
    strings. Opening (with the file check) and reading samples while a writer flushes every few milliseconds must
    never fail, nor lose rows it had already seen."""
    path = tmp_path / "live.h5"
    script = Path(__file__).parent / "_fast_writer.py"
    stop = tmp_path / "stop"
    # The writer runs until told to stop (at most 120 s): each open runs the file check in a child process, which
    # takes seconds on a loaded machine, and the test needs 20 reads however slow the machine is.
    proc = subprocess.Popen([sys.executable, str(script), str(path), "120", str(stop)])
    try:
        deadline = time.time() + 30
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        reads, seen = 0, 0
        end = time.time() + 8
        while (time.time() < end or reads < 20) and proc.poll() is None:
            with open_run(path) as run:
                for _ in range(4):
                    samples = run.samples()
                    assert len(samples) >= seen and len(samples) % 4 == 0
                    assert all(pid == f"p{s}-{i % 4}" for i, (pid, s) in
                               enumerate(zip(samples["prompt_id"], samples["step"])))
                    seen = len(samples)
                    reads += 1
        assert reads >= 20 and seen > 0
    finally:
        stop.touch()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_recover_in_place_refuses_a_run_whose_writer_is_alive(tmp_path):
    path = tmp_path / "live.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}), flush_every=1) as rec:  # this process is its writer
        rec.log_step(1, {"a": 1.0})
        rec.flush()
        with pytest.raises(RunFileError, match="still being written"):
            recover(path, in_place=True)
        copy = recover(path, tmp_path / "copy.h5")  # a copy leaves the live run alone
        assert copy.num_steps == 1
        rec.log_step(2, {"a": 2.0})
        rec.finish()
    with open_run(path) as run:
        assert run.status == "finished" and run.num_steps == 2
