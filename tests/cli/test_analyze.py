"""``discrepancy analyze``: exit codes, outputs, json format, too-short runs, bad input (through the real app)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from discrepancy.analysis.pipeline import analyze as analyze_run
from discrepancy.cli.analyze import analyze
from discrepancy.errors import DiscrepancyError
from discrepancy.report import write_outputs

runner = CliRunner()


def _app() -> typer.Typer:
    """The project's app when it registers ``analyze``; otherwise a small app with the same error guard."""
    from discrepancy.cli import app

    if any(c.name == "analyze" for c in app.registered_commands):
        return app
    from discrepancy.cli import command  # pragma: no cover - only before registration

    command("analyze", analyze)
    return app


def test_json_output_and_files(run_file: Path, tmp_path: Path):
    out = tmp_path / "an"
    result = runner.invoke(_app(), ["analyze", str(run_file), "--out", str(out), "--format", "json", "--no-log-axis"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "finished" and summary["num_steps"] == 1000
    assert summary["phase_transitions"][0]["n_signals"] == 3
    assert (out / "report.html").exists() and (out / "events.csv").exists()


def test_table_default_out_next_to_run_and_signal_selection(run_file: Path, tmp_path: Path):
    run = tmp_path / "copy.h5"
    run.write_bytes(run_file.read_bytes())
    result = runner.invoke(_app(), ["analyze", str(run), "--signals", "loss,reward_mean", "--smooth", "3"])
    assert result.exit_code == 0, result.output
    assert "Phase transitions" in result.stdout and "reward_mean" in result.stdout
    assert "kl_realised" not in result.stdout  # not selected
    assert (tmp_path / "copy.h5.analysis" / "summary.json").exists()


def test_missing_file_exits_with_reader_error(tmp_path: Path):
    result = runner.invoke(_app(), ["analyze", str(tmp_path / "nope.h5")])
    assert result.exit_code == 3  # RunNotFound, as every command reading runs
    assert "nope.h5" in result.output and "Traceback" not in result.output


def test_not_a_run_file(tmp_path: Path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    result = runner.invoke(_app(), ["analyze", str(bad)])
    assert result.exit_code == 3 and "Traceback" not in result.output


def test_unknown_signal_is_a_clean_error(run_file: Path, tmp_path: Path):
    result = runner.invoke(_app(), ["analyze", str(run_file), "--out", str(tmp_path / "o"), "--signals", "nosuch"])
    assert result.exit_code == 3 and "nosuch" in result.output


def test_out_must_be_a_folder(run_file: Path, tmp_path: Path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    result = runner.invoke(_app(), ["analyze", str(run_file), "--out", str(f)])
    assert result.exit_code == DiscrepancyError.exit_code and "not a folder" in result.output


def test_too_few_steps_is_a_message_not_a_crash(short_run: Path, tmp_path: Path):
    result = runner.invoke(_app(), ["analyze", str(short_run), "--out", str(tmp_path / "s"), "--format", "json"])
    assert result.exit_code == 0
    assert "at least" in result.stderr
    assert json.loads(result.stdout)["num_steps"] == 6


def test_grouping_rule_options(run_file: Path, tmp_path: Path):
    # the planted transition: 3 signals (loss, reward_mean, kl_realised) from 3 families
    def transitions(*opts: str) -> list[dict]:
        result = runner.invoke(_app(), ["analyze", str(run_file), "--out", str(tmp_path / "o"), "--format", "json",
                                        "--no-log-axis", *opts])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["phase_transitions"]

    assert transitions("--min-signals", "4", "--min-families", "4") == []
    found = transitions("--min-signals", "4", "--min-families", "3")[0]
    assert (found["n_signals"], found["n_families"]) == (3, 3)


def test_a_rerun_with_no_figures_leaves_no_stale_ones(run_file: Path, tmp_path: Path):
    """Re-analysing into the same folder: the figures of the earlier analysis go, and the CLI says none were drawn
    when none were (here: a signal list that matches nothing plottable)."""
    out = tmp_path / "out"
    first = write_outputs(analyze_run(run_file), out)
    assert any(key.startswith("figure:") for key in first) and list(out.glob("*.png"))
    res = analyze_run(run_file)
    res.signals = res.signals.iloc[0:0]  # nothing to plot
    second = write_outputs(res, out)
    assert not any(key.startswith("figure:") for key in second) and not list(out.glob("*.png"))
    result = runner.invoke(_app(), ["analyze", str(run_file), "--out", str(out)])
    assert result.exit_code == 0
    drawn = re.search(r"summary.json, (\d+) PNGs in", result.output)
    assert drawn and int(drawn.group(1)) == len(list(out.glob("*.png"))) > 0


def test_table_never_cuts_series_names_and_leads_with_the_headline(tmp_path: Path):
    """Outside a terminal rich lays tables out at 80 columns; the old per-signal table cut names to 'frac_reward…'."""
    import numpy as np

    from discrepancy.runfile import Recorder, RunSchema

    rng = np.random.default_rng(5)
    long_name = "completion_length_of_correct_answers_mean"
    series = {"reward_correctness": rng.binomial(64, np.r_[np.full(150, 0.3), np.full(150, 0.7)]) / 64,
              "frac_reward_zero_std": rng.uniform(0, 0.2, 300), long_name: 40 + rng.standard_normal(300)}
    series[long_name][150:] += 10.0  # a jump, so the name is listed
    path = tmp_path / "run.h5"
    with Recorder.create(path, RunSchema(series={k: "" for k in series})) as rec:
        for i in range(300):
            rec.log_step(i, {k: float(v[i]) for k, v in series.items()})
        rec.finish()
    result = runner.invoke(_app(), ["analyze", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert long_name in result.stdout and "…" not in result.stdout
    lead = re.search(r"reward_correctness went ([\d.]+) → ([\d.]+)", result.stdout.replace("\n", " "))
    assert lead and abs(float(lead.group(1)) - 0.3) < 0.02 and abs(float(lead.group(2)) - 0.7) < 0.02  # planted
