"""Probe guards: unusable devices and settings are refused before any work; resumes only the same run with the same
scoring settings (batch size excepted) and answer rules; the LLC curve of llc.csv reaches probe_units.png. (The
command's one-line failures: tests/cli/test_probe.py.)"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from discrepancy.probes.errors import ProbeError
from discrepancy.probes.evaluate import ScoreSettings
from discrepancy.probes.run import _llc_curve, default_loader, pick_device, run_probes
from discrepancy.runfile.results import StaleResultsError

from probe_planted import build_planted_run, write_suite
from sample_runs import make_good_run

SETTINGS = ScoreSettings(max_new_tokens=16, batch_size=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(ProbeError, match="CUDA is not available"):
        pick_device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")


def test_score_settings_refuse_impossible_pass_k() -> None:
    with pytest.raises(ProbeError, match="pass@k"):
        ScoreSettings(samples=2, pass_k=(0,))


@pytest.mark.parametrize("stored", [None, {"suites": ["arithmetic"], "settings": {}}, {"grading_version": 1}])
def test_results_graded_under_older_answer_rules_are_refused(tmp_path: Path, stored: dict | None) -> None:
    """Tables without a recorded grading version (no settings file, or one written before it was recorded) or with
    another one are refused in one line that says what to do, before any model is built; nothing is touched."""
    run, out = make_good_run(tmp_path / "run.h5"), tmp_path / "p"
    out.mkdir()
    pd.DataFrame({"step": [0], "suite": ["s"], "skill": ["a"], "metric": ["exact_match"], "value": [1.0],
                  "n": [1]}).to_csv(out / "probe_skills.csv", index=False)
    if stored is not None:
        (out / "probe_settings.json").write_text(json.dumps(stored))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_model(r, step):
        raise AssertionError("a model was built before the refusal")

    with pytest.raises(ProbeError) as err:
        run_probes(run, "all", out=out, loader=no_model)
    message = str(err.value)
    assert "older answer rules" in message and "delete the probe_* files" in message and "--out" in message
    assert "re-run `discrepancy probe`" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


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
