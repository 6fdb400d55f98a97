"""Durability of the run file: kill -9 during a resume, a file left flagged "open for writing" by a dead process,
and a full disk while the recorder writes (simulated with RLIMIT_FSIZE in a child, and with a real 2 MB tmpfs where
this machine lets the test mount one)."""

from __future__ import annotations

import hashlib
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from corpus import _killed_plain_writer
from discrepancy.cli import app
from discrepancy.runfile import Recorder, RunSchema, RunWriteError, open_run, recover

HERE = Path(__file__).parent
runner = CliRunner()


def make_long_run(path: Path, steps: int = 2000) -> Path:
    """``steps`` steps of 20 series (s0 = step), a sample per step, a 256×256 snapshot every 100 steps (~6 MB)."""
    schema = RunSchema(series={f"s{i}": "" for i in range(20)}, sample_fields=["r"], snapshot_tensors={"w": (256, 256)})
    with Recorder.create(path, schema, flush_every=50) as rec:
        for step in range(steps):
            rec.log_step(step, {f"s{i}": float(step + i) for i in range(20)})
            rec.log_samples(step, prompt_ids=["p"], prompts=["q"], completions=[f"c{step}"], fields={"r": [1.0]})
            if step % 100 == 0:
                rec.log_snapshot(step, {"w": np.full((256, 256), step, dtype=np.float32)})
        rec.finish()
    return path


@pytest.mark.slow
def test_kill_9_at_any_moment_of_a_resume_never_bricks_the_run(tmp_path):
    base = make_long_run(tmp_path / "base.h5")
    for k, delay in enumerate((0.0, 0.03, 0.08, 0.15, 0.3, 0.6)):
        path = tmp_path / f"run{k}.h5"
        shutil.copy(base, path)
        proc = subprocess.Popen([sys.executable, str(HERE / "_resumer.py"), str(path), "1000"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "START\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_run(path) as run:  # the old run, or the resumed one: never a file no reader opens
            steps, s0 = run.steps, run.series()["s0"].to_numpy()
            old = run.status == "finished"
            assert old or run.status == "incomplete", run.status
            assert len(steps) == (2000 if old else len(steps)) and len(steps) >= 1000
            np.testing.assert_array_equal(steps, np.arange(len(steps)))
            np.testing.assert_array_equal(s0[:1000], np.arange(1000))
            np.testing.assert_array_equal(s0[1000:], np.arange(1000, len(steps)) * (1 if old else -1))
        assert recover(path, tmp_path / f"recovered{k}.h5").num_steps == len(steps)
        with Recorder.resume(path, from_step=1000) as rec:  # and it resumes
            rec.log_step(1000, {"s0": 0.5})
            rec.finish()
        with open_run(path) as run:
            assert run.status == "finished" and run.num_steps == 1001 and run.series()["s0"].iloc[-1] == 0.5
            assert run.snapshot_steps == list(range(0, 1000, 100))
        assert not list(tmp_path.glob(f".run{k}.h5.*")), "a temporary file was left behind"


def test_a_file_a_dead_process_left_open_for_writing_reads_recovers_and_resumes(tmp_path):
    """The header flags of a process killed while it had the file open read-write (without SWMR): HDF5 refuses
    every open ("already open for write", "not already open for SWMR writing"); our readers read it unchanged."""
    good = make_long_run(tmp_path / "good.h5", steps=30)
    path = _killed_plain_writer(good, tmp_path / "flagged.h5")
    for swmr, refusal in ((False, "already open for write"), (True, "not already open for SWMR writing")):
        with pytest.raises(OSError, match=refusal):
            h5py.File(path, "r", swmr=swmr)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0 and '"num_steps": 30' in result.stdout, result.output
    with open_run(path) as run, open_run(good) as intact:
        assert run.mode == "abandoned" and run.status == "finished"
        assert run.series().equals(intact.series()) and run.samples().equals(intact.samples())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # reading never writes
    assert runner.invoke(app, ["recover", str(path), "--out", str(tmp_path / "clean.h5")]).exit_code == 0
    with h5py.File(tmp_path / "clean.h5", "r") as f:  # a plain HDF5 open accepts the copy
        assert f["series/step"].shape == (30,)
    with Recorder.resume(path, from_step=30) as rec:
        rec.log_step(30, {"s0": -1.0})
        rec.finish()
    with open_run(path) as run:
        assert run.mode == "closed" and run.num_steps == 31


_ONE_LINE = re.compile(r"error: (?P<path>\S+): (?P<cause>the disk is full|the file size limit is reached) while "
                       r"writing [^:]+: the run file keeps at least its first (?P<n>\d+) steps \(up to step "
                       r"(?P<last>\d+), its last complete flush\) and stays readable; make room, then continue the run "
                       r"with `discrepancy train --out (?P=path) --resume`")


def _fill(path: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    def cap() -> None:  # in the child: writes beyond `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, str(HERE / "_filler.py"), str(path)], capture_output=True, text=True,
                          timeout=120, preexec_fn=cap if limit else None)


def _check_full_disk_outcome(proc: subprocess.CompletedProcess, path: Path, cause: str) -> int:
    """One line, a non-zero exit (not a signal), and a run file holding every step the line calls safe."""
    assert proc.returncode == 3, (proc.returncode, proc.stderr)  # RunFileError's code; was SIGSEGV (-11) or 139
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    found = _ONE_LINE.fullmatch(lines[0])
    assert found and found["cause"] == cause and found["path"] == str(path), lines[0]
    safe, last = int(found["n"]), int(found["last"])
    assert safe == last + 1 and safe > 0
    with open_run(path) as run:
        assert run.status == "incomplete" and run.num_steps >= safe
        np.testing.assert_array_equal(run.steps, np.arange(run.num_steps))
        np.testing.assert_array_equal(run.series()["s3"], np.arange(run.num_steps) * 100 + 3)
        assert run.snapshot_steps == list(range(0, run.snapshot_steps[-1] + 1, 20))
    assert not list(path.parent.glob(f".{path.name}.*"))
    return last


def test_a_full_disk_ends_in_one_line_and_a_readable_run(tmp_path):
    path = tmp_path / "run.h5"
    last = _check_full_disk_outcome(_fill(path, limit=2_000_000), path, "the file size limit is reached")
    with Recorder.resume(path, from_step=last + 1, flush_every=5) as rec:  # room again: it continues
        rec.log_step(last + 1, {"s0": 1.0})
        rec.finish()
    with open_run(path) as run:
        assert run.status == "finished" and run.steps[-1] == last + 1


def test_a_full_tmpfs_ends_in_one_line_and_a_readable_run(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine does not let the test mount a tmpfs (root needed); RLIMIT_FSIZE covers it")
    try:
        path = mount / "run.h5"
        last = _check_full_disk_outcome(_fill(path), path, "the disk is full")
        with pytest.raises(RunWriteError, match="the disk is full while writing the copy .*nothing was changed"):
            Recorder.resume(path, from_step=last + 1)  # resuming needs room for a copy: said, and nothing lost
        with open_run(path) as run:
            assert run.num_steps > last
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_run_flagged_by_a_writer_on_another_host_is_read_as_abandoned(tmp_path, monkeypatch):
    """Its writer cannot be seen from here: an SWMR reader (which retries a damaged checksum for minutes) is used only
    for a writer alive on this host."""
    from discrepancy.runfile import opening

    path = tmp_path / "run.h5"
    rec = Recorder.create(path, RunSchema(series={"a": ""}), flush_every=1)
    rec.log_step(0, {"a": 1.0})
    assert opening.choose_mode(path, opening.read_header(path)) == "live"
    monkeypatch.setattr(opening.socket, "gethostname", lambda: "another-host")
    assert opening.choose_mode(path, opening.read_header(path)) == "abandoned"
    rec.finish()
    assert opening.choose_mode(path, opening.read_header(path)) == "closed"
