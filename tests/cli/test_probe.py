"""``discrepancy probe``: probing and attribution end to end, and failures in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app

from probe_planted import build_planted_run, write_suite
from sample_runs import make_good_run


def _cli(*args: str):
    return CliRunner().invoke(app, ["probe", *args])


@pytest.mark.slow
def test_cli_probe_and_attribution(tmp_path: Path):
    run, suite = build_planted_run(tmp_path), write_suite(tmp_path / "planted.jsonl")
    result = CliRunner().invoke(app, ["probe", str(run), "--suite", str(suite), "--max-new-tokens", "16",
                                      "--batch-size", "8", "--attribute-step", "25", "--attribute-items", "1"])
    assert result.exit_code == 0, result.output
    assert "genuine" in result.stdout and "snapshots 20 → 30" in result.stdout
    assert "skill verdicts" in result.stdout and "120.0" not in result.stdout  # a table, whole steps
    summary = pd.read_csv(run.parent / "run.h5.analysis" / "attribution_step25_summary.csv")
    assert summary.loc[0, "score_after"] > summary.loc[0, "score_before"]  # the trained item got likelier
    bad = CliRunner().invoke(app, ["probe", str(run), "--suite", "nonexistent"])
    assert bad.exit_code == 2 and "shipped suites are" in bad.output


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


def test_a_file_that_is_no_run_leaves_no_settings(tmp_path: Path) -> None:
    text = tmp_path / "text.h5"
    text.write_text("not a run")
    res = _cli(str(text), "--out", str(tmp_path / "p4"))
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "p4").exists()  # so a later valid probe into p4 is not refused


def test_results_graded_under_older_answer_rules_are_refused_in_one_line(tmp_path: Path) -> None:
    run, out = make_good_run(tmp_path / "run.h5"), tmp_path / "p"
    out.mkdir()
    pd.DataFrame({"step": [0], "suite": ["s"], "skill": ["a"], "metric": ["exact_match"], "value": [1.0],
                  "n": [1]}).to_csv(out / "probe_skills.csv", index=False)
    (out / "probe_settings.json").write_text(json.dumps({"suites": ["arithmetic"], "settings": {}}))
    res = _cli(str(run), "--out", str(out))
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "older answer rules" in res.output and "re-run `discrepancy probe`" in res.output


def test_attribute_emergent_says_when_nothing_emerged(tmp_path: Path, monkeypatch) -> None:
    import discrepancy.probes.run as probe_run

    run = make_good_run(tmp_path / "run.h5")
    none = pd.DataFrame({"suite": ["s"], "skill": ["add"], "kind": ["none"], "step": [float("nan")],
                         "evidence": ["flat"]})
    monkeypatch.setattr(probe_run, "run_probes", lambda *a, **k: probe_run.ProbeResult(
        pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), none, tmp_path))
    result = CliRunner().invoke(app, ["probe", str(run), "--attribute-emergent"])
    assert result.exit_code == 0, result.output
    assert "no skill emerged" in result.stderr
