"""Diversity instruments against hand counts and a second implementation of the edit distance; through the hooks,
against the batch the driver built."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.diversity import Diversity, collapse_verdict, distinct_n, group_diversity
from discrepancy.instrumentation.registry import build_instruments

from instr_models import drive, make_lora_model


def levenshtein(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Edit distance by the textbook dynamic programme (the independent truth for rapidfuzz)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_distinct_n_by_hand() -> None:
    assert distinct_n([(1, 2, 3), (1, 2, 4)], 1) == 4 / 6
    assert distinct_n([(1, 2, 3), (1, 2, 4)], 2) == 3 / 4  # (1,2) twice, (2,3), (2,4)
    assert math.isnan(distinct_n([(1,), (2,)], 2))


def test_collapsed_and_diverse_groups() -> None:
    same = [[(5, 6, 7)] * 4, [(8, 9)] * 4]  # every group one completion repeated
    out = group_diversity(same, pairs=16, seed=0)
    assert out["div_duplicate_frac"] == 1.0 and out["div_edit_distance"] == 0.0
    assert out["div_distinct_1"] == pytest.approx((3 / 12 + 2 / 8) / 2)
    assert out["div_batch_distinct"] == 2.0
    assert collapse_verdict(out) == "collapsed"
    one = group_diversity([[(5, 6)] * 4, [(5, 6)] * 4], pairs=8, seed=0)
    assert collapse_verdict(one) == "one completion"
    mixed = [[(1, 2), (1, 2), (3, 4), (5, 6)]]  # one of three possible repeats
    assert group_diversity(mixed, pairs=4, seed=0)["div_duplicate_frac"] == pytest.approx(1 / 3)
    rng = np.random.default_rng(3)
    diverse = [[tuple(rng.integers(0, 50, 8).tolist()) for _ in range(8)] for _ in range(4)]
    assert collapse_verdict(group_diversity(diverse, pairs=32, seed=0)) == "diverse"
    assert collapse_verdict({}) == "unknown"


def test_edit_distance_matches_the_dynamic_programme() -> None:
    rng = np.random.default_rng(11)
    groups = [[tuple(rng.integers(0, 4, rng.integers(1, 12)).tolist()) for _ in range(2)] for _ in range(1)]
    a, b = groups[0]
    expected = levenshtein(a, b) / max(len(a), len(b))
    assert group_diversity(groups, pairs=5, seed=1)["div_edit_distance"] == pytest.approx(expected)


def test_through_the_hooks_and_the_registry() -> None:
    torch.manual_seed(0)
    truths = drive(make_lora_model(), [Diversity(pairs=8)], steps=2, groups=3, group_size=4)
    for t in truths:
        b = t.ctx.batch
        ids = b.input_ids[:, b.prompt_len :]
        seqs = [tuple(ids[i, : int(b.completion_mask[i].sum())].tolist()) for i in range(ids.shape[0])]
        assert t.row["div_batch_distinct"] == len(set(seqs))
        assert 0.0 <= t.row["div_edit_distance"] <= 1.0
    model = make_lora_model()
    names = [type(i).__name__ for i in build_instruments(InstrumentationConfig(timing=False, diversity=True), model)]
    assert "Diversity" in names
    assert "Diversity" in [type(i).__name__ for i in build_instruments(InstrumentationConfig(timing=False), model)]
    assert "Diversity" not in [type(i).__name__ for i in build_instruments(InstrumentationConfig(timing=False,
                                                                                                 diversity=False),
                                                                         model)]  # on by default, off when said


def test_sampled_pairs_are_two_different_members_uniform_within_a_uniform_group() -> None:
    """Planted frequencies: a group of 3 and one of 5 give each of the 6 (20) ordered pairs 1/2 · 1/6 (1/2 · 1/20)."""
    from collections import Counter

    from discrepancy.instrumentation.diversity import sample_pairs

    groups = [[(k,) for k in range(3)], [(10 + k,) for k in range(5)]]
    n = 60_000
    counts = Counter((a[0], b[0]) for a, b in sample_pairs(groups, n, seed=2))
    assert all(a != b and (a < 10) == (b < 10) for a, b in counts)  # two different members of one group
    assert len(counts) == 6 + 20
    for (a, _), c in counts.items():
        p = 1 / 12 if a < 10 else 1 / 40
        assert abs(c - n * p) < 5 * (n * p * (1 - p)) ** 0.5  # within 5 binomial standard deviations
    assert sample_pairs([], 4, 0) == [] and sample_pairs(groups, 0, 0) == []
