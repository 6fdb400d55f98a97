"""Which prompts a step draws, and dynamic sampling: groups whose rewards all tie are dropped and refilled.

`PromptSampler.draw` picks the step's prompts from the phase's difficulty range by `SamplingConfig.mode`
(uniform, learnable p(1−p) from the ledger, or a difficulty ramp). `sample_and_score` samples G completions per
prompt, scores them and, with dynamic sampling on (DAPO, Yu et al. 2025, arXiv 2503.14476, §3.2 "dynamic
sampling"), drops every group whose rewards all tie (they carry no advantage, so no gradient) and draws fresh prompts
for the missing groups, at most ``sampling.dynamic_rounds`` times; groups still missing are not trained on. A tied
group is never in the batch the update sees.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from discrepancy.rollout.rollouts import Rollouts
from discrepancy.trainers.advantages import group_advantages, tied_groups
from discrepancy.trainers.curriculum_config import SamplingConfig
from discrepancy.trainers.ledger import Ledger
from discrepancy.trainers.tasks import Example

DYNAMIC_SERIES = {
    "dyn_groups_dropped": "dynamic sampling: groups sampled this step whose rewards all tied (dropped, not trained on)",
    "dyn_prompts_refilled": "dynamic sampling: fresh prompts drawn this step to replace dropped groups",
    "dyn_frac_zero_std_drawn": "dynamic sampling: share of all groups sampled this step whose rewards tied (before "
                               "dropping; frac_reward_zero_std is that of the trained batch, 0 by construction)",
}


class PromptSampler:
    """Draws a step's prompts (`SamplingConfig.mode`) from the examples, within a difficulty range."""

    def __init__(self, cfg: SamplingConfig, examples: Sequence[Example], ledger: Ledger | None) -> None:
        self.cfg, self.examples, self.ledger = cfg, list(examples), ledger

    def draw(self, rng: random.Random, n: int, *, difficulty: tuple[int, int] | None = None,
             progress: float | None = None, exclude: set[str] | frozenset[str] = frozenset()) -> list[Example]:
        """Up to ``n`` examples without replacement (fewer when the pool is smaller); ``progress`` in [0, 1] drives
        the ramp. Uniform sampling of the whole task is exactly ``rng.sample(examples, n)``, as without a ledger."""
        if self.cfg.mode == "uniform" and difficulty is None and not exclude:
            return rng.sample(self.examples, n)
        pool = [ex for ex in self.examples if ex.prompt_id not in exclude
                and (difficulty is None or difficulty[0] <= ex.difficulty <= difficulty[1])]
        if self.cfg.mode == "ramp" and pool:
            levels = sorted({ex.difficulty for ex in pool})
            at = min(1.0, max(0.0, progress or 0.0))
            cap = levels[min(len(levels) - 1, int(at * len(levels)))]  # equal shares of the phase per level
            pool = [ex for ex in pool if ex.difficulty <= cap]
        n = min(n, len(pool))
        if self.cfg.mode != "learnable" or self.ledger is None or n == 0:
            return rng.sample(pool, n)
        learn = self.ledger.learnability()[[self.ledger.column[ex.prompt_id] for ex in pool]]  # [pool]
        weights = np.full(len(pool), 1.0 / len(pool))
        if learn.sum() > 0:
            weights = (1 - self.cfg.uniform_mix) * learn / learn.sum() + self.cfg.uniform_mix * weights
        picks = np.random.default_rng(rng.getrandbits(63)).choice(len(pool), size=n, replace=False,
                                                                   p=weights / weights.sum())
        return [pool[i] for i in picks]


def concat_rollouts(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
    """Rollouts of several sampling calls as one batch: prompts left-padded and completions right-padded to the
    widest part (padding is masked out, and positions skip left padding, so every row's log-probs are unchanged).
    Written here because the samplers return one call's batch; nothing in transformers joins them."""
    if len(parts) == 1:
        return parts[0]
    p_width = max(r.prompt_ids.size(1) for r in parts)
    t_width = max(r.completion_ids.size(1) for r in parts)

    def left(x: torch.Tensor, fill: int) -> torch.Tensor:  # [n, P'] -> [n, P]
        return torch.nn.functional.pad(x, (p_width - x.size(1), 0), value=fill)

    def right(x: torch.Tensor, fill: int) -> torch.Tensor:  # [n, T'] -> [n, T]
        return torch.nn.functional.pad(x, (0, t_width - x.size(1)), value=fill)

    return Rollouts(torch.cat([left(r.prompt_ids, pad_id) for r in parts]),
                    torch.cat([left(r.prompt_mask, 0) for r in parts]),
                    torch.cat([right(r.completion_ids, pad_id) for r in parts]),
                    torch.cat([right(r.completion_mask, 0) for r in parts]),
                    torch.cat([r.truncated for r in parts]),
                    [c for r in parts for c in r.completions])


@dataclass
class ScoredRollouts:
    """One step's sampled completions with their rewards: what sampling and scoring hand to the update."""

    roll: Rollouts
    prompts: list[str]  # [N] each prompt repeated G times, group by group
    prompt_ids: list[str]  # [N]
    total: np.ndarray  # [N] weighted total reward
    components: dict[str, np.ndarray]  # [N] each
    rewards: torch.Tensor  # [N] total reward on the model's device
    advantages: torch.Tensor  # [N] float32
    sample_time: float
    score_time: float
    answers: list[str] = field(default_factory=list)  # [N] gold answers
    graded: list[tuple[str, str, str]] = field(default_factory=list)  # (prompt id, completion, gold) of every
    # completion scored this step, dropped groups included (what the ledger counts)
    dynamic: dict[str, float] = field(default_factory=dict)  # DYNAMIC_SERIES values (dynamic sampling only)
    drawn_total: np.ndarray | None = None  # [M] total reward of every completion scored this step (dynamic only)
    drawn_components: dict[str, np.ndarray] = field(default_factory=dict)  # [M] each, likewise


# score(prompts [N], completions [N], answers [N], prompt_ids [N]) -> (weighted total [N], components {name: [N]})
ScoreFn = Callable[[list[str], list[str], list[str], list[str]], tuple[np.ndarray, dict[str, np.ndarray]]]


@dataclass(frozen=True)
class Draw:
    """How a step draws: how many prompts, from which range, and whether tied groups are refilled."""

    num_prompts: int
    difficulty: tuple[int, int] | None = None
    progress: float | None = None
    dynamic_rounds: int = -1  # -1 = dynamic sampling off


@dataclass
class _Round:
    """One sampling call's scored groups and which of them are kept."""

    roll: Rollouts
    prompts: list[str]  # [N]
    ids: list[str]  # [N]
    answers: list[str]  # [N]
    total: np.ndarray  # [N]
    components: dict[str, np.ndarray]  # [N] each
    keep: np.ndarray  # [P] bool: groups that go into the update

    def rows(self) -> np.ndarray:
        return np.repeat(self.keep, len(self.ids) // max(1, len(self.keep)))  # [N] rows of kept groups


def _sample_round(state: Any, batch: list[Example], temperature: float, score: ScoreFn,
                  times: list[float]) -> _Round:
    """Sample G completions for each of ``batch`` and score them (every group kept; ``times`` += seconds)."""
    g = state.cfg.grpo
    prompts = [ex.prompt_text for ex in batch]
    t0 = time.perf_counter()
    roll = state.plan.sample(state.model, state.tokenizer, prompts, group_size=g.group_size,
                             max_new_tokens=g.max_completion_length, temperature=temperature, top_p=g.top_p,
                             min_new_tokens=g.min_completion_length)
    t1 = time.perf_counter()

    def rep(values: list[str]) -> list[str]:  # [P] -> [N], group by group
        return [v for v in values for _ in range(g.group_size)]

    ids, answers = rep([ex.prompt_id for ex in batch]), rep([ex.answer for ex in batch])
    total, components = score(rep(prompts), roll.completions, answers, ids)  # [N]
    with np.errstate(over="ignore"):  # the update works in float32: a total beyond its range is unusable (NaN)
        total = np.where(np.isfinite(total.astype(np.float32)), total, np.nan)  # [N]
    times[0] += t1 - t0
    times[1] += time.perf_counter() - t1
    return _Round(roll, rep(prompts), ids, answers, np.asarray(total), components, np.ones(len(batch), dtype=bool))


def sample_and_score(state: Any, temperature: float, draw: Draw, sampler: PromptSampler | None,
                     score: ScoreFn) -> ScoredRollouts:
    """Draw the step's prompts, sample G completions each from π_old (LoRA merged for speed), score them and, with
    dynamic sampling, replace tied groups (see the module docstring); then the group advantages."""
    g, dynamic = state.cfg.grpo, draw.dynamic_rounds >= 0
    if sampler is None:
        batch = state.prompt_rng.sample(state.examples, draw.num_prompts)
    else:
        batch = sampler.draw(state.prompt_rng, draw.num_prompts, difficulty=draw.difficulty, progress=draw.progress)
    rounds: list[_Round] = []
    times = [0.0, 0.0]  # sampling, scoring seconds
    drawn_ids: set[str] = set()
    refilled = 0
    for round_ in range(max(0, draw.dynamic_rounds) + 1):
        rounds.append(_sample_round(state, batch, temperature, score, times))
        drawn_ids.update(ex.prompt_id for ex in batch)
        if dynamic:
            rounds[-1].keep = ~tied_groups(rounds[-1].total, g.group_size)  # [P] groups with signal
        missing = draw.num_prompts - sum(int(r.keep.sum()) for r in rounds)
        if not dynamic or missing <= 0 or round_ == draw.dynamic_rounds or sampler is None:
            break
        batch = sampler.draw(state.prompt_rng, missing, difficulty=draw.difficulty, progress=draw.progress,
                             exclude=drawn_ids)
        refilled += len(batch)
        if not batch:
            break
    out = _assemble(state, rounds, times)
    if dynamic:  # the reward series describe every completion sampled, not only the groups kept
        dropped = sum(int((~r.keep).sum()) for r in rounds)
        out.dynamic = {"dyn_groups_dropped": float(dropped), "dyn_prompts_refilled": float(refilled),
                       "dyn_frac_zero_std_drawn": dropped / max(1, sum(len(r.keep) for r in rounds))}
        out.drawn_total = np.concatenate([r.total for r in rounds])
        out.drawn_components = {k: np.concatenate([r.components[k] for r in rounds]) for k in rounds[0].components}
    return out


def _assemble(state: Any, rounds: list[_Round], times: list[float]) -> ScoredRollouts:
    """The kept groups of every round as one batch, with group advantages (an empty batch when none was kept)."""
    g = state.cfg.grpo
    parts, prompts, ids, answers, totals, comps = [], [], [], [], [], []
    for r in rounds:
        rows = r.rows()  # [N]
        index = torch.as_tensor(np.flatnonzero(rows), device=r.roll.completion_ids.device)
        roll = r.roll
        parts.append(Rollouts(roll.prompt_ids[index], roll.prompt_mask[index], roll.completion_ids[index],
                              roll.completion_mask[index], roll.truncated[index],
                              [c for c, keep in zip(roll.completions, rows) if keep]))
        prompts += [x for x, keep in zip(r.prompts, rows) if keep]
        ids += [x for x, keep in zip(r.ids, rows) if keep]
        answers += [x for x, keep in zip(r.answers, rows) if keep]
        totals.append(r.total[rows])
        comps.append({k: v[rows] for k, v in r.components.items()})
    t0 = time.perf_counter()
    roll = concat_rollouts(parts, state.tokenizer.pad_token_id)
    total = np.concatenate(totals)  # [N]
    components = {k: np.concatenate([c[k] for c in comps]) for k in comps[0]}
    rewards = torch.as_tensor(total, dtype=torch.float32, device=roll.completion_ids.device)  # [N]
    advantages = (group_advantages(rewards, g.group_size, scale=g.scale_rewards).to(torch.float32) if total.size
                  else torch.zeros(0, device=rewards.device))  # [N]
    graded = [(pid, c, a) for r in rounds for pid, c, a in zip(r.ids, r.roll.completions, r.answers)]
    return ScoredRollouts(roll, prompts, ids, total, components, rewards, advantages, times[0],
                          times[1] + time.perf_counter() - t0, answers, graded)
