"""Tasks: the synthetic arithmetic generator, prompts and SFT targets, and the GSM8K loader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from discrepancy.errors import DiscrepancyError
from discrepancy.grading import format_prompt, parse_number
from discrepancy.trainers.rewards import correctness, format_reward
from discrepancy.trainers.tasks import (
    DatasetError,
    Example,
    arithmetic_examples,
    format_solution,
    gsm8k_sample_path,
    load_gsm8k,
)

FULL_GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"  # shared/ sits beside the checkout


def _evaluate(question: str) -> int:
    """Independent evaluation of a + / − chain: Python's own integer arithmetic on the checked characters."""
    assert re.fullmatch(r"\d+(?:[+-]\d+)*", question), question
    return eval(question)  # noqa: S307 - the string is only digits, + and −, checked above


def test_arithmetic_answers_difficulty_and_ranges() -> None:
    examples = arithmetic_examples(300, min_ops=1, max_ops=3, max_operand=9, seed=5)
    assert len(examples) == 300
    assert {e.difficulty for e in examples} == {1, 2, 3}
    for e in examples:
        assert int(e.answer) == _evaluate(e.question)
        assert e.difficulty == len(re.findall(r"[+-]", e.question))
        assert all(0 <= int(x) <= 9 for x in re.findall(r"\d+", e.question))
        assert int(e.answer) >= 0
        assert e.prompt_id == f"arith:{e.question}"
        # Each step of the rationale is right and the last step ends in the answer.
        for step in e.rationale.split(","):
            lhs, rhs = step.split("=")
            assert _evaluate(lhs) == int(rhs)
        assert e.rationale.endswith(f"={e.answer}")


def test_arithmetic_is_deterministic_in_seed() -> None:
    assert arithmetic_examples(50, seed=1) == arithmetic_examples(50, seed=1)
    assert arithmetic_examples(50, seed=1) != arithmetic_examples(50, seed=2)
    one_op = arithmetic_examples(200, seed=0)
    assert {e.difficulty for e in one_op} == {1}
    assert {"+", "-"} <= {c for e in one_op for c in e.question}  # both operations occur


def test_arithmetic_rejects_bad_settings() -> None:
    with pytest.raises(DiscrepancyError, match="min_ops"):
        arithmetic_examples(5, min_ops=3, max_ops=2)


def test_solution_earns_full_reward_and_prompt_is_short() -> None:
    for e in arithmetic_examples(20, max_ops=2, seed=3):
        solution = format_solution(e)
        assert format_reward([""], [solution], [e.answer]) == [1.0]
        assert correctness([""], [solution], [e.answer]) == [1.0]
    e = Example("arith:3+4", "3+4", "7", 1, "3+4=7")
    assert format_solution(e) == "<think>3+4=7</think><answer>7</answer>"
    prompt = format_prompt("3+4")
    assert prompt.startswith("3+4") and "<think>" in prompt and "<answer>" in prompt
    assert len(prompt) - len("3+4") <= 50  # the instruction costs few characters


def test_load_gsm8k_sample_known_items() -> None:
    examples = load_gsm8k(gsm8k_sample_path())
    assert len(examples) == 200
    # The first two test questions of GSM8K: Janet's ducks (18 dollars) and the robe (3 bolts).
    assert examples[0].question.startswith("Janet") and examples[0].answer == "18"
    assert examples[1].question.startswith("A robe") and examples[1].answer == "3"
    assert examples[0].difficulty == 2  # two calculator annotations in its worked answer
    assert "<<" not in examples[0].rationale and "####" not in examples[0].rationale
    assert len({e.prompt_id for e in examples}) == 200
    assert all(parse_number(e.answer) is not None for e in examples)
    assert load_gsm8k(gsm8k_sample_path(), limit=5) == examples[:5]
    licence = gsm8k_sample_path().with_name("GSM8K_LICENSE").read_text()
    assert "MIT License" in licence and "OpenAI" in licence


@pytest.mark.skipif(not (FULL_GSM8K / "test.jsonl").exists(), reason="full GSM8K not on this machine")
def test_load_full_gsm8k() -> None:
    test = load_gsm8k(FULL_GSM8K / "test.jsonl")
    assert len(test) == 1319  # the published size of the GSM8K test split
    assert all(parse_number(e.answer) is not None for e in test)
    # Gold answers with thousands separators are normalised: compare with the raw lines.
    raw = [json.loads(line)["answer"].split("####")[-1].strip() for line in (FULL_GSM8K / "test.jsonl").open()]
    with_commas = [i for i, r in enumerate(raw) if "," in r]
    assert len(with_commas) == 14  # counted with grep on the file
    for i in with_commas:
        assert test[i].answer == raw[i].replace(",", "")
    if (FULL_GSM8K / "train.jsonl").exists():
        assert len(load_gsm8k(FULL_GSM8K / "train.jsonl")) == 7473  # published size of the train split


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"})
    cases = {
        "{not json": "not valid JSON",
        json.dumps({"question": "q"}): "string fields",
        json.dumps({"question": "q", "answer": "no final line"}): "####",
        json.dumps({"question": "q", "answer": "#### "}): "####",
        json.dumps(["q", "a"]): "string fields",
    }
    for bad, message in cases.items():
        path = tmp_path / "data.jsonl"
        path.write_text(f"{good}\n\n{bad}\n{good}\n")
        with pytest.raises(DatasetError, match=message) as info:
            load_gsm8k(path)
        assert f"{path}:3:" in str(info.value) and "\n" not in str(info.value)
    path.write_text(f"{good}\n\n{good}\n")
    assert [e.answer for e in load_gsm8k(path)] == ["2", "2"]  # blank lines are skipped
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(f"{good}\n{good}\n".encode() + '{"question": "café", "answer": "#### 3"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.jsonl:3: not UTF-8 text \(byte 0xe9\)") as info:
        load_gsm8k(path)
    assert "\n" not in str(info.value)
    path.write_bytes(b"\xff\xfe\n")  # a UTF-16 byte-order mark: the reviewer's case
    with pytest.raises(DatasetError, match=r":1: not UTF-8 text \(byte 0xff\)"):
        load_gsm8k(path)
    # Deep in a long file, past the text reader's first chunk, the line number is still the file's.
    path.write_bytes(f"{good}\n".encode() * 3000 + b"\x80\n")
    with pytest.raises(DatasetError, match=r":3001: not UTF-8"):
        load_gsm8k(path)
