"""Statistics of one step's rollouts: advantages, completion length by correctness, reflective-word rate.

Plain functions of tensors and strings; no model involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from discrepancy.grading import count_reflective
from discrepancy.instrumentation.hooks import Instrument, StepContext



def advantage_stats(advantages: torch.Tensor) -> dict[str, float]:
    """Mean, std, min, max of the per-completion advantages and the fraction that is exactly zero (no signal)."""
    a = advantages.double()  # [N]
    if a.numel() == 0:
        return {k: math.nan for k in ("adv_mean", "adv_std", "adv_min", "adv_max", "adv_frac_zero")}
    return {
        "adv_mean": float(a.mean()),
        "adv_std": float(a.std(unbiased=False)),
        "adv_min": float(a.min()),
        "adv_max": float(a.max()),
        "adv_frac_zero": float((a == 0).double().mean()),
    }


def length_by_correctness(lengths: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """Mean completion length (tokens) of correct and incorrect completions; NaN for an empty class."""
    lengths = lengths.double()  # [N]
    ok = correct.bool()  # [N]
    def mean_of(sel: torch.Tensor) -> float:
        return float(lengths[sel].mean()) if bool(sel.any()) else math.nan
    return {"len_correct": mean_of(ok), "len_incorrect": mean_of(~ok)}


def reflective_rate(completions: Sequence[str], n_tokens: float) -> float:
    """Reflective words per 1 000 completion tokens over a batch; NaN when there are no tokens."""
    if n_tokens <= 0:
        return math.nan
    # One pass over the batch: a newline cannot join two words, so the count is the sum of the per-completion ones.
    return 1000.0 * count_reflective("\n".join(completions)) / n_tokens


class RolloutStats(Instrument):
    """Advantage statistics, length by correctness and reflective-word rate of the step's rollouts.

    A completion counts as correct when its unweighted reward component `correct_reward` exceeds
    `correct_threshold`; without that component the two length series are NaN.
    """

    def __init__(self, correct_reward: str = "correctness", correct_threshold: float = 0.5) -> None:
        self.correct_reward = correct_reward
        self.correct_threshold = correct_threshold

    def series(self) -> dict[str, str]:
        """Advantage, length and reflective-word series."""
        return {
            "adv_mean": "mean advantage over completions",
            "adv_std": "standard deviation of the advantages",
            "adv_min": "smallest advantage",
            "adv_max": "largest advantage",
            "adv_frac_zero": "fraction of completions with advantage exactly 0 (no learning signal)",
            "len_correct": "mean completion length (tokens) of correct completions",
            "len_incorrect": "mean completion length (tokens) of incorrect completions",
            "reflective_per_1k": "reflective words (wait, check, verify, hmm, ...) per 1000 completion tokens",
        }

    def on_before_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """Statistics of the rollouts (identical for every inner iteration)."""
        lengths = ctx.batch.completion_mask.sum(-1)  # [N]
        out = advantage_stats(ctx.batch.advantages)
        comp = ctx.batch.reward_components.get(self.correct_reward)
        if comp is None:
            out.update(len_correct=math.nan, len_incorrect=math.nan)
        else:
            correct = torch.as_tensor(comp) > self.correct_threshold  # [N]
            out.update(length_by_correctness(lengths.cpu(), correct))
        out["reflective_per_1k"] = reflective_rate(ctx.batch.completions, float(lengths.sum()))
        return out
