"""Contrastive rewards against distractors (docs/rewards.md, "Contrastive"): the answer must be the gold one and must
not be one of the wrong answers that look right (`discrepancy.distractors`), plus a multiple-choice prompt format.

``contrastive``: 1.0 for the gold answer, −1.0 when the answer is one of the item's distractors (every candidate of
`distractors.candidates`: numeric, unit and semantic), 0.0 for any other answer or none. The distractors are made from
the prompt's question and the gold answer (a reward does not see the worked solution, so a GSM8K item's intermediate
results are not among them; a chain's running values are). ``multiple_choice``: 1.0 when the letter in the answer
block names the right option of a prompt made by :func:`multiple_choice_prompt`, else 0.0.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

from discrepancy.distractors import Distractor, candidates
from discrepancy.grading import PROMPT_TEMPLATE, answers_match, extract_answer, parse_number

LETTERS = "ABCDEFGH"
_REQUEST = PROMPT_TEMPLATE.split("{question}", 1)[1]  # the format request the prompt template appends
_OPTION = re.compile(r"^([A-H])\) (.+)$", re.MULTILINE)
_LETTER = re.compile(r"\(?([A-Ha-h])\)?[.):]?(?:\s.*)?", re.DOTALL)


def question_of(prompt: str) -> str:
    """The question inside a prompt: the text before the template's format request (the whole prompt without it)."""
    cut = prompt.rfind(_REQUEST)
    return prompt[:cut] if cut >= 0 else prompt


@lru_cache(maxsize=65536)
def _distractor_values(question: str, gold: str) -> frozenset[Fraction]:
    """The values of an item's distractors (cached: a prompt is scored G times a step and again in later steps)."""
    return frozenset(parse_number(d.text) for d in candidates(question, gold))


def contrastive(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """1.0 correct, −1.0 one of the item's distractors, 0.0 otherwise (module docstring)."""
    out = []
    for prompt, completion, gold in zip(prompts, completions, answers, strict=True):
        answer = extract_answer(completion)
        if answers_match(answer, gold):
            out.append(1.0)
            continue
        # A distractor is a plain number, so `answers_match(answer, distractor)` is "the answer's value is its value"
        # (any unit on the answer ignored): one parse of the answer and a set lookup instead of a parse per distractor.
        value = None if answer is None else parse_number(answer)
        out.append(-1.0 if value is not None and value in _distractor_values(question_of(prompt), gold) else 0.0)
    return out


def multiple_choice_prompt(question: str, gold: str, distractors: Sequence[Distractor | str], *,
                           seed: int = 0) -> tuple[str, str]:
    """(the question followed by lettered options ``A) …`` one per line, the correct letter).

    The options are the gold answer and the distractors (at most 7), in an order drawn from ``(seed, question)``;
    pass the text through ``grading.format_prompt`` (or a task's prompt) as with any question.
    """
    options = [gold] + [d.text if isinstance(d, Distractor) else str(d) for d in distractors][: len(LETTERS) - 1]
    order = list(range(len(options)))
    random.Random(f"{seed}|{question}").shuffle(order)  # str seed: the same order in every process
    lines = [f"{LETTERS[i]}) {options[j]}" for i, j in enumerate(order)]
    text = f"{question}\n" + "\n".join(lines) + "\nAnswer with the letter of the correct option."
    return text, LETTERS[order.index(0)]


def chosen_letter(answer: str | None) -> str | None:
    """The option letter an answer names (``B``, ``(b)``, ``B)``, ``B. 12``); None when it names none."""
    match = None if answer is None else _LETTER.fullmatch(answer.strip())
    return match.group(1).upper() if match else None


def multiple_choice(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """1.0 when the answer's letter names the right option: the gold letter, or the option whose text is the gold."""
    out = []
    for prompt, completion, gold in zip(prompts, completions, answers, strict=True):
        letter, options = chosen_letter(extract_answer(completion)), dict(_OPTION.findall(prompt))
        if letter is None:
            out.append(0.0)
        elif chosen_letter(gold) is not None and len(gold.strip()) <= 3:  # the gold is a letter itself
            out.append(float(letter == chosen_letter(gold)))
        else:
            out.append(float(letter in options and answers_match(options[letter], gold)))
    return out
