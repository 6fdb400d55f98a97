"""The format rewards' critique choice, bound once when the run's rewards are resolved: the same scores as the rules
of `discrepancy.grading` with the critique block allowed and not, whether the specs were resolved together or built
one by one, and no per-call work left (the step's context reaches a reward as the caller made it)."""

from __future__ import annotations

import numpy as np
import pytest

from discrepancy.errors import ConfigError
from discrepancy.grading import format_credit, format_ok
from discrepancy.trainers.rewards import RewardContext, RewardSpec, bind_critique, resolve_rewards, score_completions

PROMPTS = ["What is 3 + 4?"] * 8
COMPLETIONS = [
    "<think>3 + 4</think><answer>7</answer>",
    "<think>3 + 4</think><answer>7</answer><critique>correct</critique>",
    "<think>3 + 4</think><answer>8</answer><critique>confidence: 0.3</critique>\n",
    "<think>3 + 4</think><answer>7</answer><critique>correct</critique> and more",
    "<think>3 + 4</think><answer>7</answer><critique>a</critique><critique>b</critique>",
    "<think>3 + 4</think><critique>correct</critique><answer>7</answer>",
    "<answer>7</answer><critique>correct</critique>",
    "",
]
ANSWERS = ["7"] * 8


@pytest.mark.parametrize("with_critique", [True, False])
def test_resolved_rewards_score_as_the_grading_rules(with_critique: bool) -> None:
    """``format`` and ``format_soft`` beside a critique reward (or not): the values `grading.format_ok` and
    `grading.format_credit` give with ``critique`` on (off), the same whether the specs came through
    ``resolve_rewards`` or one by one, and the hand values of two cases."""
    names = ["correctness", "format", "format_soft", *(["critique"] if with_critique else [])]
    weights = [1.0, 1.0, 1.0, *([0.5] if with_critique else [])]
    _, resolved = score_completions(resolve_rewards(names, weights), PROMPTS, COMPLETIONS, ANSWERS)
    _, one_by_one = score_completions([RewardSpec.from_name(n, w) for n, w in zip(names, weights)], PROMPTS,
                                      COMPLETIONS, ANSWERS)
    strict = [1.0 if format_ok(c, p, critique=with_critique) else 0.0 for p, c in zip(PROMPTS, COMPLETIONS)]
    soft = [format_credit(c, p, critique=with_critique) for p, c in zip(PROMPTS, COMPLETIONS)]
    for got in (resolved, one_by_one):
        np.testing.assert_array_equal(got["format"], strict)
        np.testing.assert_array_equal(got["format_soft"], soft)
    assert resolved["format"][1] == (1.0 if with_critique else 0.0)  # the critique block: allowed only beside one
    assert resolved["format_soft"][1] == (1.0 if with_critique else 0.75)
    assert resolved["format"][0] == 1.0 and resolved["format"][3] == 0.0  # text after the critique: never


def test_the_choice_is_bound_once_and_nothing_is_looked_up_per_call() -> None:
    """Resolved specs carry the choice (``critique=True`` beside a critique reward, ``False`` without), take no
    context, bind again to themselves; a context-taking reward receives the caller's context object itself."""
    specs = resolve_rewards(["format", "format_soft", "critique", "length_cosine"], [1.0, 1.0, 0.5, 1.0])
    assert [s.fn.keywords for s in specs[:2]] == [{"critique": True}, {"critique": True}]
    assert not specs[0].takes_context and not specs[1].takes_context and specs[3].takes_context
    assert bind_critique(specs) == specs
    alone = resolve_rewards(["format", "format_soft"], [1.0, 1.0])
    assert [s.fn.keywords for s in alone] == [{"critique": False}, {"critique": False}]
    seen: list[RewardContext | None] = []

    def spy(prompts: list[str], completions: list[str], answers: list[str], context: RewardContext | None = None
            ) -> list[float]:
        seen.append(context)
        return [0.0] * len(completions)

    ctx = RewardContext(step=3, total_steps=10)
    score_completions([*specs, RewardSpec("spy", spy)], PROMPTS[:1], COMPLETIONS[1:2], ANSWERS[:1], context=ctx)
    assert seen == [ctx] and seen[0] is ctx  # not a copy made at each call


def test_a_names_and_weights_mismatch_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="2 names and rewards.weights 1 weights"):
        resolve_rewards(["format", "critique"], [1.0])
