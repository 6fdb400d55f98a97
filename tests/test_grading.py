"""The one grading yardstick (`discrepancy.grading`) on hand cases: answer extraction, number matching, the format,
reflective words, and the cases where the reward and the probes used to disagree (each with the one answer chosen)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from discrepancy.grading import (
    PROMPT_TEMPLATE,
    answers_match,
    count_reflective,
    extract_answer,
    format_completion,
    format_credit,
    format_ok,
    format_prompt,
    grade,
    parse_number,
    reasoning_text,
    self_assessment,
    split_critique,
)


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("<answer>3</answer><answer>4</answer>", "4", False),  # two answers: no answer (no pay for listing guesses)
        ("<answer>3</answer><answer>4</answer>", "3", False),
        ("<think>t</think><answer>1/2</answer>", "0.5", True),  # a fraction is the number it names
        ("<think>t</think><answer>\u22125</answer>", "-5", True),  # unicode minus
        ("<think>t</think><answer>1e3</answer>", "1000", True),  # scientific notation
        ("<think>t</think><answer>60 km/h</answer>", "60", True),  # the unit dropped: the gold has none
    ],
)
def test_cases_where_reward_and_probes_used_to_disagree(completion: str, gold: str, correct: bool) -> None:
    assert grade(completion, gold) is correct


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>x</think><answer> 42 </answer>", "42"),
        ("text <answer>-3</answer> more", "-3"),
        ("<answer></answer>", ""),
        ("<answer>1</answer><answer>2</answer>", None),  # duplicated: ambiguous
        ("<answer>1</answer> wait <answer>2</answer>", None),
        ("<answer><answer>1</answer></answer>", None),  # nested
        ("<answer>1", None),  # unclosed
        ("<answer>3", None),
        ("</answer>1<answer>", None),  # reversed tags
        ("no tags at all", None),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("predicted", "gold", "match"),
    [
        ("1,234", "1234", True), (" 1,234,567 ", "1234567", True), ("1234", "1,234", True), ("12,34", "1234", False),
        ("$18", "18", True), ("18 dollars", "18", True), ("7 apples.", "7", True), ("7.50", "7.5", True),
        ("7.0", "7", True), ("7", "7.00", True), ("-0", "0", True), ("3000 m", "3000", True), ("45 km/h", "45", True),
        ("12%", "12", True), ("  Paris \n", "paris", True), ("New   York.", "new york", True), (".5", "0.5", True),
        ("1e3", "1000", True), ("2.5E-2", "0.025", True), ("1,23", "123", False), ("3.50", "3.5", True),
        ("-5", "-5", True), ("5", "-5", False), ("-$5", "-5", True), ("$-5", "-5", True), ("x = 7", "7", False),
        ("7 or 8", "7", False), ("", "7", False), ("Paris", "paris", True), ("71", "7", False), ("7 8", "78", False),
        (" 1,000 dollars", "1000", True), ("1/0", "0", False), ("5 eggs", "5", True),
        ("60 mph", "60 km/h", False), ("60", "60 km/h", True), ("60 KM/H", "60 km/h", True),  # a gold unit
    ],
)
def test_answers_match(predicted: str, gold: str, match: bool) -> None:
    assert answers_match(predicted, gold) is match


def test_missing_answer_never_matches_and_numbers_are_exact() -> None:
    assert not answers_match(None, "7")
    assert parse_number("0.1") == Fraction(1, 10) and parse_number("1e-3") == Fraction(1, 1000)
    assert parse_number("−2/4") == Fraction(-1, 2) and parse_number("two") is None


@pytest.mark.parametrize(
    ("completion", "strict", "soft"),
    [
        ("<think>3+4=7</think><answer>7</answer>", True, 1.0),
        ("<think></think>\n<answer>7</answer>\n", True, 1.0),
        ("<think>a</think><answer> </answer>", False, 1.0),  # blank answer
        ("<answer>7</answer>", False, 0.25),  # no reasoning block
        ("<think>x</think><answer>7</answer> trailing", False, 0.75),  # text outside the blocks
        ("<answer>7</answer><think>x</think>", False, 0.5),  # wrong order
        ("<think><think>x</think><answer>7</answer>", False, 0.25),  # nested tag
        ("<think>x</think><answer>7</answer><answer>8</answer>", False, 0.25),  # repeated answer
        ("<think>x</think><answer>7", False, 0.25),  # unclosed
    ],
)
def test_format(completion: str, strict: bool, soft: float) -> None:
    assert format_ok(completion) is strict
    assert format_credit(completion) == soft


def test_format_continues_an_open_think_tag_in_the_prompt() -> None:
    assert format_ok("3+4=7</think><answer>7</answer>", prompt="3+4\nAssistant: <think>")
    assert not format_ok("3+4=7</think><answer>7</answer>", prompt="3+4\n")
    assert format_credit("3+4=7</think><answer>7</answer>", prompt="Assistant: <think>") == 1.0
    assert grade("<think>x</think><answer>9</answer>", "7", "format") is True
    assert grade("<think>x</think><answer>9</answer>", "7", "answer") is False


def test_prompt_and_completion_templates() -> None:
    assert format_prompt("3+4") == "3+4\nReply <think>..</think><answer>..</answer>\n"
    assert PROMPT_TEMPLATE.format(question="x") == format_prompt("x")
    assert format_prompt("{a}") == "{a}\nReply <think>..</think><answer>..</answer>\n"  # braces in a question
    assert format_completion("3+4=7", "7") == "<think>3+4=7</think><answer>7</answer>"
    assert format_ok(format_completion("3+4=7", "7"))


def test_reasoning_text() -> None:
    assert reasoning_text("<think>wait, 3+4=7</think><answer>wait 7</answer>") == "wait, 3+4=7"
    assert reasoning_text("<think>unclosed, check") == "unclosed, check"
    assert reasoning_text("no tags <answer>7</answer>") == "no tags "


@pytest.mark.parametrize(
    ("text", "count"),
    [
        # the case where the instruments counted 6 and the probes 4: every one is a reflective word
        ("Wait, let me recheck. I verified it; checking again. Hmm. double-check", 6),
        # wait, check, Verify, Checking, double-check, WAIT; 'waiting' is another word
        ("Wait, let me check. 3+4=7. Verify: yes. Checking again... waiting? double-check it; WAIT", 6),
        # wait, check, Checked, Hmm, verified, mistakes; 'checkpoint' and 'await' are other words
        ("Wait, let me check. Checked: 3+4=7. Hmm, I verified it; no mistakes. A checkpoint? await.", 6),
        ("Actually, I should reconsider. Re-check: hmmm", 4),
        ("3+4=7", 0),
    ],
)
def test_reflective_words(text: str, count: int) -> None:
    assert count_reflective(text) == count


# ---- critique -------------------------------------------------------------------------------------------------------

CRITIQUED = "<think>3+4=7</think><answer>7</answer>\n<critique>correct</critique>\n"


@pytest.mark.parametrize(("completion", "body", "critique"), [
    (CRITIQUED, "<think>3+4=7</think><answer>7</answer>\n", "correct"),
    ("<think>t</think><answer>7</answer><critique></critique>", "<think>t</think><answer>7</answer>", ""),
    ("<think>t</think><answer>7</answer><critique>a</critique> trailing", None, None),  # text after it
    ("<critique>correct</critique><think>t</think><answer>7</answer>", None, None),  # before the answer
    ("<think>t</think><critique>ok</critique>", None, None),  # no answer before it
    ("<think>t</think><answer>7</answer><critique>a</critique><critique>b</critique>", None, None),  # two blocks
    ("<think>t</think><answer>7</answer><critique>a<critique>b</critique>", None, None),  # nested open tag
])
def test_split_critique(completion: str, body: str | None, critique: str | None) -> None:
    assert split_critique(completion) == ((completion if body is None else body), critique)


@pytest.mark.parametrize(("text", "p"), [
    ("correct", 1.0), ("Right.", 1.0), ("yes", 1.0), ("TRUE", 1.0), ("incorrect", 0.0), ("wrong", 0.0),
    ("not correct", 0.0), ("No", 0.0), ("0.8", 0.8), ("80%", 0.8), ("confidence: 0.25", 0.25), (".5", 0.5),
    ("I am 90% sure it is correct", 0.9), ("wrong, 0.1", 0.1), ("The answer 42 is correct", 1.0),
    ("42 is wrong; confidence 0.3", 0.3), ("150%", None),
    ("correct 0.2", None),  # a word and a confidence that disagree
    ("correct or wrong", None), ("1.5", None), ("0.3 or 0.7", None), ("hmm", None), ("", None), (None, None),
])
def test_self_assessment_forms(text: str | None, p: float | None) -> None:
    assert self_assessment(text) == p


def test_the_format_accepts_a_critique_only_when_asked() -> None:
    assert not format_ok(CRITIQUED) and format_credit(CRITIQUED) == 0.75  # the default rules are unchanged
    assert format_ok(CRITIQUED, critique=True) and format_credit(CRITIQUED, critique=True) == 1.0
    plain = "<think>t</think><answer>7</answer>"
    assert format_ok(plain, critique=True)  # the block is optional
    assert not format_ok(plain + "<critique>a</critique> more", critique=True)
    assert extract_answer(CRITIQUED) == "7" and grade(CRITIQUED, "7")
