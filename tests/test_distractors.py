"""Distractors (`discrepancy.distractors`): never the gold answer under the grading rules, all three kinds on the
arithmetic task and on GSM8K, deterministic for a seed, the documented constructions on hand cases, and the probe
suites the generator script writes with them load as valid suites."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from discrepancy.distractors import KINDS, candidates, make_distractors, number_text, plain_number
from discrepancy.grading import answers_match
from discrepancy.trainers.tasks import arithmetic_examples, load_gsm8k

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def _check_items(items: list[tuple[str, str, str]]) -> Counter:
    """Assert no distractor of any item grades as its gold answer; count the items with each kind."""
    covered: Counter = Counter()
    for question, gold, solution in items:
        found = candidates(question, gold, solution)
        wrong = [d.text for d in found if answers_match(d.text, gold)]
        assert not wrong, (question, gold, wrong)
        assert len({plain_number(d.text) for d in found}) == len(found)  # each value once
        covered.update({d.kind for d in found})
    return covered


def test_arithmetic_distractors_are_never_gold_and_cover_the_three_kinds() -> None:
    examples = arithmetic_examples(300, min_ops=1, max_ops=4, seed=11)  # held out from the hand cases below
    covered = _check_items([(ex.question, ex.answer, ex.rationale) for ex in examples])
    assert set(covered) == set(KINDS)
    assert covered["numeric"] == 300 and covered["semantic"] > 250  # "0+0" has no number but the gold


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason="GSM8K test split not in ../shared/data")
def test_gsm8k_distractors_are_never_gold_and_cover_the_three_kinds() -> None:
    examples = load_gsm8k(GSM8K_TEST)
    covered = _check_items([(ex.question, ex.answer, ex.rationale) for ex in examples])
    assert covered["numeric"] == len(examples)  # every gold answer of the test split is a plain number
    assert covered["unit"] >= 0.99 * len(examples) and covered["semantic"] >= 0.99 * len(examples)


@pytest.mark.parametrize(("text", "value"), [
    ("42", Fraction(42)), ("-3", Fraction(-3)), ("\u22123", Fraction(-3)), ("$1,234", Fraction(1234)),
    ("-$5", Fraction(-5)), ("2.50", Fraction(5, 2)), ("7 apples", None), ("1/2", Fraction(1, 2)), ("12,34", None),
])
def test_plain_numbers(text: str, value: Fraction | None) -> None:
    assert plain_number(text) == value


def test_number_text_writes_finite_decimals_only() -> None:
    assert [number_text(Fraction(x)) for x in ("12", "-3", "5/2", "3/40")] == ["12", "-3", "2.5", "0.075"]
    assert number_text(Fraction(1, 3)) is None


def _by_how(question: str, gold: str, solution: str = "") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in candidates(question, gold, solution):
        out.setdefault(d.how, set()).add(d.text)
    return out


def test_arithmetic_constructions_on_a_hand_case() -> None:
    # 9+4-1+5 = 17: running values 13, 12; flipping one operator gives 9-4-1+5 = 9, 9+4+1+5 = 19, 9+4-1-5 = 7.
    how = _by_how("9+4-1+5", "17", "9+4=13,13-1=12,12+5=17")
    assert how["off_by_one"] == {"16", "18"} and how["digit_swap"] == {"71"} and how["wrong_operation"] == {"19", "7"}
    assert how["off_by_two"] == {"15"}  # 19 is listed once, as the more specific wrong operation
    assert how["intermediate"] == {"13", "12"} and how["question_number"] == {"9", "4", "1", "5"}  # 9: semantic first
    assert how["x10"] == {"170"} and how["/10"] == {"1.7"}
    assert all(not d.text.startswith("-") for d in candidates("1-1", "0"))  # no negatives for a non-negative gold


def test_word_problem_constructions_on_a_hand_case() -> None:
    question = "She runs 3 laps a day for 5 days. Each lap takes 12 minutes. How many minutes does she run?"
    solution = "Laps: 3*5=<<3*5=15>>15\nMinutes: 15*12=<<15*12=180>>180\n#### 180"
    how = _by_how(question, "180", solution)
    assert how["wrong_operation"] == {"27", "1.25"}  # the last step 15*12 as 15+12, 15/12 (15-12 = 3: below)
    assert how["x60"] == {"10800"} and how["/60"] == {"3"}  # minutes: ×/÷ 60; 3 is a unit slip before anything else
    assert "15" in how["intermediate"] and how["x7"] == {"1260"} and how["/24"] == {"7.5"}  # days: 7 and 24
    assert how["question_number"] == {"5", "12"}
    no_units = _by_how("Tom has 4 apples and buys 5 more. How many now?", "9")
    assert set(no_units) & {"x60", "x24", "x7", "x12", "x1000"} == set()  # unit factors only where units appear


def test_make_distractors_is_deterministic_per_seed_and_tags_kinds() -> None:
    args = ("9+4-1+5", "17", "9+4=13,13-1=12,12+5=17")
    first = make_distractors(*args, seed=3, per_kind=2)
    assert first == make_distractors(*args, seed=3, per_kind=2)
    assert [d.kind for d in first] == ["numeric", "numeric", "unit", "unit", "semantic", "semantic"]
    draws = {tuple(make_distractors(*args, seed=s, per_kind=2)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    script = ("from discrepancy.distractors import make_distractors as m; "
              f"print([d.text for d in m(*{args!r}, seed=3, per_kind=2)])")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=ROOT)
    assert other.stdout.strip() == str([d.text for d in first])  # the same in another process
    assert make_distractors("7 apples", "seven") == [] and candidates("x", "half") == []
    assert candidates("x", "1/2") and not any(answers_match(d.text, "1/2") for d in candidates("x", "1/2"))
    with pytest.raises(ValueError, match="kinds must be"):
        make_distractors(*args, kinds=("lexical",))


def test_the_suite_script_writes_valid_suites_with_the_library(tmp_path: Path) -> None:
    from discrepancy.probes.suite import load_suite

    gsm = ["--gsm8k", str(GSM8K_TEST)] if GSM8K_TEST.is_file() else []
    if not gsm:
        pytest.skip("GSM8K test split not in ../shared/data")
    subprocess.run([sys.executable, str(ROOT / "probes" / "make_suites.py"), "--out", str(tmp_path), *gsm],
                   check=True, capture_output=True, cwd=ROOT)
    suites = {p.stem: load_suite(p) for p in tmp_path.glob("*.jsonl")}
    assert set(suites) == {"arithmetic", "format", "units", "calibration", "gsm_mc"}
    for item in suites["gsm_mc"].items:
        assert {d.kind for d in item.distractors} == set(KINDS)
        assert not any(answers_match(d.text, item.answer) for d in item.distractors)
    assert all(d.kind == "unit" for item in suites["units"].items for d in item.distractors[:-1])
