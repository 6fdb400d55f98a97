"""Completion diversity of a step's rollouts, as series: the signs of mode collapse.

Per prompt group (the G completions of one prompt, as token ids up to and including EOS):

* ``div_distinct_1`` / ``div_distinct_2``: distinct-n (Li et al. 2016) within a group — distinct n-grams over all
  n-grams of the group's completions — averaged over groups. 1 when no n-gram repeats, → 1/G when all G are one text.
* ``div_duplicate_frac``: of the G − 1 completions of a group that could repeat an earlier one, the share that do,
  over all groups: Σ_g (G − u_g) / Σ_g (G − 1), u_g the distinct completions of group g. 0 all different, 1 every
  group one completion repeated.
* ``div_edit_distance``: mean normalised Levenshtein distance (edits / longer length) between token sequences of
  ``pairs`` pairs drawn within groups (a fixed sample per step: seeded by the step); 0 identical, 1 nothing shared.
* ``div_batch_distinct``: distinct completions in the whole batch (1: every prompt answered with one and the same text).

Edit distances come from rapidfuzz (C++, any hashable sequence); distinct-n and duplicates are set counts.
The collapse verdict (`collapse_verdict`, and the early-warning rules ``mode_collapse`` / ``one_completion``) reads
these series: docs/early-warning.md.
"""

from __future__ import annotations

import math

import numpy as np
from rapidfuzz.distance import Levenshtein

from discrepancy.instrumentation.hooks import Instrument, StepContext

DUPLICATE_COLLAPSE = 0.9  # a group is mostly copies: at most one completion in ten differs from an earlier one
EDIT_COLLAPSE = 0.05  # completions differ in fewer than 1 token in 20


def distinct_n(seqs: list[tuple[int, ...]], n: int) -> float:
    """Distinct n-grams over all n-grams of ``seqs``; NaN when none is n tokens long."""
    grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def group_diversity(groups: list[list[tuple[int, ...]]], pairs: int, seed: int) -> dict[str, float]:
    """The diversity series of groups of token sequences (see the module docstring)."""
    d1 = [distinct_n(g, 1) for g in groups]
    d2 = [distinct_n(g, 2) for g in groups]
    repeats = sum(len(g) - len(set(g)) for g in groups)
    possible = sum(len(g) - 1 for g in groups)
    usable = [g for g in groups if len(g) >= 2]
    dists = [Levenshtein.normalized_distance(a, b) for a, b in sample_pairs(usable, pairs, seed)]
    return {
        "div_distinct_1": _finite_mean(d1),
        "div_distinct_2": _finite_mean(d2),
        "div_duplicate_frac": repeats / possible if possible else math.nan,
        "div_edit_distance": sum(dists) / len(dists) if dists else math.nan,
        "div_batch_distinct": float(len({s for g in groups for s in g})),
    }


def sample_pairs(groups: list[list[tuple[int, ...]]], pairs: int, seed: int) -> list[tuple[tuple, tuple]]:
    """``pairs`` pairs of two different completions of one group, the group uniform among ``groups`` and the pair
    uniform within it, drawn at once (a per-pair ``rng.choice`` cost a third of the instrument's time)."""
    if not groups or pairs < 1:
        return []
    rng = np.random.default_rng(seed)
    which = rng.integers(len(groups), size=pairs)  # [pairs]
    sizes = np.array([len(groups[w]) for w in which])  # [pairs], each ≥ 2
    i = (rng.random(pairs) * sizes).astype(int)  # first member, uniform in [0, size)
    j = (rng.random(pairs) * (sizes - 1)).astype(int)  # second, uniform among the others
    j += j >= i
    return [(groups[w][a], groups[w][b]) for w, a, b in zip(which.tolist(), i.tolist(), j.tolist())]


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def collapse_verdict(row: dict[str, float]) -> str:
    """'collapsed' when groups are mostly copies (duplicate share ≥ 0.9) or nearly identical (mean edit distance
    ≤ 0.05); 'one completion' when the whole batch is one text; 'diverse' otherwise (NaN series: 'unknown')."""
    dup, edit, batch = (row.get(k, math.nan) for k in ("div_duplicate_frac", "div_edit_distance",
                                                        "div_batch_distinct"))
    if not any(math.isfinite(v) for v in (dup, edit, batch)):
        return "unknown"
    if batch <= 1:
        return "one completion"
    if dup >= DUPLICATE_COLLAPSE or edit <= EDIT_COLLAPSE:
        return "collapsed"
    return "diverse"


class Diversity(Instrument):
    """Distinct-n, duplicate share, sampled edit distance and batch-distinct count of the step's completions."""

    def __init__(self, pairs: int = 32) -> None:
        self.pairs = pairs

    def series(self) -> dict[str, str]:
        """The diversity series."""
        return {
            "div_distinct_1": "distinct tokens / tokens within a prompt group, mean over groups",
            "div_distinct_2": "distinct token bigrams / bigrams within a prompt group, mean over groups",
            "div_duplicate_frac": "share of a group's G−1 completions that repeat an earlier one (1: one text each)",
            "div_edit_distance": "mean normalised token edit distance of completion pairs sampled within groups",
            "div_batch_distinct": "distinct completions in the whole batch (1: every prompt answered with one and the same text)",
        }

    def on_before_optimizer(self, ctx: StepContext) -> dict[str, float]:
        """Diversity of the rollouts (identical for every inner iteration; computed on the first only)."""
        b = ctx.batch
        ids = b.input_ids[:, b.prompt_len :].tolist()  # [N][T] completion tokens as Python ints
        lengths = b.completion_mask.sum(-1).long().tolist()  # [N]
        # One conversion of the whole table: converting token by token cost 0.56 ms of the step, this 0.02 ms.
        seqs = [tuple(row[:n]) for row, n in zip(ids, lengths)]
        g = b.group_size
        groups = [seqs[i : i + g] for i in range(0, len(seqs), g)]
        return group_diversity(groups, self.pairs, seed=ctx.step)
