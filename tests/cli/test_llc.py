"""``discrepancy llc``: JSON on stdout, progress lines on stderr outside a terminal, the same --format values as the
other commands, one-line failures that leave no folder, refused option changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discrepancy.cli import app

from sample_runs import STEPS
from sample_runs import tiny_snapshot_run as _tiny_run


@pytest.mark.slow
def test_cli_writes_json_to_stdout_and_progress_to_stderr(tmp_path: Path) -> None:
    """--format takes table|json like analyze and inspect (it took csv before); outside a terminal (CliRunner is
    none) every phase prints a plain line on stderr: the calibration with its cost, then one line per snapshot."""
    run = _tiny_run(tmp_path)
    res = CliRunner().invoke(app, ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [r["step"] for r in doc["estimates"]] == list(STEPS)
    assert {"llc_mean", "llc_se", "chains_ok", "health"} <= set(doc["estimates"][0])
    assert all(isinstance(r["llc_per_chain"], list) and len(r["llc_per_chain"]) == 2 for r in doc["estimates"])
    assert doc["settings"]["calibration_seconds"] > 0 and doc["settings"]["loss"] == "self_kl"
    assert isinstance(doc["stage_boundaries"], list)
    lines = res.stderr.splitlines()
    assert any(line.startswith("calibrating") for line in lines)
    assert any(line.startswith("calibrated in ") and " s: ε = " in line for line in lines)
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        f"[{i + 1}/{len(STEPS)}] step {s}" for i, s in enumerate(STEPS)]
    assert (tmp_path / "run.h5.analysis" / "llc.csv").exists()
    again = CliRunner().invoke(app, ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2"])
    assert again.exit_code == 0 and "reusing the calibration" in again.stderr
    assert not any(line.startswith("[") for line in again.stderr.splitlines())  # every snapshot was already done
    missing = CliRunner().invoke(app, ["llc", str(tmp_path / "nope.h5")])
    assert missing.exit_code != 0 and "not found" in missing.output
    wrong = CliRunner().invoke(app, ["llc", str(run), "--format", "csv"])
    assert wrong.exit_code == 2 and "table" in wrong.output and "json" in wrong.output


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


@pytest.mark.slow
def test_a_base_model_outside_the_run_folder_needs_trust_run(tmp_path: Path) -> None:
    """A received run file never sends the reader elsewhere: its recorded base model outside the run's folder is
    refused in one line naming --trust-run, leaving no folder; with --trust-run the estimates are made."""
    (tmp_path / "runs").mkdir()
    run = _tiny_run(tmp_path / "runs", base_at=(tmp_path / "elsewhere" / "model").resolve())
    args = ["llc", str(run), "--chains", "2", "--draws", "4", "--burnin", "1", "--format", "json"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0
    assert "--trust-run" in refused.output and len(refused.output.strip().splitlines()) == 1, refused.output
    assert not (tmp_path / "runs" / "run.h5.analysis").exists()
    trusted = CliRunner().invoke(app, [*args, "--trust-run"])
    assert trusted.exit_code == 0, trusted.output
    assert [r["step"] for r in json.loads(trusted.stdout)["estimates"]] == list(STEPS)
