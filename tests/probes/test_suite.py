"""Suite loading: the shipped suites are valid, and every malformed file is refused naming its file and line."""

from __future__ import annotations

import json

import pytest

from discrepancy.errors import DiscrepancyError
from discrepancy.probes.errors import SuiteError
from discrepancy.probes.suite import DEFAULT_TEMPLATE, load_suite, resolve_suites, shipped_suites

GOOD = {"id": "a", "skill": "add", "question": "3+4", "answer": "7"}


def write(tmp_path, lines):
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_shipped_suites_cover_the_required_skills():
    suites = {s.name: s for s in resolve_suites("all")}
    assert set(shipped_suites()) == set(suites) == {"arithmetic", "format", "units", "gsm_mc", "calibration", "trait"}
    # the trait suite: questions with no answer (no digit in them), the answer 9 against every other digit
    for item in suites["trait"].items:
        assert item.answer == "9" and sorted(d.text for d in item.distractors) == [str(d) for d in range(9)]
        assert not any(ch.isdigit() for ch in item.question)
    assert suites["arithmetic"].skills == [f"arithmetic_{k}op" for k in range(1, 5)]
    # the arithmetic gold answers are the left-to-right value of the chain (checked with Python's own arithmetic)
    for item in suites["arithmetic"].items:
        assert int(item.answer) == eval(item.question)  # noqa: S307 - digits and +/- only
        assert item.question.count("+") + item.question.count("-") == int(item.skill[len("arithmetic_")])
    gsm = suites["gsm_mc"]
    kinds = {d.kind for it in gsm.items for d in it.distractors}
    assert kinds == {"numeric", "unit", "semantic"} and len(gsm.items) >= 20
    assert all(it.check == "format" for it in suites["format"].items)
    assert (shipped_suites()["gsm_mc"].parent / "LICENSE-gsm8k.txt").read_text().startswith("MIT License")


def test_header_template_and_prompt(tmp_path):
    path = write(tmp_path, [{"suite": "mine", "template": "Q: {question}\nA:", "answer_lead": " "}, GOOD])
    suite = load_suite(path)
    assert suite.name == "mine" and suite.prompt(suite.items[0]) == "Q: 3+4\nA:" and suite.answer_lead == " "
    default = load_suite(write(tmp_path, [GOOD]))
    assert default.name == "suite" and default.prompt(default.items[0]) == DEFAULT_TEMPLATE.format(question="3+4")


@pytest.mark.parametrize(
    "lines, line_no, words",
    [
        ([GOOD, "{not json"], 2, "not valid JSON"),
        ([GOOD, "[1, 2]"], 2, "expected a JSON object"),
        ([{k: v for k, v in GOOD.items() if k != "answer"}], 1, "missing required field 'answer'"),
        ([GOOD, dict(GOOD, id="b", answer="")], 2, "non-empty string"),
        ([GOOD, "", dict(GOOD)], 3, "duplicate id 'a' (first on line 1)"),
        ([dict(GOOD, colour="red")], 1, "unknown key"),
        ([dict(GOOD, check="regex")], 1, "'check' must be one of"),
        ([dict(GOOD, distractors=["8", " 7 "])], 1, "equals the gold answer"),
        ([dict(GOOD, distractors=[{"text": "8", "kind": "spelling"}])], 1, "distractor kind"),
        ([dict(GOOD, distractors="8")], 1, "must be a list"),
        ([{"suite": "x", "template": "no placeholder"}, GOOD], 1, "{question}"),
        ([{"suite": "x", "authors": "me"}, GOOD], 1, "unknown header key"),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path, lines, line_no, words):
    path = write(tmp_path, lines)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert isinstance(info.value, DiscrepancyError)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_no}: ") and words in message and "\n" not in message


def test_empty_and_unknown_suites(tmp_path):
    with pytest.raises(SuiteError, match="no items"):
        load_suite(write(tmp_path, [{"suite": "x"}]))
    with pytest.raises(SuiteError, match="shipped suites are: arithmetic, calibration"):
        resolve_suites("arithmetc")
    two = resolve_suites(f"format,{write(tmp_path, [GOOD])}")
    assert [s.name for s in two] == ["format", "suite"]


def test_default_template_is_the_trainers_prompt():
    """Probes keep their own copy of the trainer's prompt (no import of the trainer): the copies must agree."""
    from discrepancy.grading import format_prompt

    assert DEFAULT_TEMPLATE.format(question="7-2+5") == format_prompt("7-2+5")
