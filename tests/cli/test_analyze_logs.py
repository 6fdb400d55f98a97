"""``discrepancy analyze`` on other trainers' logs: a W&B history CSV, an HF trainer_state.json and TRL-style
TensorBoard events analyse to the same jumps as the equivalent run file (two generators unlike each other); bad
input is one line and exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from discrepancy.analysis.pipeline import analyze as analyze_log
from discrepancy.cli import app
from interop.histories import (JUMP, binomial_decay, gaussian_steps, write_run, write_torch_events,
                               write_trainer_state, write_wandb_csv)

runner = CliRunner()


def _analyze(path: Path, out: Path) -> dict:
    result = runner.invoke(app, ["analyze", str(path), "--out", str(out), "--format", "json", "--no-log-axis"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _jumps(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """(jumps as signal, step, size sorted by step; phase-transition steps; notes) of the analysis of ``path``:
    the library call the command makes, without drawing figures (the report is checked once below)."""
    res = analyze_log(path, log_axis=False)
    jumps = res.jumps[["signal", "step", "size"]].sort_values(["step", "signal"]).reset_index(drop=True)
    return jumps, res.transitions["step"].tolist(), res.notes


@pytest.mark.parametrize("make,seed", [(gaussian_steps, 1), (binomial_decay, 2)])
def test_foreign_logs_find_the_jumps_of_the_equivalent_run(make, seed: int, tmp_path: Path):
    truth = make(seed)
    want, transitions, _ = _jumps(write_run(truth.drop(columns="epoch"), tmp_path / "run.h5"))
    assert ((want["step"] - JUMP).abs() <= 3).sum() >= 3  # the planted transition is there to be matched
    assert any(abs(t - JUMP) <= 3 for t in transitions)
    for path in (write_wandb_csv(truth, tmp_path / "history.csv"),
                 write_trainer_state(truth, tmp_path / "trainer_state.json")):
        got, got_transitions, notes = _jumps(path)
        pd.testing.assert_frame_equal(got, want)  # float64 kept: the very same jumps
        assert got_transitions == transitions
        assert any("report sections are absent" in n for n in notes) and any("epoch" in n for n in notes)
    tb, tb_transitions, _ = _jumps(write_torch_events(truth, tmp_path / "runs"))
    # float32 in TensorBoard: the same steps and series, sizes to float32 precision
    assert tb["signal"].tolist() == want["signal"].tolist()  # HF's "train/" prefix dropped
    assert tb["step"].tolist() == want["step"].tolist() and tb_transitions == transitions
    pd.testing.assert_series_equal(tb["size"], want["size"], rtol=1e-5)


def test_the_command_writes_the_report_of_a_csv_history(tmp_path: Path):
    summary = _analyze(write_wandb_csv(gaussian_steps(5), tmp_path / "h.csv"), tmp_path / "out")
    assert summary["meta"]["source"] == "csv" and summary["num_steps"] == len(gaussian_steps(5))
    assert any(abs(t["step"] - JUMP) <= 3 for t in summary["phase_transitions"])
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert html.count("report sections are absent") == 1
    assert "could not be read" not in html and "not an HDF5 file" not in html  # no run-file section tried


def _bad_inputs(tmp_path: Path) -> dict[Path, str]:
    from discrepancy.interop.tensorboard import EventWriter

    text_only = tmp_path / "tb_text"
    with EventWriter(text_only) as writer:
        writer.text(1, "notes", "no scalars here")
    no_step = tmp_path / "wandb.csv"
    no_step.write_text("loss,reward\n0.5,0.1\n0.4,0.2\n")
    other = tmp_path / "trainer_state.json"
    other.write_text(json.dumps({"epoch": 2, "callbacks": ["EarlyStopping"], "state": {"loss": 0.1}}))
    no_rows = tmp_path / "state2.json"
    no_rows.write_text(json.dumps({"log_history": [{"loss": 1.0, "epoch": 0.1}]}))
    return {text_only: "no scalars", tmp_path / "empty_dir": "no TensorBoard event files", no_step: "no step column",
            other: "no 'log_history'", no_rows: "numeric 'step'"}


def test_bad_logs_are_one_line_and_exit_3(tmp_path: Path):
    (tmp_path / "empty_dir").mkdir()
    for path, words in _bad_inputs(tmp_path).items():
        result = runner.invoke(app, ["analyze", str(path), "--out", str(tmp_path / "o")])
        assert result.exit_code == 3, (path, result.output)
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("command", [["inspect"], ["export", "--to", "parquet"], ["watch", "--once"], ["compare"]])
def test_run_file_commands_point_a_log_to_analyze(command: list[str], tmp_path: Path):
    """A command that reads run files, given another trainer's log (a CSV history, a TensorBoard folder): one
    line, exit 3, naming ``discrepancy analyze`` as the command that reads it."""
    csv = tmp_path / "history.csv"
    csv.write_text("step,loss\n1,2.0\n2,1.9\n")
    (tmp_path / "tb").mkdir()
    for log in (csv, tmp_path / "tb"):
        result = runner.invoke(app, [*command, str(log), *([str(log)] if command == ["compare"] else [])])
        assert result.exit_code == 3, result.output
        assert len(result.output.strip().splitlines()) == 1 and "`discrepancy analyze`" in result.output, result.output
