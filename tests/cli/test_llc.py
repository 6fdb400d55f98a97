"""``discrepancy llc``: the CSV on stdout, one-line failures that leave no folder, refused option changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discrepancy.cli import app

from sample_runs import tiny_snapshot_run as _tiny_run


@pytest.mark.slow
def test_cli_writes_csv_to_stdout(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path)
    res = CliRunner().invoke(app, ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2",
                                   "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("step,llc_mean,llc_std")
    assert {"llc_se", "chains_ok", "health"} <= set(res.stdout.splitlines()[0].split(","))
    assert (tmp_path / "run.h5.analysis" / "llc.csv").exists()
    missing = CliRunner().invoke(app, ["llc", str(tmp_path / "nope.h5")])
    assert missing.exit_code != 0 and "not found" in missing.output


@pytest.mark.slow
def test_cli_failures_leave_no_folder(tmp_path: Path) -> None:
    folder = tmp_path / "adir"
    folder.mkdir()
    res = CliRunner().invoke(app, ["llc", str(folder)])
    assert res.exit_code != 0 and "not a run file" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "adir.analysis").exists()
    run = _tiny_run(tmp_path)
    shutil.rmtree(tmp_path / "run.base")  # damaged base: the model cannot be rebuilt
    res = CliRunner().invoke(app, ["llc", str(run), *"--chains 2 --draws 6 --burnin 2".split()])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit), res.output  # a one-line error, no traceback
    assert not (tmp_path / "run.h5.analysis").exists()


@pytest.mark.slow
def test_cli_refuses_changed_options_in_one_line(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path)
    args = ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "health" in ok.stdout and "s.e." in ok.stdout
    changed = CliRunner().invoke(app, args[:-2] + ["--burnin", "3", "--seed", "7"])
    assert changed.exit_code == 1 and len(changed.output.strip().splitlines()) == 1
    assert "num_burnin 2→3" in changed.output and "seed 0→7" in changed.output
