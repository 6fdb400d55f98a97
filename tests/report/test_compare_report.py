"""The page of ``discrepancy compare``: its headline counts every run it shows (the control too) and names who is
who, and no legend says a name twice (``teacher (teacher)``). Built from hand-made results: no run is analysed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import discrepancy.report.compare as page
from discrepancy.analysis.compare import CompareResult, role_name
from discrepancy.analysis.reproducibility import RECURRENCE_COLUMNS
from discrepancy.analysis.trait import TRAIT_COLUMNS
from discrepancy.runfile.results import EVENT_COLUMNS


def _result(labels: list[str], control: str | None) -> CompareResult:
    """Runs ``labels`` (teacher first when ``control`` is the control's label), each probed at steps 0, 5, 10, and
    one event each."""
    events = pd.DataFrame([{**dict.fromkeys(EVENT_COLUMNS, ""), "event": "J1", "kind": "jump", "step": 5, "run": lab}
                           for lab in labels])
    res = CompareResult(runs=[f"runs/{lab}/run.h5" for lab in labels], labels=labels, series={}, events=events,
                        recurrence=pd.DataFrame(columns=RECURRENCE_COLUMNS), tolerance=3,
                        control=f"runs/{control}/run.h5" if control else None, control_label=control)
    roles = {labels[0]: "teacher", **dict.fromkeys(labels[1:], "student")} if control else {}
    runs = [*labels, *([control] if control else [])]
    res.trait = pd.DataFrame([{"run": run, "role": roles.get(run, "control" if run == control else ""), "step": step,
                               "suite": "trait", "skill": "prefers_nine", "metric": "answer_prob",
                               "value": 0.1 * k + 0.01 * step, "n": 12}
                              for k, run in enumerate(runs) for step in (0, 5, 10)], columns=TRAIT_COLUMNS)
    return res


def _legends(res: CompareResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    """The trait figure's legend entries and the page's text, from one ``write_compare``."""
    seen: list[list[str]] = []
    save = page._save_panels

    def spy(fig, axes, xlabel, path):  # noqa: ANN001, ANN202 - records the legends, then saves as before
        seen.extend(ax.get_legend_handles_labels()[1] for ax in axes)
        return save(fig, axes, xlabel, path)

    monkeypatch.setattr(page, "_save_panels", spy)
    files = page.write_compare(res, tmp_path)
    return seen[-1], files["html"].read_text(encoding="utf-8")


@pytest.mark.parametrize(("labels", "control", "title", "legend"), [
    (["teacher", "student"], "control", "3 runs side by side: teacher, student and control",
     ["teacher", "student", "control"]),
    (["t", "s1", "s2"], "c", "4 runs side by side: teacher t, 2 students (s1, s2) and control c",
     ["teacher t", "student s1", "student s2", "control c"]),
    (["teacher_seed0", "s"], "control_seed0", "3 runs side by side: teacher_seed0, student s and control_seed0",
     ["teacher_seed0", "student s", "control_seed0"]),
])
def test_the_headline_counts_the_control_and_no_legend_repeats_a_name(
        labels: list[str], control: str, title: str, legend: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    got, html = _legends(_result(labels, control), tmp_path, monkeypatch)
    assert got == legend
    assert f"<h1>{title}</h1>" in html and f"<title>{title}</title>" in html
    assert f"control runs/{control}/run.h5" in html  # the control's file is listed with the others
    assert "the control&#x27;s events are not matched" in html
    events = html.split("<h2>All events</h2>")[1]
    assert 0 < events.index(">run</th>") < events.index(">event</th>")  # the run first: it shows on screen


def test_without_a_control_the_headline_is_the_runs_and_the_count_reads_both() -> None:
    res = _result(["seed0", "seed1"], None)
    assert page.compare_title(res) == "2 runs side by side"
    html = page.compare_html(res, {})
    assert "recur in both runs" in html and "all 2 runs" not in html and "not matched" not in html
    three = _result(["a", "b", "c"], None)
    assert page.compare_title(three) == "3 runs side by side"
    assert "recur in all 3 runs and 0 in at least two" in page.compare_html(three, {})


def test_a_role_is_said_once() -> None:
    assert [role_name("teacher", x) for x in ("teacher", "Teacher_2", "t1")] == ["teacher", "Teacher_2", "teacher t1"]
