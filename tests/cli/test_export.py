"""``discrepancy export``: through the real app, the default folder next to the run, and bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from discrepancy.cli import app

runner = CliRunner()


def test_export_csv_next_to_the_run_reads_back_in_analyze(run_file: Path, tmp_path: Path):
    run = tmp_path / "r.h5"
    run.write_bytes(run_file.read_bytes())
    result = runner.invoke(app, ["export", str(run), "--to", "CSV"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "r.h5-csv"
    assert "6 series" in result.output and str(folder) in result.output
    series = pd.read_csv(folder / "series.csv")
    assert len(series) == 1000 and {"step", "loss", "reward_mean"} <= set(series.columns)
    analysed = runner.invoke(app, ["analyze", str(folder / "series.csv"), "--out", str(tmp_path / "a"),
                                   "--signals", "loss,reward_mean,kl_realised", "--no-log-axis"])
    assert analysed.exit_code == 0 and "Phase transitions" in analysed.stdout


def test_export_tensorboard_says_how_to_view(run_file: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", str(run_file), "--to", "tensorboard", "--out", str(tmp_path / "tb")])
    assert result.exit_code == 0 and "tensorboard --logdir" in result.output
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_bad_input_is_one_line(run_file: Path, tmp_path: Path):
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    cases = [(["export", str(run_file), "--to", "wandb", "--out", str(tmp_path / "o")], 3, "tensorboard, parquet, csv"),
             (["export", str(tmp_path / "missing.h5"), "--to", "csv"], 3, "missing.h5"),
             (["export", str(run_file), "--to", "csv", "--out", str(afile)], 3, "not a folder")]
    for args, code, words in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
