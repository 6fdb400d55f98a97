"""Rule-based rewards on hand cases, the registry and import paths, and weighted scoring."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from discrepancy.errors import DiscrepancyError
from discrepancy.trainers import rewards as R
from discrepancy.trainers.rewards import (
    RewardFunctionError,
    RewardNotFound,
    RewardOutputError,
    RewardSpec,
    correctness,
    format_reward,
    format_soft,
    make_length_reward,
    check_rewards,
    resolve_reward,
    score_completions,
)
from discrepancy.trainers.tasks import arithmetic_examples


def _one(fn, completion: str, gold: str = "7") -> float:
    return fn(["p"], [completion], [gold])[0]


GOOD = "<think>3+4=7</think><answer>7</answer>"


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("7", "7", 1.0),
        ("8", "7", 0.0),
        ("1,234", "1234", 1.0),  # thousands separator
        ("1234", "1,234", 1.0),  # gold with commas (GSM8K writes some that way)
        ("12,34", "1234", 0.0),  # not a thousands grouping
        ("$18", "18", 1.0),
        ("18 dollars", "18", 1.0),
        ("7 apples.", "7", 1.0),
        ("3.0", "3", 1.0),
        ("3.50", "3.5", 1.0),
        ("-5", "-5", 1.0),
        ("\u22125", "-5", 1.0),  # unicode minus
        ("5", "-5", 0.0),
        ("-$5", "-5", 1.0),
        ("1/2", "0.5", 1.0),
        ("x = 7", "7", 0.0),  # not just a number
        ("7 or 8", "7", 0.0),  # two numbers
        ("", "7", 0.0),  # empty answer
        ("Paris", "paris", 1.0),  # non-numeric gold: normalised text
    ],
)
def test_correctness(answer: str, gold: str, expected: float) -> None:
    assert _one(correctness, f"<think>t</think><answer>{answer}</answer>", gold) == expected


def test_correctness_needs_a_single_answer_block() -> None:
    assert _one(correctness, "7") == 0.0
    assert _one(correctness, "<answer>7</answer><answer>8</answer>") == 0.0  # no reward for listing guesses
    assert _one(correctness, "sloppy text <answer>7</answer>") == 1.0  # correctness does not judge the format


@pytest.mark.parametrize(
    ("completion", "strict", "soft"),
    [
        (GOOD, 1.0, 1.0),
        ("  \n" + GOOD + "\n", 1.0, 1.0),  # surrounding whitespace
        ("<think>a</think>\n<answer>7</answer>", 1.0, 1.0),  # whitespace between the blocks
        ("<think></think><answer>7</answer>", 1.0, 1.0),  # empty thoughts are allowed
        ("<think>a</think><answer> </answer>", 0.0, 1.0),  # blank answer
        ("<answer>7</answer><think>a</think>", 0.0, 0.5),  # wrong order
        ("Sure! " + GOOD, 0.0, 0.75),  # text before
        (GOOD + " Done.", 0.0, 0.75),  # text after
        ("<think>a</think>b<answer>7</answer>", 0.0, 0.75),  # text between
        ("<think>a<think>b</think><answer>7</answer>", 0.0, 0.25),  # duplicated open tag
        ("<think>a<answer>7</answer></think>", 0.0, 0.5),  # answer nested in think: both blocks well formed only
        ("<think>a</think><answer>7</answer></answer>", 0.0, 0.25),  # extra close tag
        ("<think>a<answer>7</answer>", 0.0, 0.25),  # unclosed think
        ("<think>a</think><answer>7", 0.0, 0.25),  # unclosed answer
        ("7", 0.0, 0.0),
    ],
)
def test_format_and_soft_format(completion: str, strict: float, soft: float) -> None:
    assert _one(format_reward, completion) == strict
    assert _one(format_soft, completion) == soft


def test_length_penalty() -> None:
    fn = make_length_reward(10)
    assert fn(["p"] * 4, ["x" * 5, "x" * 10, "x" * 15, "x" * 40], [""] * 4) == [0.0, 0.0, -0.5, -1.0]
    assert _one(R.length, "x" * (R.LENGTH_TARGET_CHARS * 2)) == -1.0
    with pytest.raises(DiscrepancyError):
        make_length_reward(0)


def test_registry_and_import_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_reward("format") is format_reward and R.format is format_reward
    assert resolve_reward("correctness") is correctness
    module = types.ModuleType("user_rewards_mod")
    module.shout = lambda prompts, completions, answers: [float(c.isupper()) for c in completions]
    module.not_callable = 3
    monkeypatch.setitem(sys.modules, "user_rewards_mod", module)
    assert resolve_reward("user_rewards_mod:shout")([""], ["HI"], [""]) == [1.0]
    for name, message in [("corectness", "unknown reward"), ("no_such_pkg_xyz:f", "cannot import"),
                          ("user_rewards_mod:missing", "no attribute"), ("user_rewards_mod:not_callable", "not a")]:
        with pytest.raises(RewardNotFound, match=message):
            resolve_reward(name)
    assert issubclass(RewardNotFound, DiscrepancyError)


def test_score_completions_weights_components_and_nan() -> None:
    completions = [GOOD, "<think>a</think><answer>8</answer>", "7", "garbage"]
    partial = RewardSpec("partial", lambda p, c, a: [None, 1.0, math.nan, None], 10.0)
    specs = [RewardSpec.from_name("correctness", 2.0), RewardSpec.from_name("format", 0.5), partial]
    total, comps = score_completions(specs, ["p"] * 4, completions, ["7"] * 4)
    np.testing.assert_array_equal(comps["correctness"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(comps["format"], [1.0, 1.0, 0.0, 0.0])
    assert np.isnan(comps["partial"][[0, 2, 3]]).all() and comps["partial"][1] == 1.0
    np.testing.assert_allclose(total, [2.5, 10.5, 0.0, 0.0])  # None/NaN components are skipped in the sum
    only_nan = [RewardSpec("none", lambda p, c, a: [None, 1.0], 1.0)]
    total, _ = score_completions(only_nan, ["p"] * 2, ["a", "b"], ["", ""])
    assert math.isnan(total[0]) and total[1] == 1.0  # unscorable by every component: NaN total


def test_score_completions_rejects_wrong_length() -> None:
    bad = RewardSpec("bad", lambda p, c, a: [1.0], 1.0)
    with pytest.raises(RewardOutputError, match="'bad' returned 1 values for 2"):
        score_completions([bad], ["p", "q"], ["a", "b"], ["", ""])


def _raises(prompts, completions, answers):
    raise KeyError("gold")


def test_a_raising_reward_is_one_line_naming_it() -> None:
    specs = [RewardSpec.from_name("format"), RewardSpec("mine", _raises, 1.0)]
    with pytest.raises(RewardFunctionError, match=r"reward 'mine' raised KeyError: 'gold'") as info:
        score_completions(specs, ["p"], [GOOD], ["7"])
    assert "\n" not in str(info.value) and isinstance(info.value, DiscrepancyError)
    assert isinstance(info.value.__cause__, KeyError)  # kept for library users who debug their reward
    wrong_signature = RewardSpec.from_name("builtins:len")
    with pytest.raises(RewardFunctionError, match=r"'builtins:len' raised TypeError: len\(\) takes"):
        score_completions([wrong_signature], ["p"], [GOOD], ["7"])


def test_a_reward_s_own_discrepancy_error_passes_unchanged() -> None:
    def picky(prompts, completions, answers):
        raise RewardOutputError("picky says no")

    with pytest.raises(RewardOutputError, match="^picky says no$"):
        score_completions([RewardSpec("picky", picky)], ["p"], [GOOD], ["7"])


@pytest.mark.parametrize(("returned", "message"), [
    (3.0, "'odd' returned a float for 2 completions"),
    (None, "'odd' returned None for 2 completions"),
    (["x", 1.0], "'odd' returned a value that is not a number"),
    ([[1.0], 1.0], "'odd' returned a value that is not a number"),
])
def test_malformed_reward_output_is_one_line(returned: object, message: str) -> None:
    odd = RewardSpec("odd", lambda p, c, a: returned)
    with pytest.raises(RewardOutputError, match=message) as info:
        score_completions([odd], ["p", "q"], ["a", "b"], ["", ""])
    assert "\n" not in str(info.value)


def test_check_rewards_calls_each_reward_on_a_small_sample() -> None:
    examples = arithmetic_examples(5, seed=0)
    seen: list[tuple[int, str]] = []

    def spy(prompts, completions, answers):
        seen.append((len(completions), completions[-1]))
        return [0.0] * len(completions)

    check_rewards([RewardSpec.from_name("correctness"), RewardSpec("spy", spy)], examples)
    assert seen == [(3, "")]  # two gold solutions and an empty completion, scored once
    with pytest.raises(RewardFunctionError, match="'builtins:len'"):
        check_rewards([RewardSpec.from_name("format"), RewardSpec.from_name("builtins:len")], examples)
    empty_fails = RewardSpec("first_char", lambda p, c, a: [float(x[0] == "<") for x in c])
    with pytest.raises(RewardFunctionError, match="'first_char' raised IndexError"):
        check_rewards([empty_fails], examples)  # a model may end at once: "" must be scorable
    check_rewards([RewardSpec("spy", spy)], [])  # nothing to try it on: no call, no error
    assert len(seen) == 1


# ---- rewards that see the state -----------------------------------------------------------------------------------


def _context_reward(prompts, completions, answers, context=None):
    """A user's reward that pays late steps and unseen prompts: 1 + step/total − times_solved."""
    return [1.0 + context.progress - context.history.get(pid, (0, 0))[1] for pid in context.prompt_ids]


def test_a_context_taking_reward_gets_the_context_by_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("user_ctx_rewards")
    module.staged = _context_reward
    monkeypatch.setitem(sys.modules, "user_ctx_rewards", module)
    spec = RewardSpec.from_name("user_ctx_rewards:staged", 2.0)
    plain = RewardSpec.from_name("correctness")
    assert spec.takes_context and not plain.takes_context and not RewardSpec.from_name("builtins:len").takes_context
    ctx = R.RewardContext(step=5, total_steps=10, phase="reasoning", phase_index=1, prompt_ids=("a", "b"),
                          history={"a": (4, 3)})
    total, comps = score_completions([spec, plain], ["p", "p"], [GOOD, "x"], ["7", "7"], context=ctx)
    np.testing.assert_allclose(comps["user_ctx_rewards:staged"], [1.5 - 3, 1.5])
    np.testing.assert_allclose(total, [2 * (1.5 - 3) + 1.0, 2 * 1.5 + 0.0])


def test_step_weights_override_the_specs_weights() -> None:
    specs = [RewardSpec.from_name("correctness", 1.0), RewardSpec.from_name("format", 0.25)]
    completions = [GOOD, "<think>a</think><answer>8</answer>"]
    total, _ = score_completions(specs, ["p"] * 2, completions, ["7"] * 2, weights={"format": 3.0})
    np.testing.assert_allclose(total, [4.0, 3.0])  # correctness keeps 1.0, format weighs 3.0 this step
    with pytest.raises(DiscrepancyError, match="not rewards of this run"):
        score_completions(specs, ["p"], [GOOD], ["7"], weights={"lenght": 1.0})


def test_check_rewards_passes_a_step_zero_context() -> None:
    examples = arithmetic_examples(3, seed=1)
    seen: list[R.RewardContext] = []

    def spy(prompts, completions, answers, *, context):
        seen.append(context)
        return [0.0] * len(completions)

    config = types.SimpleNamespace(rewards=types.SimpleNamespace(names=["spy"]))
    check_rewards([RewardSpec("spy", spy)], examples, config=config, total_steps=40)
    (ctx,) = seen
    assert (ctx.step, ctx.total_steps, ctx.phase, dict(ctx.history)) == (0, 40, "", {})
    assert ctx.prompt_ids == (examples[0].prompt_id, examples[1].prompt_id, examples[0].prompt_id)
    assert ctx.config is config and ctx.reward_names() == ("spy",)

    def broken(prompts, completions, answers, context):
        return [context.step / 0 for _ in completions]

    with pytest.raises(RewardFunctionError, match="'broken' raised ZeroDivisionError"):
        check_rewards([RewardSpec("broken", broken)], examples)


def test_length_cosine_ramps_the_penalty_over_the_run() -> None:
    long = "x" * (R.LENGTH_TARGET_CHARS * 2)  # the plain penalty is −1
    values = [R.length_cosine(["p"], [long], [""], context=R.RewardContext(step=s, total_steps=8))[0]
              for s in (0, 2, 4, 8)]
    np.testing.assert_allclose(values, [0.0, -(1 - math.cos(math.pi / 4)) / 2, -0.5, -1.0], atol=1e-12)
    assert R.length_cosine(["p"], [long], [""]) == [-1.0]  # no context: the full penalty
    assert R.length_cosine(["p"], ["short"], [""], context=R.RewardContext(step=8, total_steps=8)) == [0.0]
    assert RewardSpec.from_name("length_cosine").takes_context and resolve_reward("length") is R.length
