"""Regenerate the shipped probe suites in ``discrepancy/probes/suites/`` (deterministic: same files every run).

    python probes/make_suites.py [--gsm8k PATH/TO/gsm8k/test.jsonl] [--out FOLDER]

Arithmetic questions follow the trainer's arithmetic task (left-to-right chains of + and − on operands 0–9 whose
running value never goes below 0), so probe and training prompts look alike. Wrong answers come from
`discrepancy.distractors`, the library the ``contrastive`` training reward uses too: numeric (the gold answer nudged,
digits slipped, an operation flipped), unit (a scale or unit-conversion slip: ×/÷ 10, 60, 100 or 1000) and semantic
(a number of the question or an intermediate quantity of the worked solution: the answer to a different question
about the same story). The GSM-MC suite is a small sample of short GSM8K test problems (MIT licence, copied next to
the suite) with one distractor of each kind.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import unicodedata
from pathlib import Path

from discrepancy.distractors import make_distractors, number_text, plain_number

OUT = Path(__file__).resolve().parents[1] / "discrepancy" / "probes" / "suites"
DEFAULT_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"  # shared/ beside the checkout


def _write(name: str, header: dict, items: list[dict]) -> None:
    lines = [json.dumps({"suite": name, **header})] + [json.dumps(it) for it in items]
    (OUT / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wrong(question: str, gold: str, solution: str = "", *, seed: int, kinds: tuple[str, ...], per_kind: int
           ) -> list[dict]:
    """The library's distractors of one item as suite entries ``{"text", "kind"}``."""
    return [{"text": d.text, "kind": d.kind}
            for d in make_distractors(question, gold, solution, seed=seed, per_kind=per_kind, kinds=kinds)]


def _chain(rng: random.Random, n_ops: int) -> tuple[str, int]:
    value = rng.randint(0, 9)
    question = str(value)
    for _ in range(n_ops):
        if value > 0 and rng.random() < 0.5:
            operand = rng.randint(0, min(9, value))
            value, question = value - operand, f"{question}-{operand}"
        else:
            operand = rng.randint(0, 9)
            value, question = value + operand, f"{question}+{operand}"
    return question, value


def arithmetic(per_level: int = 12) -> None:
    rng = random.Random(1)
    items = []
    for n_ops in range(1, 5):
        for i in range(per_level):
            q, v = _chain(rng, n_ops)
            wrong = _wrong(q, str(v), seed=1, kinds=("numeric",), per_kind=2)
            items.append({"id": f"arith{n_ops}-{i:02d}", "skill": f"arithmetic_{n_ops}op", "question": q,
                          "answer": str(v), "distractors": wrong})
    _write("arithmetic", {"description": "chains of 1-4 additions/subtractions on 0-9, by number of operations"},
           items)


def format_compliance(n: int = 12) -> None:
    rng = random.Random(2)
    items = []
    for i in range(n):
        q, v = _chain(rng, 1 + i % 2)
        items.append({"id": f"format-{i:02d}", "skill": "format", "question": q, "answer": str(v), "check": "format"})
    _write("format", {"description": "graded on the <think>..</think><answer>..</answer> layout only"}, items)


_UNITS = [("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("h", "min", 60), ("min", "s", 60),
          ("L", "mL", 1000), ("cm", "mm", 10), ("day", "h", 24)]


def unit_conversion(per_pair: int = 3) -> None:
    rng = random.Random(3)
    items = []
    for big, small, factor in _UNITS:
        for i in range(per_pair):
            x = rng.randint(1, 9)
            if i % 2 == 0:  # big -> small: multiply
                q, gold = f"Convert {x} {big} to {small}.", x * factor
            else:  # small -> big: divide, exact by construction
                q, gold = f"Convert {x * factor} {small} to {big}.", x
            wrong = _wrong(q, str(gold), seed=3, kinds=("unit",), per_kind=2)
            wrong += _wrong(q, str(gold), seed=3, kinds=("numeric",), per_kind=1)
            items.append({"id": f"unit-{big}-{small}-{i}", "skill": "unit_conversion", "question": q,
                          "answer": str(gold), "distractors": wrong})
    _write("units", {"description": "metric and time unit conversions with integer answers"}, items)


def calibration(n: int = 24) -> None:
    """Multiple choice by log-prob over 4 same-length candidates: confidence vs accuracy gives ECE and Brier."""
    rng = random.Random(4)
    items = []
    for i in range(n):
        q, v = _chain(rng, 1 + i % 3)
        wrong: list[int] = []
        while len(wrong) < 3:
            w = rng.randint(0, 9) if v < 10 else rng.randint(10, 36)
            if w != v and w not in wrong:
                wrong.append(w)
        items.append({"id": f"calib-{i:02d}", "skill": "calibration", "question": q, "answer": str(v),
                      "distractors": [{"text": str(w), "kind": "numeric"} for w in wrong]})
    _write("calibration", {"description": "implied confidence (softmax over candidates) against accuracy"}, items)


def _ascii(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(text.split())


def gsm_mc(path: Path, n: int = 40, max_chars: int = 160) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = []
    for idx, row in enumerate(rows):
        if len(items) == n:
            break
        q = _ascii(row["question"])
        gold = plain_number(row["answer"].split("####")[-1].strip())
        if len(q) > max_chars or gold is None or gold <= 0 or "<<" not in row["answer"]:
            continue
        gold_text = number_text(gold) or ""
        wrong = _wrong(q, gold_text, row["answer"], seed=5, kinds=("numeric", "unit", "semantic"), per_kind=1)
        if {w["kind"] for w in wrong} != {"numeric", "unit", "semantic"}:
            continue
        items.append({"id": f"gsm-{idx:04d}", "skill": "gsm_mc", "question": q, "answer": gold_text,
                      "distractors": wrong})
    _write("gsm_mc", {"description": "GSM8K test problems with numeric, unit and semantic distractors (GSM-MC idea)",
                      "source": "GSM8K test split (Cobbe et al. 2021), short problems only",
                      "license": "MIT, Copyright (c) 2021 OpenAI; see LICENSE-gsm8k.txt"}, items)
    shutil.copyfile(path.parent / "LICENSE", OUT / "LICENSE-gsm8k.txt")


def main() -> None:
    global OUT  # noqa: PLW0603 - the writers above all write to the one output folder
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K, help="GSM8K test.jsonl (its LICENSE alongside)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write the suites to (default: the shipped)")
    args = parser.parse_args()
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    arithmetic()
    format_compliance()
    unit_conversion()
    calibration()
    gsm_mc(args.gsm8k)


if __name__ == "__main__":
    main()
