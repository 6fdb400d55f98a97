"""Curriculum phase switches: read from the `phase` / `phase_trigger` series and the stored config, matched to the
detected phase transitions, drawn and tabled in the report (a run made with the real Recorder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.phases import phase_switches, switches_vs_transitions, tolerance
from discrepancy.analysis.pipeline import analyze
from discrepancy.report.outputs import write_outputs
from discrepancy.runfile import Recorder, RunSchema

CONFIG = """
[[curriculum.phases]]
name = "structure"
max_steps = 60
end_when = "reward_format >= 0.9 over 20"

[[curriculum.phases]]
name = "reasoning"
max_steps = 80

[[curriculum.phases]]
name = "precision"
"""


def _frame(phase: list[int], trigger: dict[int, int]) -> pd.DataFrame:
    t = np.zeros(len(phase))
    for step, code in trigger.items():
        t[step] = code
    return pd.DataFrame({"phase": np.asarray(phase, dtype=float), "phase_trigger": t}, index=range(len(phase)))


def test_switches_name_the_phases_their_trigger_and_the_rule():
    frame = _frame([0] * 45 + [1] * 80 + [2] * 25, {45: 2, 125: 1})
    w = phase_switches(frame, CONFIG)
    assert w["step"].tolist() == [45, 125]
    assert w["from_phase"].tolist() == ["structure", "reasoning"]
    assert w["phase"].tolist() == ["reasoning", "precision"]
    assert w["trigger"].tolist() == ["end_when", "max_steps"]
    assert w["rule"].tolist() == ["reward_format >= 0.9 over 20", "max_steps = 80"]


def test_no_phase_series_or_one_phase_gives_no_switch_and_unnamed_phases_get_their_index():
    assert phase_switches(pd.DataFrame({"loss": [1.0, 2.0]})).empty
    assert phase_switches(_frame([0] * 30, {})).empty
    w = phase_switches(pd.DataFrame({"phase": [0.0] * 5 + [1.0] * 5}))  # no trigger, no config
    assert w[["step", "from_phase", "phase", "trigger"]].values.tolist() == [[5, "phase 0", "phase 1", "unknown"]]


def test_each_transition_matches_one_switch_at_most_and_far_ones_are_the_runs_own():
    switches = pd.DataFrame({"event": ["W1", "W2"], "step": [100, 300], "from_phase": ["a", "b"],
                             "phase": ["b", "c"], "trigger": ["max_steps", "end_when"], "rule": ["", ""]})
    transitions = pd.DataFrame({"event": ["T1", "T2", "T3"], "step": [103, 200, 98]})
    m = switches_vs_transitions(switches, transitions, num_steps=400)
    assert tolerance(400) == 8
    first = m.iloc[0]
    assert (first["transition"], first["lag"], first["coincide"]) == ("T3", -2, "yes")  # nearest of T1 (3), T3 (2)
    assert m.iloc[1]["coincide"] == "no" and m.iloc[1]["transition"] == ""  # nothing within 8 steps of 300
    own = m[m["switch"] == ""]
    assert own["transition"].tolist() == ["T1", "T2"]  # T1 lost W1 to the nearer T3: the run's own


def test_a_transition_that_starts_in_the_updates_after_a_switch_is_its_effect():
    """The curves answer a switch over the next updates: a transition starting up to `response` steps after it is
    the switch's (lag may exceed `tolerance`), one starting later is the run's own."""
    from discrepancy.analysis.phases import response

    switches = pd.DataFrame({"event": ["W1"], "step": [100], "from_phase": ["a"], "phase": ["b"],
                             "trigger": ["end_when"], "rule": [""]})
    assert (tolerance(400), response(400)) == (8, 24)
    late = pd.DataFrame({"event": ["T1"], "step": [118], "first_step": [110]})
    m = switches_vs_transitions(switches, late, num_steps=400)
    assert (m.iloc[0]["transition"], m.iloc[0]["lag"]) == ("T1", 18)
    too_late = pd.DataFrame({"event": ["T1"], "step": [131], "first_step": [125]})
    m = switches_vs_transitions(switches, too_late, num_steps=400)
    assert m.iloc[0]["coincide"] == "no" and m.iloc[1]["transition"] == "T1"
    long_before = pd.DataFrame({"event": ["T1"], "step": [91], "first_step": [85]})
    assert switches_vs_transitions(switches, long_before, num_steps=400).iloc[0]["coincide"] == "no"


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 240-step run: phase switches at 80 (reward and loss jump there: the switch's effect) and 160 (nothing
    moves), and an unscheduled jump of KL, entropy and length at 200 (the run's own)."""
    rng = np.random.default_rng(3)
    n = 240
    t = np.arange(n)
    phase = np.where(t < 80, 0, np.where(t < 160, 1, 2)).astype(float)
    trigger = np.zeros(n)
    trigger[80], trigger[160] = 2, 1
    series = {
        "reward_mean": 0.2 + 0.4 * (t >= 80) + 0.02 * rng.standard_normal(n),
        "loss": 1.0 - 0.5 * (t >= 80) + 0.02 * rng.standard_normal(n),
        "kl": 0.01 + 0.05 * (t >= 200) + 0.002 * rng.standard_normal(n),
        "entropy": 1.0 - 0.4 * (t >= 200) + 0.02 * rng.standard_normal(n),
        "completion_length_mean": 40.0 + 12.0 * (t >= 200) + rng.standard_normal(n),
        "phase": phase, "phase_trigger": trigger, "reward_weight_format": np.where(t < 80, 1.0, 0.2),
    }
    path = tmp_path_factory.mktemp("curriculum") / "run.h5"
    rec = Recorder.create(path, RunSchema(series={k: f"test series {k}" for k in series}), config_toml=CONFIG,
                          flush_every=100)
    for i in range(n):
        rec.log_step(i, {k: float(v[i]) for k, v in series.items()})
    rec.finish()
    rec.close()
    return path


def test_analysis_marks_switches_and_tells_scheduled_from_emergent_transitions(curriculum_run: Path, tmp_path):
    res = analyze(curriculum_run)
    assert res.switches["step"].tolist() == [80, 160]
    assert not res.jumps["signal"].isin(["phase", "phase_trigger", "reward_weight_format"]).any()  # set, not learned
    match = switches_vs_transitions(res.switches, res.transitions, res.num_steps)
    at80 = match[match["switch_step"] == 80].iloc[0]
    assert at80["coincide"] == "yes" and -tolerance(res.num_steps) <= at80["lag"] <= 3 * tolerance(res.num_steps)
    assert match[match["switch_step"] == 160].iloc[0]["coincide"] == "no"
    own = match[match["switch"] == ""]
    assert any(abs(s - 200) <= 3 for s in own["transition_step"])  # the KL/entropy change is the run's own

    events = res.events()
    sw = events[events["kind"] == "phase_switch"]
    assert sw["step"].tolist() == [80, 160] and "structure → reasoning (end_when" in sw["signals"].iloc[0]

    paths = write_outputs(res, tmp_path)
    page = paths["report"].read_text(encoding="utf-8")
    assert "Phase switches vs detected transitions" in page and "1 of 2 switch(es) coincide" in page
    assert "green dash-dot" in page or "phase switch" in page


def test_the_match_is_made_once_by_the_analysis_and_read_by_the_report(curriculum_run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """``switches_vs_transitions`` runs once for an analysis and its report (summary.json, the table, the
    headline), and what each shows is that one match, as a separate call computes it."""
    import json

    import discrepancy.analysis.pipeline as pipeline
    import discrepancy.report.headline as headline
    import discrepancy.report.outputs as outputs

    calls = []

    def counted(*args: object) -> pd.DataFrame:
        calls.append(args)
        return switches_vs_transitions(*args)

    for module in (pipeline, outputs, headline):  # wherever a report or the analysis could call it
        monkeypatch.setattr(module, "switches_vs_transitions", counted, raising=False)
    res = analyze(curriculum_run)
    paths = write_outputs(res, tmp_path)
    assert len(calls) == 1
    want = switches_vs_transitions(res.switches, res.transitions, res.num_steps)
    pd.testing.assert_frame_equal(res.switch_matches, want)
    stored = pd.DataFrame(json.loads(paths["summary"].read_text())["switches_vs_transitions"])
    assert stored["transition"].tolist() == want["transition"].tolist()
    assert stored["coincide"].tolist() == want["coincide"].tolist() and want["coincide"].tolist()[:2] == ["yes", "no"]
    page = paths["report"].read_text(encoding="utf-8")
    at80 = want.iloc[0]
    assert f"phase transition {at80['transition']} at step {int(at80['transition_step'])} follows it" in page
    chance = json.loads(paths["summary"].read_text())["switch_chance_of_coincidence"]
    assert chance == round(res.switch_chance, 3) and 0.0 <= chance <= 1.0
    assert f"would meet one of this run's transitions at {res.switch_chance:.0%}" in page


def test_chance_of_coincidence_is_the_match_rate_of_a_switch_slid_over_the_run() -> None:
    """Second implementation: slide a one-switch table over every step and count `switches_vs_transitions`' yes."""
    from discrepancy.analysis.phases import chance_of_coincidence

    rng = np.random.default_rng(7)
    for n in (40, 200, 1000):
        steps = np.sort(rng.choice(np.arange(5, n), size=4, replace=False))
        trans = pd.DataFrame({"event": [f"T{i + 1}" for i in range(4)], "step": steps,
                              "first_step": steps - rng.integers(0, 6, 4)})
        margin = -(-n // 10)
        slid = [switches_vs_transitions(pd.DataFrame([{"event": "W1", "step": s, "phase": "p",
                                                       "trigger": "max_steps"}]), trans, n)["coincide"].iloc[0]
                for s in range(margin, n - margin + 1)]
        assert chance_of_coincidence(trans, n) == pytest.approx(np.mean([c == "yes" for c in slid]))
    assert chance_of_coincidence(trans.iloc[:0], 200) == 0.0  # no transition: no coincidence


def test_a_switch_line_names_its_rule_once() -> None:
    """'max_steps = 39' already says what ended the phase: not 'max_steps: max_steps = 39'; an end_when rule keeps
    its trigger in front ('end_when: reward_format >= 0.9 over 10')."""
    from types import SimpleNamespace

    from discrepancy.report.headline import _switch_lines

    switches = pd.DataFrame([{"event": "W1", "step": 40, "from_phase": "a", "phase": "b", "trigger": "max_steps",
                              "rule": "max_steps = 39"},
                             {"event": "W2", "step": 60, "from_phase": "b", "phase": "c", "trigger": "end_when",
                              "rule": "reward_format >= 0.9 over 10"}])
    matches = switches_vs_transitions(switches, pd.DataFrame(columns=["event", "step"]), 80)
    res = SimpleNamespace(switches=switches, switch_matches=matches, switch_chance=float("nan"))
    lines = _switch_lines(res)
    assert "(max_steps = 39)" in lines[0] and "max_steps: max_steps" not in lines[0]
    assert "(end_when: reward_format &gt;= 0.9 over 10)" in lines[1]
