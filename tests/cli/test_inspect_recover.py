"""``discrepancy inspect`` and ``recover``: a run's summary as a table or JSON, and a clean copy of a damaged run
(bad files: tests/runfile/test_check.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides
from discrepancy.runfile import Recorder, RunSchema, open_run
from discrepancy.trainers.run import train_run

from sample_runs import damage_snapshot, make_good_run

runner = CliRunner()


def test_good_run_inspects(tmp_path):
    good_run = make_good_run(tmp_path / "run.h5")
    result = runner.invoke(app, ["inspect", str(good_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"num_steps": 40' in result.output and '"status": "finished"' in result.output


def test_inspect_table_always_shows_the_last_snapshot(tmp_path):
    path = tmp_path / "many.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}, snapshot_tensors={"w": (2,)})) as rec:
        for step in range(0, 120, 10):
            rec.log_step(step, {"a": 1.0})
            rec.log_snapshot(step, {"w": np.zeros(2)})
        rec.finish()
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0
    assert "12 (0, 10, 20, 30, 40, 50, …, 110)" in result.output


def test_recover_keeps_every_snapshot_but_the_damaged_one(tmp_path):
    path = damage_snapshot(make_good_run(tmp_path / "run.h5"), tmp_path / "damaged.h5")
    assert runner.invoke(app, ["inspect", str(path)]).exit_code == 0
    result = runner.invoke(app, ["recover", str(path), "--out", str(tmp_path / "fixed.h5")])
    assert result.exit_code == 0, result.output
    assert "3 snapshots" in result.output and "dropped the damaged snapshot of step 10" in result.output
    with open_run(tmp_path / "fixed.h5") as fixed:
        assert fixed.snapshot_steps == [0, 20, 30] and fixed.num_steps == 40
        assert np.array_equal(fixed.snapshot(30)["w"], np.eye(4) * 30)


@pytest.mark.slow
def test_inspect_json_is_strict_json(fast_train_config, tmp_path):
    out = tmp_path / "run.h5"
    train_run(apply_overrides(fast_train_config, ["run.steps=2", "run.snapshot_every=2", "sft.steps=0"]), out)  # no cold start: its final loss is NaN
    result = runner.invoke(app, ["inspect", str(out), "--format", "json"])
    assert result.exit_code == 0

    def refuse(token: str) -> float:
        raise AssertionError(f"{token} is not JSON")

    info = json.loads(result.output, parse_constant=refuse)
    assert info["meta"]["sft_final_loss"] is None and info["meta"]["run_id"]
    with open_run(out) as run:
        assert math.isnan(run.meta["sft_final_loss"])


def test_inspect_gives_the_last_finite_value_of_a_series_measured_every_nth_step(tmp_path):
    """A series recorded every third step (NaN between) shows NaN at the last step and, beside it, its last finite
    value with that step; an every-step series has no such entry."""
    path = tmp_path / "sparse.h5"
    with Recorder.create(path, RunSchema(series={"a": "", "rho": ""})) as rec:
        for step in range(1, 12):
            rec.log_step(step, {"a": float(step), "rho": float(step) / 10 if (step - 1) % 3 == 0 else math.nan})
        rec.finish()
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["last_values"]["rho"] is None and info["last_finite"] == {"rho": {"value": 1.0, "step": 10}}
    table = runner.invoke(app, ["inspect", str(path)])
    assert "1 (10)" in table.output and "nan at the last step" in table.output
