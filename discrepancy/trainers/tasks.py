"""Training tasks: a synthetic arithmetic task with difficulty levels, a GSM8K loader, and any local dataset file read
through HF ``datasets`` (``load_dataset_examples``; ``load_task`` picks by ``task.name``).

All yield :class:`Example` rows. The prompt a model sees is ``Example.prompt_text``:
``grading.format_prompt(question)``, inside the tokenizer's chat template when it has one (``with_chat_prompts``), so
an instruct model is prompted as it was trained. The cold-start SFT target is ``format_solution(example)``. The plain
prompt is deliberately short: the default model reads characters, and every prompt character costs in every forward
pass of training.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discrepancy.errors import DiscrepancyError
from discrepancy.grading import format_completion, format_prompt

if TYPE_CHECKING:
    from discrepancy.trainers.config import TaskConfig


class DatasetError(DiscrepancyError):
    """A dataset file is missing or has a malformed line (the message names the file and the line)."""


@dataclass(frozen=True)
class Example:
    """One task item. ``answer`` is the gold answer as text; ``difficulty`` the number of operations / steps.

    ``rationale`` is the worked reasoning used as the ``<think>`` part of the cold-start target (may be empty).
    ``prompt_id`` identifies the question: equal questions of the arithmetic task share it. ``prompt`` is the full
    text the model sees when it is not the plain ``format_prompt(question)`` (a chat template's; ``with_chat_prompts``).
    """

    prompt_id: str
    question: str
    answer: str
    difficulty: int
    rationale: str = ""
    prompt: str = ""

    @property
    def prompt_text(self) -> str:
        """What the model is prompted with: ``prompt`` when set, else ``format_prompt(question)``."""
        return self.prompt or format_prompt(self.question)


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
    split = split_gsm8k_answer(row["answer"])
    if split is None:
        raise DatasetError(f"{where}: the 'answer' must end with '#### <number>'")
    rationale, final = split
    return Example(
        prompt_id=f"gsm8k:{path.stem}:{lineno}",
        question=row["question"].strip(),
        answer=final,
        difficulty=max(1, len(_CALC.findall(rationale))),
        rationale=_CALC.sub("", rationale).strip(),
    )


def split_gsm8k_answer(answer: str) -> tuple[str, str] | None:
    """(worked answer with its calculator annotations, final answer without thousands commas) of a GSM8K answer
    ``"… #### 1,234"``; None when it has no ``####`` or nothing after it."""
    rationale, sep, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    return (rationale, final) if sep and final else None


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


# ---- any local dataset (HF datasets) ------------------------------------------------------------------------------

#: File types HF ``datasets`` reads here, by suffix -> its packaged builder. A folder is a ``save_to_disk`` dataset.
DATASET_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
ANSWER_FORMATS = ("plain", "gsm8k", "boxed")


def _read_rows(path: Path) -> tuple[list[str], Any]:
    """(column names, the dataset) of a local file or ``save_to_disk`` folder, read with HF ``datasets`` into memory
    through a throw-away cache (nothing left in the user's cache; the prompts of a task fit in memory)."""
    import tempfile

    try:
        import datasets
    except ImportError:
        raise DatasetError("task.name = 'dataset' reads files with HF datasets, which is not installed: "
                           "pip install 'discrepancy[datasets]'") from None

    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path), keep_in_memory=True)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(f"{path}: not a dataset folder written by save_to_disk ({_first(err)})") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return list(ds.column_names), ds
    builder = DATASET_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DatasetError(f"{path}: unsupported dataset file type '{path.suffix}'; use .jsonl, .json, .parquet, "
                           ".arrow, .csv or a folder written by save_to_disk")
    quiet = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one "Generating train split" bar per load would bury the trainer's output
    try:
        with tempfile.TemporaryDirectory() as cache:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                       keep_in_memory=True)
    except Exception as err:  # noqa: BLE001 - datasets wraps parser errors in several classes; all mean "unreadable"
        raise DatasetError(f"{path}: cannot be read as {builder} ({_first(err)})") from None
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return list(ds.column_names), ds


def _first(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _text(value: object) -> str | None:
    """A cell as text: strings stripped, integral numbers without ``.0``; None for anything else or blank."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (str, int, float)):
        text = str(value).strip()
        return text or None
    return None


_BOXED = re.compile(r"\\boxed\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text`` (braces balanced), None when there is none (MATH-style)."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip() or None
    return None


def _final_answer(raw: str, answer_format: str) -> tuple[str, str] | None:
    """(rationale, final answer) of an answer cell in ``answer_format`` (ANSWER_FORMATS), None when malformed."""
    if answer_format == "gsm8k":
        split = split_gsm8k_answer(raw)
        return None if split is None else (_CALC.sub("", split[0]).strip(), split[1])
    if answer_format == "boxed":
        final = last_boxed(raw)
        return None if final is None else (raw, final)
    return "", raw


def load_dataset_examples(  # noqa: PLR0913 - the column mapping is keyword-only
    path: str | Path, *, question_field: str = "question", answer_field: str = "answer",
    rationale_field: str | None = None, answer_format: str = "plain", limit: int | None = None,
) -> list[Example]:
    """Examples from a local dataset file (.jsonl, .json, .parquet, .arrow, .csv) or ``save_to_disk`` folder.

    ``question_field`` / ``answer_field`` name its columns (a dataset with ``problem`` / ``solution`` loads with
    ``question_field="problem", answer_field="solution"``). ``answer_format``: ``plain`` (the cell is the answer),
    ``gsm8k`` (worked answer ending ``#### N``) or ``boxed`` (the last ``\\boxed{…}``, as MATH). The rationale (the
    cold start's ``<think>`` part) is ``rationale_field``'s cell, else the worked answer of those two formats.
    A missing column or a malformed row raises :class:`DatasetError` naming the file, the row and the fix.
    """
    if answer_format not in ANSWER_FORMATS:
        raise DatasetError(f"answer format {answer_format!r}: choose one of {', '.join(ANSWER_FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file or folder")
    columns, ds = _read_rows(path)
    wanted = [question_field, answer_field, *([rationale_field] if rationale_field else [])]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DatasetError(f"{path}: no column {', '.join(map(repr, missing))} (it has: {', '.join(columns)}); set "
                           "task.question_field / task.answer_field (and task.rationale_field) to its column names")
    rows = ds.select(range(min(limit, len(ds)))) if limit is not None else ds
    out = []
    for i, row in enumerate(rows.select_columns(wanted).to_list()):
        out.append(_dataset_example(row, i, path, question_field, answer_field, rationale_field, answer_format))
    if not out:
        raise DatasetError(f"{path}: the dataset has no rows")
    return out


def _dataset_example(row: dict, i: int, path: Path, q: str, a: str, r: str | None, answer_format: str) -> Example:
    """One row as an Example, or the error naming the row (1-based, as a reader counts lines) and the column."""
    question, raw = _text(row[q]), _text(row[a])
    for name, value in ((q, question), (a, raw)):
        if value is None:
            raise DatasetError(f"{path}: row {i + 1}: column '{name}' is empty or not text/number ({row[name]!r})")
    parsed = _final_answer(raw, answer_format)
    if parsed is None:
        want = "end with '#### <answer>'" if answer_format == "gsm8k" else "hold a \\boxed{…} answer"
        raise DatasetError(f"{path}: row {i + 1}: column '{a}' must {want} (task.answer_format = {answer_format})")
    rationale, final = parsed
    if r is not None:
        rationale = _text(row[r]) or ""
    difficulty = max(1, len(_CALC.findall(raw))) if answer_format == "gsm8k" else 1
    return Example(f"data:{path.stem}:{i + 1}", question, final, difficulty, rationale)


def load_task(task: TaskConfig, seed: int) -> list[Example]:
    """The examples ``task`` names: the arithmetic generator (seeded), the GSM8K loader (the shipped sample when no
    path), or a local dataset through ``load_dataset_examples`` with the config's column mapping."""
    if task.name == "arithmetic":
        return arithmetic_examples(task.num_examples, min_ops=task.min_ops, max_ops=task.max_ops,
                                   max_operand=task.max_operand, seed=seed)
    if task.name == "gsm8k":
        return load_gsm8k(task.path or gsm8k_sample_path(), limit=task.num_examples)
    assert task.path is not None  # TaskConfig requires it for a dataset
    return load_dataset_examples(task.path, question_field=task.question_field, answer_field=task.answer_field,
                                 rationale_field=task.rationale_field, answer_format=task.answer_format,
                                 limit=task.num_examples)


# ---- chat templates -----------------------------------------------------------------------------------------------


def chat_prompt(question: str, tokenizer: Any, mode: str = "auto", system_prompt: str = "") -> str:
    """The text a model is prompted with for ``question``: ``format_prompt(question)`` as the user's turn of the
    tokenizer's chat template with the assistant's turn opened (``apply_chat_template(…, add_generation_prompt=True,
    tokenize=False)``), so an instruct model sees the format it was trained on.

    ``mode``: ``auto`` uses the template when the tokenizer has one, ``on`` requires one, ``off`` never uses it
    (the plain prompt, as for base models and the embedded tiny model). The text already holds any BOS the template
    writes: encode it with ``add_special_tokens=False``, as the samplers and the cold start do.
    """
    plain = format_prompt(question)
    template = getattr(tokenizer, "chat_template", None)
    if mode == "off" or (mode == "auto" and not template):
        return plain
    if not template:
        raise DatasetError("task.chat_template is 'on' but the tokenizer has no chat template; set it to 'auto' or "
                           "'off', or use a model folder whose tokenizer_config.json has a chat_template")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": plain})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def with_chat_prompts(examples: list[Example], tokenizer: Any, task: TaskConfig) -> list[Example]:
    """``examples`` with ``prompt`` set to their chat-templated text (``chat_prompt`` with the task's
    ``chat_template`` and ``system_prompt``); unchanged when no template applies."""
    if task.chat_template == "off" or (task.chat_template == "auto" and not getattr(tokenizer, "chat_template", None)):
        return examples
    return [replace(ex, prompt=chat_prompt(ex.question, tokenizer, task.chat_template, task.system_prompt))
            for ex in examples]
