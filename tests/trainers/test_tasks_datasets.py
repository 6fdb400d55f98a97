"""Datasets researchers already have (HF ``datasets``: jsonl, parquet, arrow, csv, save_to_disk folders, a column
mapping) and chat templates: real GSM8K through ``datasets`` against the hand-written GSM8K loader, renamed columns
with and without the mapping, and chat prompts against a ChatML string written out by hand and against the token ids
``apply_chat_template`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from discrepancy.grading import format_prompt
from discrepancy.trainers.config import TaskConfig
from discrepancy.trainers.tasks import (
    DatasetError, Example, chat_prompt, last_boxed, load_dataset_examples, load_gsm8k, load_task, with_chat_prompts,
)

GSM8K_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"
N = 300
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def _fields(examples: list[Example]) -> list[tuple]:
    return [(e.question, e.answer, e.rationale, e.difficulty) for e in examples]


@pytest.fixture(scope="module")
def gsm8k_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Example]]:
    """The first N rows of the real GSM8K train split, and what the hand-written loader makes of them."""
    if not GSM8K_TRAIN.is_file():
        pytest.skip("shared GSM8K data not present")
    path = tmp_path_factory.mktemp("gsm8k") / "train.jsonl"
    path.write_text("".join(GSM8K_TRAIN.open(encoding="utf-8").readlines()[:N]), encoding="utf-8")
    return path, load_gsm8k(path)


def test_real_gsm8k_through_datasets_equals_the_gsm8k_loader(gsm8k_rows):
    path, want = gsm8k_rows
    got = load_dataset_examples(path, answer_format="gsm8k")
    assert len(got) == N and _fields(got) == _fields(want)


def test_other_column_names_load_with_the_mapping_and_fail_in_one_line_without(gsm8k_rows, tmp_path: Path):
    path, want = gsm8k_rows
    frame = pd.read_json(path, lines=True).rename(columns={"question": "problem", "answer": "solution"})
    for suffix, write in ((".parquet", frame.to_parquet), (".csv", lambda p: frame.to_csv(p, index=False))):
        renamed = tmp_path / f"renamed{suffix}"
        write(renamed)
        got = load_dataset_examples(renamed, question_field="problem", answer_field="solution", answer_format="gsm8k",
                                    limit=50)
        assert _fields(got) == _fields(want[:50])
        with pytest.raises(DatasetError) as err:
            load_dataset_examples(renamed, answer_format="gsm8k")
        message = str(err.value)
        assert "\n" not in message and "no column 'question', 'answer'" in message and "problem, solution" in message
        assert "task.question_field" in message


def test_arrow_files_and_save_to_disk_folders(tmp_path: Path):
    import datasets

    rows = {"q": ["1+2", "7-3"], "a": [3, 4], "why": ["1+2=3", "7-3=4"]}
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for path in (tmp_path / "saved", arrow):
        got = load_dataset_examples(path, question_field="q", answer_field="a", rationale_field="why")
        assert [(e.question, e.answer, e.rationale) for e in got] == [("1+2", "3", "1+2=3"), ("7-3", "4", "7-3=4")]


def test_boxed_answers_keep_nested_braces():
    assert last_boxed(r"so \boxed{\frac{1}{2}} or rather \boxed{ \dfrac{3}{4} }.") == r"\dfrac{3}{4}"
    assert last_boxed(r"\boxed{x^{2}+1}") == "x^{2}+1"
    assert last_boxed("no box") is None and last_boxed(r"\boxed{unclosed") is None


def test_bad_rows_and_files_name_the_problem(tmp_path: Path):
    lines = tmp_path / "d.jsonl"
    lines.write_text(json.dumps({"question": "2+2", "answer": "4"}) + "\n" + json.dumps({"question": "", "answer": "1"})
                     + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 2: column 'question' is empty"):
        load_dataset_examples(lines)
    assert load_dataset_examples(lines, limit=1)[0].answer == "4"
    with pytest.raises(DatasetError, match=r"row 1: column 'answer' must end with '#### <answer>'"):
        load_dataset_examples(lines, answer_format="gsm8k")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DatasetError, match="unsupported dataset file type '.txt'"):
        load_dataset_examples(tmp_path / "d.txt")
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset_examples(tmp_path / "none.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="cannot be read as parquet"):
        load_dataset_examples(tmp_path / "broken.parquet")


def test_load_task_reads_a_dataset_with_the_config_mapping(tmp_path: Path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problem": "Half of one?", "solution": r"It is \boxed{\frac{1}{2}}."}) + "\n")
    task = TaskConfig(name="dataset", path=str(path), question_field="problem", answer_field="solution",
                      answer_format="boxed")
    (ex,) = load_task(task, seed=0)
    assert (ex.question, ex.answer, ex.rationale) == ("Half of one?", r"\frac{1}{2}", r"It is \boxed{\frac{1}{2}}.")
    assert ex.prompt_text == format_prompt("Half of one?")  # no template applied yet: the plain prompt


@pytest.fixture(scope="module")
def tokenizer():
    from local_models import bpe_tokenizer

    tok = bpe_tokenizer()
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    return tok


def test_chat_prompt_is_what_apply_chat_template_gives(tokenizer):
    tokenizer.chat_template = CHATML
    question = "Tom has 3 apples and buys 4. How many?"
    text = chat_prompt(question, tokenizer)
    by_hand = f"<|im_start|>user\n{format_prompt(question)}<|im_end|>\n<|im_start|>assistant\n"
    messages = [{"role": "user", "content": format_prompt(question)}]
    assert text == by_hand == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # what the samplers encode (no special tokens added) is the token sequence the template defines
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == list(ids["input_ids"])
    system = chat_prompt(question, tokenizer, system_prompt="You are careful.")
    assert system.startswith("<|im_start|>system\nYou are careful.<|im_end|>\n<|im_start|>user\n")


def test_a_template_that_writes_bos_gets_it_once(tokenizer):
    tokenizer.chat_template = LLAMA3
    text = chat_prompt("2+2", tokenizer, mode="on")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert text.startswith("<|begin_of_text|><|start_header_id|>user")
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_modes_and_examples(tokenizer):
    plain_tok = type("Plain", (), {"chat_template": None})()
    assert chat_prompt("1+1", plain_tok) == format_prompt("1+1")  # auto: no template, plain prompt
    with pytest.raises(DatasetError, match="no chat template"):
        chat_prompt("1+1", plain_tok, mode="on")
    tokenizer.chat_template = CHATML
    assert chat_prompt("1+1", tokenizer, mode="off") == format_prompt("1+1")
    examples = [Example("a", "1+1", "2", 1), Example("b", "2+2", "4", 1)]
    templated = with_chat_prompts(examples, tokenizer, TaskConfig())
    assert [e.prompt_text for e in templated] == [chat_prompt(e.question, tokenizer) for e in examples]
    assert with_chat_prompts(examples, tokenizer, TaskConfig(chat_template="off")) == examples
    assert examples[0].prompt_text == format_prompt("1+1")


def test_without_hf_datasets_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(DatasetError, match=r"pip install 'discrepancy\[datasets\]'"):
        load_dataset_examples(path)
