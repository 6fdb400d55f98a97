"""The one yardstick for R1-style text: prompt template, answer format, answer extraction, number matching and
reflective words. Rewards (training), skill probes (evaluation) and instruments (measurement) all grade with it, so a
probe's "correct" is the reward's "correct".

The rules (each case is a test in ``tests/test_grading.py``):

- **Format**: exactly ``<think>…</think><answer>…</answer>``, whitespace allowed around and between the blocks, no
  tag inside a block, a non-blank answer. A prompt that ends with an open ``<think>`` counts as the completion's start.
- **The answer** is the content of the one ``<answer>…</answer>`` block, stripped. Two answer blocks or a nested one
  give no answer: rewarding either would pay a model for listing guesses.
- **Numbers** compare as exact values (fractions, not floats): thousands separators (``1,234``), currency signs
  (``$18``, ``-$5``), the unicode minus (``−5``), fractions (``1/2`` = 0.5), scientific notation (``1e3`` = 1000),
  trailing zeros (``3.0`` = 3). A trailing unit or word (``60 km/h``, ``18 dollars``, ``7 apples.``, ``12%``) is
  dropped when the gold answer has none; when the gold names a unit, a predicted unit must be the same one.
- **Other answers** compare as text, ignoring case, repeated whitespace and a final full stop.
- **Critique** (only where a critique reward is used: ``critique=True``): one ``<critique>…</critique>`` block may
  follow the answer block, with only whitespace after it; the format rules apply to what comes before it. The
  self-assessment inside is ``correct`` / ``right`` / ``yes`` / ``true`` (1), ``incorrect`` / ``wrong`` /
  ``not correct`` / ``no`` / ``false`` (0), or a confidence that the answer is correct: a number in [0, 1] or a
  percentage (``0.8``, ``80%``, ``confidence: 0.8``; other numbers, such as a restated answer, are ignored);
  anything else, two confidences, or a word and a confidence that disagree, is unreadable.
- **Reflective words** are the self-checking vocabulary of R1-style reasoning and their inflections (wait, hmm,
  check/checked/checking, recheck, double-check, verify/verified, mistake(s), reconsider, actually); other words
  that share a stem (``waiting``, ``checkpoint``, ``await``) are not.

Written by hand because these rules are this project's definition of a correct answer (R1's rule-based accuracy
reward); no library we depend on grades ``<answer>`` blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

#: Bumped whenever a rule above changes what counts as correct: results graded under another version are refused.
GRADING_VERSION = 2

#: The prompt of every task and the default of every probe suite: the question and a one-line request for the format.
PROMPT_TEMPLATE = "{question}\nReply <think>..</think><answer>..</answer>\n"
#: Teacher-forcing lead-in before a gold answer: an empty reasoning block and the opening answer tag.
ANSWER_LEAD = "<think></think><answer>"


def format_prompt(question: str) -> str:
    """The prompt for ``question``: the question and a one-line request for think/answer blocks."""
    return PROMPT_TEMPLATE.replace("{question}", question)


def format_completion(reasoning: str, answer: str) -> str:
    """A well-formed completion, e.g. ``<think>3+4=7</think><answer>7</answer>``."""
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


# ---- format ---------------------------------------------------------------------------------------------------------

_TAG = re.compile(r"</?(?:think|answer)>")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_STRICT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)  # an unclosed block runs to the end


def _with_open_think(completion: str, prompt: str) -> str:
    return ("<think>" if prompt.rstrip().endswith("<think>") else "") + completion


def format_ok(completion: str, prompt: str = "", *, critique: bool = False) -> bool:
    """True for exactly ``<think>…</think><answer>…</answer>`` (see the module docstring); with ``critique``, an
    optional trailing ``<critique>…</critique>`` block is allowed too."""
    if critique:
        completion = split_critique(completion)[0]
    match = _STRICT.fullmatch(_with_open_think(completion, prompt))
    if match is None:
        return False
    think, answer = match.group(1), match.group(2)
    return not _TAG.search(think) and not _TAG.search(answer) and bool(answer.strip())


def format_credit(completion: str, prompt: str = "", *, critique: bool = False) -> float:
    """Partial credit for the format in quarters: one well-formed think block, one well-formed answer block, think
    before answer, nothing but whitespace outside the blocks (with ``critique``: outside them and the critique)."""
    if critique:
        completion = split_critique(completion)[0]
    text = _with_open_think(completion, prompt)
    score, spans = 0.0, {}
    for tag in ("think", "answer"):
        opens, closes = text.count(f"<{tag}>"), text.count(f"</{tag}>")
        start, end = text.find(f"<{tag}>"), text.find(f"</{tag}>")
        if opens == 1 and closes == 1 and start < end:
            score += 0.25
            spans[tag] = (start, end + len(f"</{tag}>"))
    if len(spans) == 2:
        (t0, t1), (a0, a1) = spans["think"], spans["answer"]
        if t1 <= a0:
            score += 0.25
            score += 0.25 if not (text[:t0] + text[t1:a0] + text[a1:]).strip() else 0.0
    return score


def extract_answer(completion: str) -> str | None:
    """The stripped text of the one ``<answer>…</answer>`` block; None when there is none, or more than one."""
    if completion.count("<answer>") != 1 or completion.count("</answer>") != 1:
        return None
    match = _ANSWER.search(completion)
    return match.group(1).strip() if match else None


def reasoning_text(completion: str) -> str:
    """The reasoning part of a completion: the ``<think>`` block's content, else everything before ``<answer>``."""
    match = _THINK.search(completion)
    return match.group(1) if match else completion.split("<answer>", 1)[0]


# ---- critique -------------------------------------------------------------------------------------------------------

_CRITIQUE = re.compile(r"<critique>((?:(?!</?critique>).)*)</critique>\s*\Z", re.DOTALL)
_SAYS_NO = re.compile(r"\b(?:incorrect|wrong|not\s+correct|not\s+right|no|false)\b", re.IGNORECASE)
_SAYS_YES = re.compile(r"\b(?:correct|right|yes|true)\b", re.IGNORECASE)
_CONFIDENCE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)\s*(%?)(?![\w.])")


def split_critique(completion: str) -> tuple[str, str | None]:
    """(the completion before its trailing critique block, the block's text); (completion, None) without one.

    The block counts only when it comes after the answer block and nothing but whitespace follows it; a second
    critique block, or one before the answer, leaves the completion whole (no critique).
    """
    match = _CRITIQUE.search(completion)
    if match is None or completion.count("<critique>") != 1 or completion.count("</critique>") != 1:
        return completion, None
    before = completion[: match.start()]
    if before.rfind("</answer>") < 0:
        return completion, None
    return before, match.group(1)


def self_assessment(critique: str | None) -> float | None:
    """The probability that its answer is correct a critique states (module docstring); None when unreadable."""
    if critique is None:
        return None
    # A confidence is a number in [0, 1] or a percentage up to 100 %; other numbers restate a quantity ("the answer
    # 42 is correct") and are ignored.
    values = [v for v in (float(x) / (100 if pct else 1) for x, pct in _CONFIDENCE.findall(critique)) if 0 <= v <= 1]
    says_no = bool(_SAYS_NO.search(critique))
    says_yes = bool(_SAYS_YES.search(_SAYS_NO.sub(" ", critique)))  # "not correct" is not also a "correct"
    if says_no and says_yes:
        return None
    word = 0.0 if says_no else 1.0 if says_yes else None
    if not values:
        return word
    if len(values) > 1:
        return None  # several confidences: none is the one meant
    agrees = word is None or (values[0] >= 0.5 if word == 1.0 else values[0] <= 0.5)
    return values[0] if agrees else None


# ---- numbers --------------------------------------------------------------------------------------------------------

# Digits with thousands commas (groups of exactly three) or plain digits, an optional decimal part, an optional
# exponent directly after ("1e3", "2.5E-2"; "5 eggs" is a number and a word).
_NUM = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(
    rf"""\s*(?P<sign>[-+\u2212]?)\s*[$€£]?\s*(?P<sign2>[-+\u2212]?)\s*
         (?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?
         \s*(?P<unit>[^\d\s][^\d]*)?\s*""",
    re.VERBOSE,
)
_UNIT = re.compile(r"[A-Za-z%°$€£][A-Za-z%°$€£\s./]*|\.")  # units / words / "km/h" / a full stop, no digits


@dataclass(frozen=True)
class Quantity:
    """A number as written, with the unit or word after it ("" when none; a lone full stop is none)."""

    value: Fraction
    unit: str


def _exact(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))  # Fraction parses "1e3" and "2.5E-2" exactly


def parse_quantity(text: str) -> Quantity | None:
    """The exact value and unit of a number written as a person would ("$1,234.50", "−3", "1/2", "7 apples")."""
    match = _NUMBER.fullmatch(text)
    if match is None or (match.group("sign") and match.group("sign2")):
        return None
    unit = match.group("unit")
    if unit is not None and not _UNIT.fullmatch(unit):
        return None
    value = _exact(match.group("num"))
    if match.group("den") is not None:
        den = _exact(match.group("den"))
        if den == 0:
            return None
        value /= den
    sign = match.group("sign") or match.group("sign2")
    return Quantity(-value if sign in ("-", "\u2212") else value, _normal_text(unit or ""))


def parse_number(text: str) -> Fraction | None:
    """The exact value of a number written as a person would, unit dropped; None when ``text`` is not one."""
    quantity = parse_quantity(text)
    return None if quantity is None else quantity.value


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".").strip()


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether ``predicted`` (an extracted answer; None never matches) is ``gold`` under the rules above."""
    if predicted is None:
        return False
    want = parse_quantity(gold)
    if want is None:
        return _normal_text(predicted) == _normal_text(gold)
    got = parse_quantity(predicted)
    if got is None or got.value != want.value:
        return False
    return not want.unit or not got.unit or got.unit == want.unit


def grade(completion: str, gold: str, check: str = "answer", prompt: str = "") -> bool:
    """Grade a completion: ``check="answer"``: its one answer matches ``gold``; ``"format"``: the layout only."""
    if check == "format":
        return format_ok(completion, prompt)
    return answers_match(extract_answer(completion), gold)


# ---- reflective words -----------------------------------------------------------------------------------------------

REFLECTIVE_WORDS = ("wait", "hmm", "check", "recheck", "double-check", "verify", "mistake", "reconsider", "actually")
_REFLECTIVE = re.compile(
    r"(?<![\w-])(?:wait|hm+|(?:re-?|double-)?check(?:s|ed|ing)?|verif(?:y|ies|ied|ying|ication)|mistakes?"
    r"|reconsider(?:s|ed|ing)?|actually)(?![\w-])",
    re.IGNORECASE,
)


def count_reflective(text: str) -> int:
    """Number of reflective words in ``text`` (``REFLECTIVE_WORDS`` and their inflections, any case)."""
    return len(_REFLECTIVE.findall(text))
