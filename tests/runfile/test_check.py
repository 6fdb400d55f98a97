"""The file check (``runfile.check``) on bad input, seen through the CLI: one clear line naming the file, a non-zero
exit code, no traceback, no hang; a damaged snapshot leaves the rest of the run readable and recoverable."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import RunCorrupted, RunTruncated, check, open_run

from sample_runs import damage_snapshot, make_good_run

runner = CliRunner()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return make_good_run(tmp_path_factory.mktemp("good") / "run.h5")


def assert_clean_error(path: Path, *, allow_ok: bool = False) -> int:
    result = runner.invoke(app, ["inspect", str(path)])
    if allow_ok and result.exit_code == 0:
        return 0
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}") and "Traceback" not in result.output
    return result.exit_code


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "random"])
def test_not_a_run(tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("step,loss\n1,0.5\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_clean_error(path)


def test_truncated_at_many_offsets(tmp_path, good_run):
    """Truncation is read from the file's header (its recorded end address against the size on disk), so it is
    named with both sizes without waiting for HDF5: a 5 s limit would otherwise end in "did not finish"."""
    data = good_run.read_bytes()
    for frac in (0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.999):
        path = tmp_path / f"trunc_{frac}.h5"
        path.write_bytes(data[: int(len(data) * frac)])
        assert_clean_error(path)
        with pytest.raises(RunTruncated, match=f"is truncated: {int(len(data) * frac):,} bytes on disk, but its "
                                               f"header records {len(data):,}"):
            check.check_run_file(path, timeout=5.0)
    path = tmp_path / "header_cut.h5"
    path.write_bytes(data[:30])  # inside the superblock itself
    with pytest.raises(RunTruncated, match="cut short inside its HDF5 header"):
        check.check_run_file(path, timeout=5.0)


def test_hdf5_but_not_a_run_and_schema_problems(tmp_path, good_run):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    assert_clean_error(other)
    newer = tmp_path / "newer.h5"
    shutil.copy(good_run, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    result = runner.invoke(app, ["inspect", str(newer)])
    assert result.exit_code != 0 and "v99, newer than this discrepancy reads" in result.output
    missing = tmp_path / "missing.h5"
    shutil.copy(good_run, missing)
    with h5py.File(missing, "r+") as f:
        del f["series/step"]
    result = runner.invoke(app, ["inspect", str(missing)])
    assert result.exit_code != 0 and "lacks series/step" in result.output


def test_flipped_bytes_never_crash_or_modify(tmp_path, good_run, monkeypatch):
    monkeypatch.setattr(check, "DEFAULT_TIMEOUT_S", 15.0)
    data = good_run.read_bytes()
    rng = random.Random(7)
    for k in range(6):
        buf = bytearray(data)
        for _ in range(8):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        path = tmp_path / f"flip{k}.h5"
        path.write_bytes(bytes(buf))
        assert_clean_error(path, allow_ok=True)
        assert path.read_bytes() == bytes(buf)  # reading never writes


def test_watchdog_refuses_a_hanging_file(tmp_path, good_run, monkeypatch):
    # Stand-in for HDF5 looping inside C on damaged bytes: a checker that never answers.
    monkeypatch.setattr(check, "_check_command", lambda path: ["sleep", "30"])
    with pytest.raises(RunCorrupted, match="did not finish within 1 s"):
        open_run(good_run, timeout=1.0)


def test_a_damaged_snapshot_leaves_the_rest_of_the_run_readable(tmp_path, good_run):
    """Flipped bytes in one snapshot's chunk: the run opens with a warning, its series read as before, and that
    snapshot raises naming itself (inspect and recover of such a run: tests/cli/test_inspect_recover.py)."""
    path = damage_snapshot(good_run, tmp_path / "damaged.h5")
    with pytest.warns(RuntimeWarning, match="1 LoRA snapshot tensor"):
        run = open_run(path)
    with run:
        assert run.num_steps == 40 and float(run.series()["s3"].iloc[-1]) == 39 + 3
        assert np.array_equal(run.snapshot(20)["w"], np.eye(4) * 20)
        with pytest.raises(RunCorrupted, match="snapshot tensor w at step 10 is damaged"):
            run.snapshot(10)
