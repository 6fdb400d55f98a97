"""Probe guards: bad options fail in one line before any work and leave no files; resumes only the same run with
the same scoring settings (batch size excepted); the LLC curve of llc.csv reaches probe_units.png."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from discrepancy.analysis.llc_resume import StaleResultsError
from discrepancy.probes.errors import ProbeError
from discrepancy.probes.evaluate import ScoreSettings
from discrepancy.probes.run import _llc_curve, default_loader, pick_device, run_probes

from probe_planted import build_planted_run, write_suite

SETTINGS = ScoreSettings(max_new_tokens=16, batch_size=8)


def _cli(*args: str):
    from discrepancy.cli import app

    return CliRunner().invoke(app, ["probe", *args])


@pytest.mark.parametrize("opts, message", [
    (["--samples", "2", "--pass-k", "0"], "k must be at least 1"),
    (["--samples", "2", "--pass-k", "3"], "needs at least that many --samples"),
    (["--device", "bogus"], "not a torch device"),
])
def test_bad_options_fail_in_one_line_before_any_work(tmp_path: Path, opts: list[str], message: str) -> None:
    run = tmp_path / "text.h5"
    run.write_text("not a run")
    res = _cli(str(run), "--out", str(tmp_path / "p"), *opts)
    assert res.exit_code != 0 and message in res.output and len(res.output.strip().splitlines()) == 1
    assert not isinstance(res.exception, (ValueError, RuntimeError, AssertionError))
    assert not (tmp_path / "p").exists() and not (tmp_path / "text.h5.analysis").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(ProbeError, match="CUDA is not available"):
        pick_device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")


def test_score_settings_refuse_impossible_pass_k() -> None:
    with pytest.raises(ProbeError, match="pass@k"):
        ScoreSettings(samples=2, pass_k=(0,))


def test_a_file_that_is_no_run_leaves_no_settings(tmp_path: Path) -> None:
    text = tmp_path / "text.h5"
    text.write_text("not a run")
    res = _cli(str(text), "--out", str(tmp_path / "p4"))
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "p4").exists()  # so a later valid probe into p4 is not refused


def test_llc_curve_is_read_from_llc_mean_healthy_rows_only(tmp_path: Path) -> None:
    pd.DataFrame({"step": [20, 0, 10], "llc_mean": [3.0, 1.0, -5.0], "health": ["ok", "ok", "negative"]}).to_csv(
        tmp_path / "llc.csv", index=False)
    curve = _llc_curve(tmp_path)
    assert curve is not None and curve.to_dict() == {0: 1.0, 20: 3.0}


@pytest.mark.slow
def test_resume_ignores_batch_size_and_discards_a_recreated_run(tmp_path: Path) -> None:
    run, suite = build_planted_run(tmp_path), write_suite(tmp_path / "planted.jsonl")
    out = tmp_path / "p"
    calls: list[int] = []

    def loader(r, step):
        calls.append(step)
        return default_loader(r, step)

    first = run_probes(run, str(suite), every=10, out=out, settings=SETTINGS, loader=loader)
    probed = sorted(set(first.skills["step"]))
    assert calls == probed
    calls.clear()
    run_probes(run, str(suite), every=10, out=out, settings=ScoreSettings(max_new_tokens=16, batch_size=3),
               loader=loader)  # another batch size scores the same: resumed, not refused
    assert calls == []
    # the run is re-created under this name (train --force): its identity changes, a stale step is in the tables
    settings_file = out / "probe_settings.json"
    stored = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps(stored | {"run_id": "an-earlier-run"}))
    skills = pd.read_csv(out / "probe_skills.csv")
    pd.concat([skills, skills.head(1).assign(step=12345)]).to_csv(out / "probe_skills.csv", index=False)
    notes: list[str] = []
    again = run_probes(run, str(suite), every=10, out=out, settings=SETTINGS, loader=loader, notice=notes.append)
    assert len(notes) == 1 and "discarded" in notes[0] and calls == probed  # every step probed again
    assert sorted(set(again.skills["step"])) == probed and 12345 not in set(pd.read_csv(out / "probe_skills.csv").step)
    # results of another run FILE in a shared --out are not ours to delete: refused
    settings_file.write_text(json.dumps(stored | {"run_id": "x", "run_path": str(tmp_path / "other.h5")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(StaleResultsError, match="another run"):
            run_probes(run, str(suite), every=10, out=out, settings=SETTINGS, loader=loader)
    assert (out / "probe_skills.csv").exists()
