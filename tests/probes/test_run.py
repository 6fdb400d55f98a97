"""End to end on a run with a planted skill: probing finds it at the right snapshot and resumes (the command:
tests/cli/test_probe.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from discrepancy.probes.at_jump import neighbours
from discrepancy.probes.errors import ProbeError
from discrepancy.probes.evaluate import ScoreSettings
from discrepancy.probes.run import default_loader, run_probes, select_steps
from discrepancy.probes.summary import probe_summary
from discrepancy.report.sections import probe_html

from probe_planted import STEPS_AFTER, build_planted_run, write_suite

SETTINGS = ScoreSettings(max_new_tokens=16, batch_size=8)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    run, suite = build_planted_run(folder), write_suite(folder / "planted.jsonl")
    return run, suite, run_probes(run, str(suite), settings=SETTINGS)


def test_planted_skill_emerges_at_the_right_snapshot(planted):
    _, _, result = planted
    verdict = result.emergence.set_index("skill")
    assert verdict.loc["add", "kind"] == "genuine" and verdict.loc["add", "step"] == STEPS_AFTER[0]
    assert verdict.loc["mul", "kind"] == "none"  # never trained: no rise, no log-prob jump above 0.1 nats
    em = result.skills[result.skills.metric == "exact_match"].pivot_table(index="step", columns="skill", values="value")
    assert em["add"].tolist() == [0, 0, 0, 1, 1, 1] and em["mul"].max() == 0
    files = {p.name for p in result.out_dir.iterdir()}
    assert {"probe_skills.csv", "probe_items.csv", "probe_units.csv", "probe_emergence.csv", "probe_skills.png",
            "probe_units.png"} <= files
    assert set(result.units["layer"]) == {0, 1} and len(result.units) == 12


def test_resume_skips_probed_steps_and_refuses_other_settings(planted):
    run, suite, first = planted
    calls = []

    def counting_loader(r, step):
        calls.append(step)
        return default_loader(r, step)

    again = run_probes(run, str(suite), settings=SETTINGS, loader=counting_loader)
    assert calls == []
    pd.testing.assert_frame_equal(again.skills, first.skills)
    with pytest.raises(ProbeError, match="use another --out folder"):
        run_probes(run, str(suite), settings=ScoreSettings(max_new_tokens=17), loader=counting_loader)


def test_step_selection_by_hand():
    assert select_steps([0, 10, 20, 30, 40, 50], 2) == [0, 20, 40, 50]
    assert select_steps([50, 0, 10], 1) == [0, 10, 50]
    assert neighbours([0, 10, 20, 30], 25) == (20, 30) and neighbours([0, 10, 20, 30], 30) == (20, 30)
    with pytest.raises(ProbeError):
        neighbours([0, 10], 0)
    with pytest.raises(ProbeError):
        select_steps([0], 0)


def test_summary_for_the_report(planted, tmp_path):
    _, _, result = planted
    summary = probe_summary(result.out_dir)
    assert summary.steps == [0, 10, 20, 30, 40, 50]
    assert [p.name for p in summary.figures] == ["probe_skills.png", "probe_units.png"]
    page = probe_html(summary)
    assert "genuine" in page and 'src="probe_skills.png"' in page and "6 snapshots probed" in page
    assert probe_summary(tmp_path) is None
