"""report.html includes the probe and LLC results found in its folder, self-contained, and does without them."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.pipeline import analyze_series
from discrepancy.grading import GRADING_VERSION
from discrepancy.report import write_outputs
from discrepancy.runfile.results import LLC_CSV, LLC_PNG, PROBE_SETTINGS

PNG = base64.b64decode(  # a valid 1×1 PNG, written by hand so the test needs no plotting
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture()
def result():
    rng = np.random.default_rng(0)
    y = 0.05 * rng.standard_normal(400)
    y[200:] += 1.0
    return analyze_series(pd.DataFrame({"loss": y, "reward_mean": -y}, index=pd.Index(np.arange(400), name="step")))


def _srcs(text: str) -> list[str]:
    return re.findall(r"""src\s*=\s*['"]([^'"]*)""", text)


def test_without_other_outputs_no_sections(result, tmp_path: Path):
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert "Skill probes" not in html and "LLC over training" not in html


def test_probe_and_llc_sections_are_inlined(result, tmp_path: Path):
    pd.DataFrame({"step": [0, 100, 200, 100], "skill": ["a", "a", "a", "b"]}).to_csv(tmp_path / "probe_skills.csv")
    pd.DataFrame({"suite": ["arith"], "skill": ["carry"], "kind": ["genuine"], "step": [200],
                  "evidence": ["sharp rise"]}).to_csv(tmp_path / "probe_emergence.csv", index=False)
    (tmp_path / "probe_skills.png").write_bytes(PNG)
    (tmp_path / PROBE_SETTINGS).write_text(json.dumps({"grading_version": GRADING_VERSION}))
    pd.DataFrame({"step": [300, 0, 100], "llc_mean": [7.25, 1.5, 3.125], "llc_std": [0.5, 0.25, 0.375],
                  "llc_per_chain": ["[]"] * 3, "init_loss": [1.0] * 3, "warnings": [""] * 3}).to_csv(
        tmp_path / LLC_CSV, index=False)
    (tmp_path / LLC_PNG).write_bytes(PNG)
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert "Skill probes" in html and "3 snapshots probed" in html and "sharp rise" in html
    assert "LLC over training" in html
    llc = html[html.index("LLC over training"):]
    assert llc.index("1.5") < llc.index("3.125") < llc.index("7.25")  # rows sorted by step
    srcs = _srcs(html)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)  # one file, no links
    assert all(base64.b64decode(s.split(",", 1)[1]) == PNG for s in srcs)


@pytest.mark.parametrize("stored", [None, {"suites": ["arith"]}, {"grading_version": GRADING_VERSION - 1}])
def test_probe_results_of_older_answer_rules_are_a_note_not_a_table(result, tmp_path: Path, stored) -> None:
    pd.DataFrame({"step": [0, 100], "skill": ["a", "a"]}).to_csv(tmp_path / "probe_skills.csv")
    pd.DataFrame({"suite": ["arith"], "skill": ["carry"], "kind": ["genuine"], "step": [100],
                  "evidence": ["sharp rise"]}).to_csv(tmp_path / "probe_emergence.csv", index=False)
    (tmp_path / "probe_skills.png").write_bytes(PNG)
    if stored is not None:
        (tmp_path / PROBE_SETTINGS).write_text(json.dumps(stored))
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert "Skill probes" in html and "graded under older answer rules" in html
    assert "delete the probe_* files in that folder (or pass another --out) and re-run `discrepancy probe`" in html
    assert "sharp rise" not in html and "snapshots probed" not in html and not _srcs(html)  # no table, no figure


def test_an_earlier_runs_results_under_the_same_name_are_a_note_not_a_table(result, tmp_path: Path):
    """``train --force`` re-creates a run under its name: the LLC and probe results its analysis folder still holds
    are the earlier run's (their settings record its run_id). The report says so and shows neither; results of this
    run (same run_id) are shown."""
    from discrepancy.runfile.results import LLC_SETTINGS

    pd.DataFrame({"step": [0, 100], "skill": ["a", "a"]}).to_csv(tmp_path / "probe_skills.csv")
    pd.DataFrame({"suite": ["arith"], "skill": ["carry"], "kind": ["genuine"], "step": [100],
                  "evidence": ["sharp rise"]}).to_csv(tmp_path / "probe_emergence.csv", index=False)
    pd.DataFrame({"step": [0, 100], "llc_mean": [86.32, 84.64], "llc_std": [1.0, 1.0], "warnings": ["", ""]}).to_csv(
        tmp_path / LLC_CSV, index=False)
    for name in (PROBE_SETTINGS, LLC_SETTINGS):
        (tmp_path / name).write_text(json.dumps({"run_id": "old", "grading_version": GRADING_VERSION}))
    result.meta = {"run_id": "new"}  # a run file's meta carries its run_id
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert html.count("belong to an earlier run under this name (run_id old, this run") == 2
    assert "86.32" not in html and "sharp rise" not in html
    result.meta = {"run_id": "old"}
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert "86.32" in html and "sharp rise" in html and "earlier run" not in html


def test_damaged_llc_table_is_a_note(result, tmp_path: Path):
    (tmp_path / LLC_CSV).write_text("")
    html = write_outputs(result, tmp_path, figures=False)["report"].read_text()
    assert "could not be read" in html and "<h1>" in html


def test_file_names_match_the_llc_job():
    from discrepancy.analysis.llc import over_run
    from discrepancy.report import sections

    assert (sections.LLC_CSV, sections.LLC_PNG) == (over_run.LLC_CSV, over_run.LLC_PNG)


def test_report_imports_neither_trainers_nor_torch(tmp_path: Path):
    code = ("import sys, numpy as np, pandas as pd; from pathlib import Path;"
            "from discrepancy.analysis.pipeline import analyze_series;"
            "from discrepancy.report import write_outputs;"
            "r = analyze_series(pd.DataFrame({'loss': np.r_[np.zeros(200), np.ones(200)]}));"
            f"write_outputs(r, Path({str(tmp_path)!r}), figures=False);"
            "print(sorted(m for m in sys.modules if m.startswith(('discrepancy.trainers', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
