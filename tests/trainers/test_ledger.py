"""The learnability ledger and dynamic sampling: pass rates equal a hand count, a tied group is never trained on,
refills are counted, and prompt sampling follows the ledger and the difficulty range."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import torch

from discrepancy.config import apply_overrides
from discrepancy.instrumentation.hooks import Instrument, StepContext
from discrepancy.runfile import open_run
from discrepancy.trainers.curriculum_config import SamplingConfig
from discrepancy.trainers.curriculum_sampling import PromptSampler
from discrepancy.trainers.ledger import Ledger
from discrepancy.trainers.run import train_run
from discrepancy.trainers.tasks import arithmetic_examples

SCORED: list[tuple[str, str, float]] = []  # (prompt, completion, reward) of every completion scored in a run
HISTORY: dict[int, dict[str, tuple[int, int]]] = {}  # step -> the ledger history the reward's context held


def odd_ties(prompts: list[str], completions: list[str], answers: list[str], context=None) -> list[float]:  # noqa: ANN001
    """A reward that ties whole groups by construction: 0 for every completion of a question starting with an odd
    number; otherwise the completion's length mod 3 (it may tie by chance too). Logs every call and its context."""
    out = [0.0 if int(re.match(r"\d+", p).group()) % 2 else float(len(c) % 3) for p, c in zip(prompts, completions)]
    SCORED.extend(zip(prompts, completions, out))
    if context is not None and context.step > 0:
        HISTORY[context.step] = dict(context.history)
    return out


class TrainedGroups(Instrument):
    """Records the rewards of every group the update sees ([groups, G])."""

    name = "trained_groups"

    def __init__(self) -> None:
        self.groups: list[np.ndarray] = []

    def series(self) -> dict[str, str]:
        return {}

    def on_before_optimizer(self, ctx: StepContext) -> dict[str, float]:
        r = ctx.batch.reward_components["test_ledger:odd_ties"]
        self.groups.append(np.asarray(r).reshape(-1, ctx.batch.group_size))
        return {}


def _hand_correct(prompt: str, completion: str) -> bool:
    """Independent of `discrepancy.grading`: the question evaluated by Python, the one <answer> block as an int."""
    question = re.search(r"(\d+(?:[+-]\d+)*)", prompt).group(1)
    found = re.findall(r"<answer>\s*(-?\d+)\s*</answer>", completion)
    return len(found) == 1 and completion.count("<answer>") == 1 and int(found[0]) == eval(question)  # noqa: S307


def test_dynamic_sampling_never_trains_on_a_tied_group_and_the_ledger_is_a_hand_count(fast_train_config,
                                                                                      tmp_path) -> None:
    """5 steps of 2 prompts × 4 with a reward that ties every group of an odd first operand: every group the update
    sees has two distinct rewards, the dropped and refilled counts are those of the scored groups, and the ledger's
    cumulative counts per prompt equal a hand count of every scored completion (dropped groups included)."""
    SCORED.clear()
    HISTORY.clear()
    cfg = apply_overrides(fast_train_config, [
        "run.steps=5", 'rewards.names=["test_ledger:odd_ties"]', "rewards.weights=[1.0]", "sampling.ledger=true",
        "sampling.dynamic=true", "sampling.dynamic_rounds=2", "task.num_examples=40", "sft.steps=2"])
    trained = TrainedGroups()
    train_run(cfg, tmp_path / "r.h5", instruments=[trained])
    with open_run(tmp_path / "r.h5") as run:
        series, sampled, solved = run.series(), run.array("ledger_sampled"), run.array("ledger_solved")
    scored = SCORED[3:]  # check_rewards scores 3 completions first (two gold, one empty): not a step's
    groups = [scored[i:i + 4] for i in range(0, len(scored), 4)]
    tied = [len({r for _, _, r in grp}) == 1 for grp in groups]
    assert sum(tied) == series["dyn_groups_dropped"].sum() > 0  # the planted ties were dropped, and counted
    assert len(groups) == (series["num_prompts"] + series["dyn_prompts_refilled"]).sum()
    assert all(len(np.unique(g)) > 1 for step in trained.groups for g in step)  # never a tied group in training
    assert sum(len(step) for step in trained.groups) == len(groups) - sum(tied)
    counts, wins = Counter(), Counter()
    for prompt, completion, _ in scored:
        pid = "arith:" + re.search(r"(\d+(?:[+-]\d+)*)", prompt).group(1)
        counts[pid] += 1
        wins[pid] += _hand_correct(prompt, completion)
    last_sampled, last_solved = sampled.iloc[-1], solved.iloc[-1]
    assert {k: int(v) for k, v in last_sampled.items() if v} == dict(counts)
    assert {k: int(last_solved[k]) for k in counts} == {k: wins[k] for k in counts}
    seen = len(counts) / len(sampled.columns)
    assert series["ledger_seen"].iloc[-1] == seen
    never = sum(wins[k] == 0 for k in counts) / len(counts)
    assert series["ledger_never_solved"].iloc[-1] == never
    # a reward's context holds the ledger as it stood before the step: the counts recorded after the step before
    assert HISTORY[1] == {} and sorted(HISTORY) == [1, 2, 3, 4, 5]
    for step in range(2, 6):
        before = sampled.loc[step - 1]
        assert HISTORY[step] == {k: (int(v), int(solved.loc[step - 1, k])) for k, v in before.items() if v}


def test_ledger_rates_learnability_and_fractions_by_hand() -> None:
    ledger = Ledger(["a", "b", "a", "c", "d"])  # "a" twice in the task: one row
    ledger.update(["a"] * 4 + ["b"] * 4 + ["c"] * 4, [1, 1, 0, 0] + [1] * 4 + [0] * 4)
    np.testing.assert_allclose(ledger.pass_rate(), [0.5, 1.0, 0.0, 0.5])  # d unseen: the prior ½
    np.testing.assert_allclose(ledger.learnability(), [0.25, 0.0, 0.0, 0.25])
    assert ledger.fractions() == {"ledger_seen": 0.75, "ledger_never_solved": 1 / 3, "ledger_always_solved": 1 / 3,
                                  "ledger_learnable": 1 / 3}
    assert ledger.history() == {"a": (4, 2), "b": (4, 4), "c": (4, 0)}
    copy = Ledger(["a", "b", "c", "d"])
    copy.load_state_dict(ledger.state_dict())
    assert copy.history() == ledger.history()


def test_learnable_sampling_prefers_prompts_near_half_and_keeps_the_difficulty_range() -> None:
    """With no uniform share, prompts whose pass rate is 0 or 1 are never drawn; the rest in proportion to p(1−p);
    a difficulty range and a ramp keep the draw inside their levels."""
    examples = arithmetic_examples(300, min_ops=1, max_ops=3, max_operand=9, seed=1)
    ledger = Ledger([ex.prompt_id for ex in examples])
    ids = ledger.ids
    half, quarter = ids[:20], ids[20:40]
    ledger.update(ids[40:] * 2, [1.0] * (2 * len(ids[40:])))  # always solved
    ledger.update([i for i in half for _ in range(4)], [1, 1, 0, 0] * len(half))  # p = ½: learnability ¼
    ledger.update([i for i in quarter for _ in range(4)], [1, 0, 0, 0] * len(quarter))  # p = ¼: 3/16
    sampler = PromptSampler(SamplingConfig(mode="learnable", uniform_mix=0.0), examples, ledger)
    rng = random.Random(0)
    drawn = Counter(ex.prompt_id for _ in range(300) for ex in sampler.draw(rng, 2))
    assert set(drawn) <= set(half) | set(quarter)  # always-solved prompts carry no learnability
    per_id = {i: sum(ex.prompt_id == i for ex in examples) for i in half + quarter}  # duplicates weigh more
    expected_half = sum(0.25 * per_id[i] for i in half) / (sum(0.25 * per_id[i] for i in half)
                                                           + sum(3 / 16 * per_id[i] for i in quarter))
    share_half = sum(drawn[i] for i in half) / sum(drawn.values())
    assert abs(share_half - expected_half) < 0.06  # 600 draws: ±2.5 standard errors
    ramp = PromptSampler(SamplingConfig(mode="ramp"), examples, None)
    assert {ex.difficulty for ex in ramp.draw(rng, 50, difficulty=(2, 3), progress=0.0)} == {2}
    assert {ex.difficulty for ex in ramp.draw(rng, 50, difficulty=(2, 3), progress=0.99)} == {2, 3}


def test_the_batch_controller_scale_sets_the_prompts_a_step_draws(fast_train_config, tmp_path, monkeypatch) -> None:
    """num_prompts = max(1, round(grpo.num_prompts × ctl_batch_scale)): 2 × 1.6 → 3 groups drawn and trained,
    micro-batches following (one group each), recorded as the num_prompts series."""
    from discrepancy.trainers.control import Controller

    real = Controller.applied
    monkeypatch.setattr(Controller, "applied", lambda self: {**real(self), "ctl_batch_scale": 1.6})
    cfg = apply_overrides(fast_train_config, ["run.steps=2", "control.batch.enabled=true", "sft.steps=1",
                                              'rewards.names=["test_ledger:odd_ties"]', "rewards.weights=[1.0]"])
    trained = TrainedGroups()
    train_run(cfg, tmp_path / "r.h5", instruments=[trained])
    with open_run(tmp_path / "r.h5") as run:
        series = run.series()
    assert series["num_prompts"].tolist() == [3.0, 3.0]
    assert [len(groups) for groups in trained.groups] == [3, 3]


def test_a_ramp_follows_the_phase_with_max_steps_else_the_run() -> None:
    from discrepancy.trainers.config import TrainConfig
    from discrepancy.trainers.curriculum_step import Orchestration
    from discrepancy.trainers.rewards import RewardSpec

    examples, rewards = arithmetic_examples(50, max_ops=3), [RewardSpec.from_name("correctness")]
    flat = Orchestration(apply_overrides(TrainConfig(), ['sampling.mode="ramp"']), examples, rewards)
    assert flat.draw(4, flat.begin(None), 0.7).progress == 0.7
    phased = Orchestration(apply_overrides(TrainConfig(), ['sampling.mode="ramp"', 'curriculum.phases=[{name="a", '
                                                           'max_steps=5}, {name="b"}]']), examples, rewards)

    class Model(torch.nn.Module):  # no LoRA tensors: the lock has nothing to do
        pass

    plan = phased.begin(Model())
    assert phased.draw(4, plan, 0.7).progress == 0.0  # the phase's own progress: its first step
