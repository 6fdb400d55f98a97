"""Wrong answers that look right: numeric, unit and semantic distractors for arithmetic and word-problem items.

One library for the probe suites (``probes/make_suites.py``: multiple choice by log-prob) and for training (the
``contrastive`` reward: an answer that is one of its item's distractors is penalised). Three kinds, after the
GSM-MC construction of distractors (Zhang et al. 2024, "Multiple-Choice Questions are Efficient and Robust LLM
Evaluators"; docs/rewards.md, "Distractors"):

- **numeric** (a slip in the arithmetic): off by one (±1), off by two (±2), off by ten (±10), two adjacent digits
  swapped (``540`` → ``450``), the leading digit off by one (``540`` → ``440``, ``640``), and the wrong operation:
  the last step done with another of + − × ÷ (for ``7+5-3`` each operator flipped in turn; for a worked solution
  its last ``a op b = c`` step).
- **unit** (a slip in scale): the answer ×10, ×100 or ÷10 (a wrong power of ten, as a centimetre/millimetre slip
  makes), and ×/÷ 60, 24, 7, 12, 100 or 1000 when the question names a unit with that factor (minutes and hours,
  days, weeks, dozens, cents or percent, kilo-units).
- **semantic** (the answer to another question about the same item): a number from the question, or an
  intermediate quantity: a running value of an arithmetic chain, or a result of the worked solution (``= 9`` or a
  GSM8K calculator annotation ``<<16-3-4=9>>``).

Every distractor differs in value from the gold answer, and for a non-negative gold answer none is negative. Values
are written as plain numbers (integers, or finite decimals; others are left out), so ``grading.answers_match`` never
takes one for the gold answer (a test checks this on every GSM8K test item). A gold answer that is not a plain number
(``$1,234``, ``−5`` and ``1/2`` are; ``7 apples`` is not) has no distractors. ``candidates`` lists every distractor in a fixed order;
``make_distractors`` draws a few of each kind, the same ones for the same seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from discrepancy.grading import parse_quantity

KINDS = ("numeric", "unit", "semantic")

# A number in running text: digits with thousands commas or plain, an optional decimal part, an optional sign or $.
_IN_TEXT = re.compile(r"(?<![\w.])(-?)\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
_CHAIN = re.compile(r"\d+(?:[+-]\d+)+")  # the arithmetic task's questions: "7+5-3"
_ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")  # GSM8K calculator annotations: "<<16-3-4=9>>"
_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")  # "= 9", "= $18" in a worked solution
_STEP = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([-+*/x×÷])\s*(\d[\d,]*(?:\.\d+)?)\s*=")  # "9 * 2 =": a binary step
_OPS: dict[str, Callable[[Fraction, Fraction], Fraction | None]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
}
# Unit words → the conversion factors a slip with them would apply (singular and plural match by prefix).
_UNIT_FACTORS: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...] = (
    (re.compile(r"\b(?:minute|hour|second|min|hr)s?\b", re.IGNORECASE), (60,)),
    (re.compile(r"\b(?:day|hour)s?\b", re.IGNORECASE), (24,)),
    (re.compile(r"\b(?:week|day)s?\b", re.IGNORECASE), (7,)),
    (re.compile(r"\b(?:dozen|dozens|month|months|inch|inches|foot|feet)\b", re.IGNORECASE), (12,)),
    (re.compile(r"\b(?:cents?|percent|meters?|metres?|centimeters?|cm)\b|%", re.IGNORECASE), (100,)),
    (re.compile(r"\b(?:kilo\w*|km|kg|grams?|liters?|litres?|ml|milli\w*)\b", re.IGNORECASE), (1000,)),
)


@dataclass(frozen=True)
class Distractor:
    """One wrong answer: its text, its kind (``numeric``, ``unit`` or ``semantic``) and how it was made."""

    text: str
    kind: str
    how: str


def plain_number(text: str) -> Fraction | None:
    """The exact value of a number without a unit (``42``, ``-3``, ``−3``, ``$1,234``, ``2.50``, ``1/2``), by the
    grading rules (``grading.parse_quantity``: the same yardstick that says a distractor is not the gold answer);
    None for anything else, a number with a unit word included."""
    quantity = parse_quantity(text.strip())
    return quantity.value if quantity is not None and not quantity.unit else None


def number_text(value: Fraction) -> str | None:
    """``value`` as a plain number: ``12``, ``-3``, ``2.5``; None when it has no finite decimal form."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return None
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _numbers_in(text: str) -> list[Fraction]:
    """Every plain number in running text, in order."""
    return [plain_number(m.group(0)) for m in _IN_TEXT.finditer(text)]  # type: ignore[misc]


def _chain_values(question: str) -> tuple[list[Fraction], list[str]] | None:
    """Operands and operators of an arithmetic chain ``"7+5-3"``; None for other questions."""
    if not _CHAIN.fullmatch(question.strip()):
        return None
    return [Fraction(x) for x in re.findall(r"\d+", question)], re.findall(r"[+-]", question)


def _evaluate(operands: list[Fraction], ops: list[str]) -> list[Fraction]:
    """Running values of a left-to-right chain (the last one is its value)."""
    values = [operands[0]]
    for op, x in zip(ops, operands[1:], strict=True):
        values.append(values[-1] + x if op == "+" else values[-1] - x)
    return values


def _numeric(question: str, gold: Fraction, solution: str) -> list[tuple[Fraction | None, str]]:
    """Slips in the arithmetic, the most specific first: wrong operation, digit slips, then off by 1, 2 or 10."""
    out: list[tuple[Fraction | None, str]] = []
    chain = _chain_values(question)
    if chain is not None:
        operands, ops = chain
        for i in range(len(ops)):
            flipped = ops[:i] + ["-" if ops[i] == "+" else "+"] + ops[i + 1:]
            out.append((_evaluate(operands, flipped)[-1], "wrong_operation"))
    # A word problem's last worked step done with another operation (a chain's own operators are flipped above).
    steps = [] if chain else list(_STEP.finditer(_ANNOTATION.sub(lambda m: f" {m.group(1)}={m.group(2)} ", solution)))
    if steps:
        a, op, b = (plain_number(steps[-1].group(1)), steps[-1].group(2), plain_number(steps[-1].group(3)))
        op = {"x": "*", "×": "*", "÷": "/"}.get(op, op)
        if a is not None and b is not None:
            out.extend((fn(a, b), "wrong_operation") for name, fn in _OPS.items() if name != op)
    if gold.denominator == 1 and abs(gold) >= 10:
        digits, sign = str(abs(gold.numerator)), -1 if gold < 0 else 1
        for i in range(len(digits) - 1):
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
            if swapped[0] != "0":
                out.append((sign * Fraction(int(swapped)), "digit_swap"))
        lead = int(digits[0])
        for d in (lead - 1, lead + 1):
            if 1 <= d <= 9:
                out.append((sign * Fraction(int(str(d) + digits[1:])), "digit_slip"))
    out += [(gold + d, how) for d, how in ((1, "off_by_one"), (-1, "off_by_one"), (2, "off_by_two"),
                                           (-2, "off_by_two"), (10, "off_by_ten"), (-10, "off_by_ten"))]
    return out


def _unit(question: str, gold: Fraction) -> list[tuple[Fraction | None, str]]:
    out: list[tuple[Fraction | None, str]] = [(gold * 10, "x10"), (gold * 100, "x100"), (gold / 10, "/10")]
    for pattern, factors in _UNIT_FACTORS:
        if pattern.search(question):
            for f in factors:
                out.extend([(gold * f, f"x{f}"), (gold / f, f"/{f}")])
    return out


def _semantic(question: str, solution: str) -> list[tuple[Fraction | None, str]]:
    out: list[tuple[Fraction | None, str]] = [(v, "question_number") for v in _numbers_in(question)]
    chain = _chain_values(question)
    if chain is not None:
        out.extend((v, "intermediate") for v in _evaluate(*chain)[1:-1])
    results = [m.group(2) for m in _ANNOTATION.finditer(solution)] or [m.group(1) for m in _RESULT.finditer(solution)]
    out.extend((plain_number(r), "intermediate") for r in results)
    return out


def candidates(question: str, gold: str, solution: str = "") -> list[Distractor]:
    """Every distractor of an item: numeric, then unit, then semantic ones, each in a fixed order.

    A value that more than one construction makes is listed once, under the most specific: a unit slip, else a
    number the item contains (semantic), else a slip in the arithmetic (a wrong operation before a digit slip before
    an off-by-n). ``solution`` is the worked answer when the item has one (GSM8K's, with or without calculator
    annotations; the arithmetic task's ``"3+4=7,7-2=5"``): it adds intermediate results and the last step's wrong
    operation.
    """
    value = plain_number(gold)
    if value is None:
        return []
    made = {"unit": _unit(question, value), "semantic": _semantic(question, solution),
            "numeric": _numeric(question, value, solution)}
    claimed: dict[str, list[Distractor]] = {kind: [] for kind in KINDS}
    seen = {value}
    for kind, found in made.items():  # claiming order: unit, semantic, numeric
        for v, how in found:
            text = None if v is None else number_text(v)
            if text is None or v in seen or (v < 0 <= value):
                continue
            seen.add(v)
            claimed[kind].append(Distractor(text, kind, how))
    return [d for kind in KINDS for d in claimed[kind]]


def make_distractors(question: str, gold: str, solution: str = "", *, seed: int = 0, per_kind: int = 1,
                     kinds: Sequence[str] = KINDS) -> list[Distractor]:
    """Up to ``per_kind`` distractors of each kind in ``kinds``, drawn from :func:`candidates` by a generator seeded
    with ``(seed, question, gold)``: the same item and seed give the same distractors in any process."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or per_kind < 0:
        raise ValueError(f"kinds must be among {KINDS} and per_kind ≥ 0; got {list(kinds)}, {per_kind}")
    rng = random.Random(f"{seed}|{question}|{gold}")  # str seeds hash with SHA-512: stable across processes
    pool = candidates(question, gold, solution)
    out: list[Distractor] = []
    for kind in kinds:
        mine = [d for d in pool if d.kind == kind]
        out.extend(rng.sample(mine, min(per_kind, len(mine))))
    return out
