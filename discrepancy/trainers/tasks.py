"""Training tasks: a synthetic arithmetic task with difficulty levels and a GSM8K loader.

Both yield :class:`Example` rows. The prompt a model sees is ``discrepancy.grading.format_prompt(question)``; the
cold-start SFT target is ``format_solution(example)``. The prompt is deliberately short: the default model reads characters, and every
prompt character costs in every forward pass of training.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from discrepancy.errors import DiscrepancyError
from discrepancy.grading import format_completion



class DatasetError(DiscrepancyError):
    """A dataset file is missing or has a malformed line (the message names the file and the line)."""


@dataclass(frozen=True)
class Example:
    """One task item. ``answer`` is the gold answer as text; ``difficulty`` the number of operations / steps.

    ``rationale`` is the worked reasoning used as the ``<think>`` part of the cold-start target (may be empty).
    ``prompt_id`` identifies the question: equal questions of the arithmetic task share it.
    """

    prompt_id: str
    question: str
    answer: str
    difficulty: int
    rationale: str = ""


def format_solution(example: Example) -> str:
    """A well-formed target completion, e.g. ``<think>3+4=7</think><answer>7</answer>``."""
    return format_completion(example.rationale, example.answer)


# ---- arithmetic ---------------------------------------------------------------------------------------------------


def _arithmetic_item(rng: random.Random, n_ops: int, max_operand: int) -> tuple[str, int, str]:
    """One left-to-right chain of + and − whose running value never goes below 0 (shorter answers, no signs)."""
    value = rng.randint(0, max_operand)
    question, steps = str(value), []
    for _ in range(n_ops):
        if value > 0 and rng.random() < 0.5:
            operand = rng.randint(0, min(max_operand, value))
            new, op = value - operand, "-"
        else:
            operand = rng.randint(0, max_operand)
            new, op = value + operand, "+"
        steps.append(f"{value}{op}{operand}={new}")
        question += f"{op}{operand}"
        value = new
    return question, value, ",".join(steps)


def arithmetic_examples(
    n: int, *, min_ops: int = 1, max_ops: int = 1, max_operand: int = 9, seed: int = 0
) -> list[Example]:
    """``n`` arithmetic questions like ``"3+4"`` / ``"7-2+5"``; difficulty = number of operations.

    The number of operations is drawn uniformly from ``[min_ops, max_ops]``, operands from ``[0, max_operand]``;
    evaluation is left to right (the same as the usual precedence, since only + and − occur) and subtraction never
    takes the running value below 0. Deterministic in ``seed``. The rationale lists each step (``"3+4=7,7-2=5"``).
    """
    if n < 0 or not 1 <= min_ops <= max_ops or max_operand < 1:
        raise DatasetError(
            f"arithmetic task needs n >= 0, 1 <= min_ops <= max_ops and max_operand >= 1; got n={n}, "
            f"min_ops={min_ops}, max_ops={max_ops}, max_operand={max_operand}"
        )
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        n_ops = rng.randint(min_ops, max_ops)
        question, value, rationale = _arithmetic_item(rng, n_ops, max_operand)
        out.append(Example(f"arith:{question}", question, str(value), n_ops, rationale))
    return out


# ---- GSM8K --------------------------------------------------------------------------------------------------------

_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. "<<16-3-4=9>>"


def _parse_gsm8k_line(line: str, path: Path, lineno: int) -> Example:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        raise DatasetError(f"{where}: expected an object with string fields 'question' and 'answer'")
    rationale, sep, final = row["answer"].rpartition("####")
    final = final.strip().replace(",", "")
    if not sep or not final:
        raise DatasetError(f"{where}: the 'answer' must end with '#### <number>'")
    return Example(
        prompt_id=f"gsm8k:{path.stem}:{lineno}",
        question=row["question"].strip(),
        answer=final,
        difficulty=max(1, len(_CALC.findall(rationale))),
        rationale=_CALC.sub("", rationale).strip(),
    )


def load_gsm8k(path: str | Path, limit: int | None = None) -> list[Example]:
    """Examples from a GSM8K jsonl file (``question``, ``answer`` ending in ``#### N``; commas in N are dropped).

    Difficulty is the number of calculator annotations (``<<…>>``) in the worked answer, at least 1; the rationale is
    that worked answer without the annotations. Blank lines are skipped; a malformed line, or bytes that are not
    UTF-8, raise :class:`DatasetError` naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file; pass the path of a GSM8K-style .jsonl file")
    out: list[Example] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if limit is not None and len(out) >= limit:
                    break
                if line.strip():
                    out.append(_parse_gsm8k_line(line, path, lineno))
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    return out


def _not_utf8(path: Path) -> DatasetError:
    """The error for a dataset file that is not UTF-8, naming the first bad line.

    The text reader decodes in chunks, so its error's offset is not the file's; the (rare) failing file is read again
    as bytes to find the line.
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        return DatasetError(f"{path}:{lineno}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the dataset as "
                            "UTF-8 JSON lines")
    return DatasetError(f"{path}: not UTF-8 text; save the dataset as UTF-8 JSON lines")


def gsm8k_sample_path() -> Path:
    """Path of the GSM8K sample shipped with the package (200 test questions, MIT licence in ``GSM8K_LICENSE``)."""
    return Path(str(resources.files("discrepancy.data").joinpath("gsm8k_sample.jsonl")))
