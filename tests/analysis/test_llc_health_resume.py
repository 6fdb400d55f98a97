"""LLC over a run: health verdicts, stage boundaries from healthy rows only, resuming only the same run with the same
settings, and no files left behind by failed calls (library and CLI)."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from discrepancy.analysis.llc_health import health_of, unhealthy_summary, with_health
from discrepancy.analysis.llc_resume import StaleResultsError, check_run_identity
from discrepancy.analysis.llc_runs import LLCSettingsError, healthy_stage_boundaries, llc_over_run, plot_llc

from test_llc_runs import STEPS, _tiny_run

FAST = dict(num_chains=2, num_draws=6, num_burnin=2)


def test_health_verdicts_and_standard_error_by_hand() -> None:
    h = health_of([1.0, 2.0, math.nan, 100.0], dim=10)  # one NaN chain, one above the ceiling d = 10
    assert h["health"] == "diverged 2/4" and (h["chains_ok"], h["chains"]) == (2, 4)
    assert h["llc_se"] == pytest.approx(np.std([1.0, 2.0], ddof=1) / math.sqrt(2))  # std/√(chains kept) = 0.5
    assert health_of([-5.0, -3.0], dim=10)["health"] == "negative"
    assert health_of([1.0, 10.0], dim=100)["health"] == "spread"  # std 6.4 > 0.5·5.5
    assert health_of([4.0, 4.2, 3.9], dim=100)["health"] == "ok"
    assert health_of([4.0, 4.2], dim=100, warnings="loss trace drifts after burn-in (…)")["health"] == "drift"


def test_stage_boundaries_ignore_unhealthy_rows(tmp_path: Path) -> None:
    steps = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    monotone = [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    table = pd.DataFrame({"step": steps, "llc_mean": monotone, "llc_std": 0.1,
                          "llc_per_chain": [json.dumps([v, v]) for v in monotone], "warnings": ""})
    table.loc[5, ["llc_mean", "llc_per_chain"]] = [-40.0, json.dumps([-30.0, -50.0])]  # a negative dip at step 100
    table = with_health(table, dim=1000)  # rows without health columns get them from their per-chain values
    assert list(table["health"]) == ["ok"] * 5 + ["negative"] + ["ok"] * 4
    assert healthy_stage_boundaries(table) == []  # the dip would be a minimum, but it is no LLC
    line = unhealthy_summary(table, probe_pairs=32)
    assert line.startswith("1 of 10 LLC estimates are unhealthy (negative at 1)") and "first 32 recorded" in line
    assert "\n" not in line and unhealthy_summary(table[table["health"] == "ok"]) is None
    plot_llc(table, tmp_path / "llc.png")  # unhealthy points drawn hollow; the x axis starts at step 0
    assert (tmp_path / "llc.png").stat().st_size > 0


def test_run_identity_reuse_discard_refuse(tmp_path: Path) -> None:
    run, other = tmp_path / "run.h5", tmp_path / "other.h5"
    files = [tmp_path / "llc.csv"]
    stored = {"run_id": "a", "run_path": str(run.resolve())}
    notes: list[str] = []
    files[0].write_text("x")
    assert check_run_identity(stored, "a", run, tmp_path, files, "LLC", notes.append) and files[0].exists()
    with pytest.raises(StaleResultsError, match="another run"):
        check_run_identity(stored, "c", other, tmp_path, files, "LLC", notes.append)  # an --out shared with a run
    assert check_run_identity(stored, "a", other, tmp_path, files, "LLC", notes.append)  # the same run, moved
    assert files[0].exists() and notes == []
    assert not check_run_identity(stored, "b", run, tmp_path, files, "LLC", notes.append)  # re-created run
    assert not files[0].exists() and len(notes) == 1 and "re-created" in notes[0]
    files[0].write_text("x")  # results written before identities were recorded: adopted, never deleted
    assert check_run_identity({"num_chains": 4}, "b", run, tmp_path, files, "LLC", notes.append)
    assert files[0].exists() and len(notes) == 1


def _llc(run: Path, out: Path | None = None, notes: list[str] | None = None, seen: list | None = None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return llc_over_run(run, out, **(FAST | kw), notice=(notes.append if notes is not None else None),
                            on_snapshot=(lambda d, t, s: seen.append(s)) if seen is not None else None)


@pytest.mark.slow
def test_llc_refuses_other_settings_and_discards_a_recreated_run(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    run = _tiny_run(tmp_path, run_id="aaaa")
    out = run.with_name("run.h5.analysis")
    first = _llc(run)
    assert {"llc_se", "chains_ok", "health"} <= set(first.columns) and first["chains"].eq(2).all()
    before = (out / "llc_settings.json").read_text()
    with pytest.raises(LLCSettingsError) as err:
        _llc(run, num_chains=3, seed=7)
    assert "num_chains 2→3" in str(err.value) and "seed 0→7" in str(err.value) and "--out" in str(err.value)
    assert (out / "llc_settings.json").read_text() == before  # nothing rewritten by the refused call
    seen: list[int] = []
    again = _llc(run, seen=seen, probe_size=64)  # only 4 samples recorded: the same probe set, resumed
    assert seen == [] and again["llc_mean"].tolist() == pytest.approx(first["llc_mean"].tolist())
    # train --force: the run is re-created under the same name; a stale row of a step it lacks is in the csv
    with open(out / "llc.csv", "a") as f:
        f.write("999,1.0,0.1,\"[1.0, 1.0]\",0.5,,0.1,2,2,ok\n")
    run.unlink()
    shutil.rmtree(tmp_path / "run.base")
    _tiny_run(tmp_path, run_id="bbbb")
    notes: list[str] = []
    seen = []
    fresh = _llc(run, notes=notes, seen=seen)
    assert len(notes) == 1 and "discarded" in notes[0] and seen == list(STEPS)  # every snapshot recomputed
    assert list(fresh["step"]) == list(STEPS) and list(pd.read_csv(out / "llc.csv")["step"]) == list(STEPS)
    assert json.loads((out / "llc_settings.json").read_text())["run_id"] == "bbbb"


@pytest.mark.slow
def test_cli_failures_leave_no_folder(tmp_path: Path) -> None:
    from discrepancy.cli import app

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
    from discrepancy.cli import app

    run = _tiny_run(tmp_path)
    args = ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "health" in ok.stdout and "s.e." in ok.stdout
    changed = CliRunner().invoke(app, args[:-2] + ["--burnin", "3", "--seed", "7"])
    assert changed.exit_code == 1 and len(changed.output.strip().splitlines()) == 1
    assert "num_burnin 2→3" in changed.output and "seed 0→7" in changed.output
