"""The contrastive, multiple-choice and critique rewards on hand cases, the critique calibration of a batch, a judge
by import path, and the format rewards accepting a critique only where a critique reward is scored."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from discrepancy.distractors import Distractor
from discrepancy.grading import format_prompt
from discrepancy.trainers import rewards as R
from discrepancy.trainers.contrastive import chosen_letter, multiple_choice_prompt, question_of
from discrepancy.trainers.critique import CRITIQUE_SERIES, critique_calibration
from discrepancy.trainers.rewards import RewardFunctionError, RewardSpec, score_completions


def _answer(text: str, critique: str | None = None) -> str:
    tail = "" if critique is None else f"<critique>{critique}</critique>"
    return f"<think>t</think><answer>{text}</answer>{tail}"


def test_contrastive_values_on_hand_cases() -> None:
    # 7+5-3 = 9. Distractors: 10/8 (off by one), 12 (running value, and 7+5), 3 (a question number),
    # 90 (×10), 15 (7-5-3 is negative; 7+5+3 = 15 flips the last operator).
    prompt = format_prompt("7+5-3")
    cases = [("9", 1.0), ("9.0", 1.0), ("10", -1.0), ("8", -1.0), ("12", -1.0), ("3", -1.0), ("90", -1.0),
             ("15", -1.0), ("42", 0.0), ("nine", 0.0)]
    got = R.contrastive([prompt] * len(cases), [_answer(a) for a, _ in cases], ["9"] * len(cases))
    assert got == [v for _, v in cases]
    assert R.contrastive([prompt], ["no answer block"], ["9"]) == [0.0]
    assert question_of(prompt) == "7+5-3" and question_of("plain text") == "plain text"


def test_multiple_choice_prompt_and_reward() -> None:
    wrong = [Distractor("12", "semantic", "intermediate"), Distractor("10", "numeric", "off_by_one"), "90"]
    text, letter = multiple_choice_prompt("7+5-3", "9", wrong, seed=4)
    assert text == multiple_choice_prompt("7+5-3", "9", wrong, seed=4)[0]  # deterministic
    options = dict(line.split(") ", 1) for line in text.splitlines()[1:-1])
    assert sorted(options.values()) == ["10", "12", "9", "90"] and options[letter] == "9"
    prompt = format_prompt(text)
    other = next(k for k in options if k != letter)
    for answer, value in [(letter, 1.0), (f"({letter.lower()})", 1.0), (f"{letter}. 9", 1.0), (other, 0.0),
                          ("9", 0.0), ("E", 0.0)]:
        assert R.multiple_choice([prompt], [_answer(answer)], ["9"]) == [value], answer
        assert R.multiple_choice([prompt], [_answer(answer)], [letter]) == [value], answer  # gold given as letter
    assert chosen_letter("B)") == "B" and chosen_letter("Bob") is None and chosen_letter(None) is None


@pytest.mark.parametrize(("completion", "gold", "value"), [
    (_answer("7", "correct"), "7", 1.0),  # right, says right
    (_answer("8", "incorrect"), "7", 1.0),  # wrong, says wrong
    (_answer("8", "correct"), "7", 0.0),  # wrong, says right
    (_answer("7", "wrong"), "7", 0.0),
    (_answer("7", "0.8"), "7", 1 - 0.2 ** 2),  # a confidence: 1 − (p − v)²
    (_answer("8", "70%"), "7", 1 - 0.7 ** 2),
    (_answer("7"), "7", 0.0),  # no critique
    (_answer("7", "maybe"), "7", 0.0),  # unreadable
])
def test_critique_reward_on_hand_cases(completion: str, gold: str, value: float) -> None:
    assert R.critique(["p"], [completion], [gold]) == [pytest.approx(value)]


def test_critique_calibration_of_a_batch() -> None:
    completions = [_answer("7", "correct"), _answer("8", "correct"), _answer("8", "0.25"), _answer("7"),
                   _answer("7", "??")]
    cal = critique_calibration(["p"] * 5, completions, ["7"] * 5)
    # with a readable critique: (p, v) = (1, 1), (1, 0), (0.25, 0)
    assert cal["critique_share"] == pytest.approx(3 / 5)
    assert cal["critique_agreement"] == pytest.approx(2 / 3)
    assert cal["critique_brier"] == pytest.approx((0 + 1 + 0.0625) / 3)
    assert cal["critique_confidence"] == pytest.approx(2.25 / 3) and cal["critique_accuracy"] == pytest.approx(1 / 3)
    none = critique_calibration(["p"], [_answer("7")], ["7"])
    assert none["critique_share"] == 0.0 and math.isnan(none["critique_brier"])
    assert set(cal) == set(none) == set(CRITIQUE_SERIES)


def test_a_user_judge_by_import_path_replaces_the_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("user_judges")
    module.lenient = lambda prompts, completions, answers: [1.0] * len(completions)  # everything is right
    module.broken = lambda prompts, completions, answers: [1.0]
    monkeypatch.setitem(sys.modules, "user_judges", module)
    lenient = R.make_critique_reward("user_judges:lenient")
    assert lenient(["p"], [_answer("8", "correct")], ["7"]) == [1.0]  # the judge says right: agreement
    assert critique_calibration(["p"], [_answer("8", "correct")], ["7"], judge=lenient.judge)["critique_agreement"] == 1
    assert R.critique(["p"], [_answer("8", "correct")], ["7"]) == [0.0]  # the verifier says wrong
    module.critique = lenient  # a user's reward module binds its critique reward by the factory
    spec = RewardSpec.from_name("user_judges:critique")
    with pytest.raises(R.RewardNotFound, match="critique judge 'user_judges:missing'"):
        R.make_critique_reward("user_judges:missing")
    bad = RewardSpec("critique", R.make_critique_reward(module.broken))
    with pytest.raises(RewardFunctionError, match="'critique' raised ValueError: the critique judge returned 1"):
        score_completions([bad], ["p", "p"], [_answer("7"), _answer("8")], ["7", "7"])
    total, comps = score_completions([spec, RewardSpec.from_name("format")], ["p"], [_answer("8", "yes")], ["7"])
    assert comps["format"][0] == 1.0  # a critique reward is scored: the format accepts the block


def test_the_format_accepts_the_critique_block_only_beside_a_critique_reward() -> None:
    completions = [_answer("7", "correct"), _answer("7")]
    specs = [RewardSpec.from_name("format"), RewardSpec.from_name("format_soft")]
    _, alone = score_completions(specs, ["p"] * 2, completions, ["7"] * 2)
    np.testing.assert_array_equal(alone["format"], [0.0, 1.0])
    np.testing.assert_array_equal(alone["format_soft"], [0.75, 1.0])
    total, both = score_completions([*specs, RewardSpec.from_name("critique", 0.5)], ["p"] * 2, completions, ["7"] * 2)
    np.testing.assert_array_equal(both["format"], [1.0, 1.0])
    np.testing.assert_array_equal(both["format_soft"], [1.0, 1.0])
    np.testing.assert_allclose(total, [2.5, 2.0])  # the critique pays 1 × 0.5 for the agreeing self-assessment


def test_every_builtin_reward_has_a_range_and_scores_an_empty_completion() -> None:
    assert set(R.REWARD_RANGES) == set(R.BUILTIN_REWARDS)
    for name, (low, high) in R.REWARD_RANGES.items():
        values = RewardSpec.from_name(name).fn(["p"], [""], ["7"])
        assert low <= values[0] <= high, name


def test_contrastive_equals_its_definition_by_answers_match() -> None:
    """The set lookup gives what matching the answer against every distractor text would give (a second, slow
    implementation), on held-out items with answers drawn from the distractors, the gold, other numbers and words."""
    import random

    from discrepancy.distractors import candidates
    from discrepancy.grading import answers_match, extract_answer
    from discrepancy.trainers.tasks import arithmetic_examples

    rng = random.Random(5)
    prompts, completions, answers = [], [], []
    for ex in arithmetic_examples(200, min_ops=1, max_ops=4, seed=77):
        texts = [d.text for d in candidates(ex.question, ex.answer)]
        pick = rng.choice([*texts[:3], ex.answer, str(rng.randint(0, 40)), f"{rng.choice(texts)} apples",
                           f"${ex.answer}", "x", f"{ex.answer}/1"])
        prompts.append(format_prompt(ex.question))
        completions.append(_answer(pick))
        answers.append(ex.answer)

    def slow(prompt: str, completion: str, gold: str) -> float:
        answer = extract_answer(completion)
        if answers_match(answer, gold):
            return 1.0
        question = prompt.split("\n")[0]
        return -1.0 if any(answers_match(answer, d.text) for d in candidates(question, gold)) else 0.0

    got = R.contrastive(prompts, completions, answers)
    assert got == [slow(*row) for row in zip(prompts, completions, answers, strict=True)]
    assert {-1.0, 0.0, 1.0} <= set(got)
