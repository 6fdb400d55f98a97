"""TRL's shuffled micro-batches put back group by group: a planted layout (rows tagged with their generation row,
values that encode the row) must come back in generation order, with each micro-batch's rows where they went; a
step whose rows are not whole groups keeps the stacked order with group_size 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discrepancy.integrations.trl_batch import GEN_KEY, ROW_KEY, Generation, MicroBatch, StepRecord, step_batch

G, T, P = 4, 3, 2


def _micro(rows: list[int], gen: int = 0) -> MicroBatch:
    """A micro-batch whose rows are generation rows ``rows``; every value encodes its row (row r → r)."""
    n = len(rows)
    r = torch.tensor(rows, dtype=torch.float32)
    inputs = {
        "prompt_ids": torch.tensor(rows).unsqueeze(1).repeat(1, P), "prompt_mask": torch.ones(n, P, dtype=torch.long),
        "completion_ids": torch.tensor(rows).unsqueeze(1).repeat(1, T),
        "completion_mask": torch.ones(n, T, dtype=torch.long), "advantages": r,
        GEN_KEY: torch.full((n,), gen), ROW_KEY: torch.tensor(rows),
    }
    return MicroBatch(inputs, logp=-r.unsqueeze(1).repeat(1, T), entropy=r.unsqueeze(1).repeat(1, T), loss=0.0)


def _generation(n: int) -> Generation:
    return Generation(prompts=[f"p{r // G}" for r in range(n)], completions=[f"c{r}" for r in range(n)],
                      fields={"reward": np.arange(n, dtype=float) * 10, "advantage": np.zeros(n),
                              "length": np.ones(n)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_whole_groups_come_back_in_generation_order(seed):
    perm = np.random.default_rng(seed).permutation(8).tolist()  # TRL's shuffle of 2 groups of 4
    record = StepRecord([_micro(perm[:4]), _micro(perm[4:])])
    batch, logp, entropy = step_batch(record, {0: _generation(8)}, pad_id=0, group_size=G)
    assert batch.group_size == G
    assert batch.advantages.tolist() == list(range(8))
    assert batch.input_ids[:, 0].tolist() == list(range(8)) and (logp[:, 0] == -torch.arange(8.0)).all()
    assert (entropy[:, 0] == torch.arange(8.0)).all()
    assert batch.completions == [f"c{r}" for r in range(8)]
    assert batch.reward_components["reward"].tolist() == [10.0 * r for r in range(8)]
    assert set(batch.reward_components) == {"reward"}
    for k, rows in enumerate(batch.micro_batches):  # each micro-batch's rows, found at their new places
        assert sorted(rows) == sorted(perm[k * 4:(k + 1) * 4])
    assert record.order is not None and (np.asarray(perm)[record.order] == np.arange(8)).all()


def test_a_step_of_partial_groups_keeps_its_order():
    record = StepRecord([_micro([5, 0, 2, 7]), _micro([1, 4, 3, 9])])  # row 6 missing, row 9 of a third group
    batch, _, _ = step_batch(record, {0: _generation(12)}, pad_id=0, group_size=G)
    assert batch.group_size == 1 and record.order is None
    assert batch.advantages.tolist() == [5, 0, 2, 7, 1, 4, 3, 9]
    assert batch.micro_batches == [[0, 1, 2, 3], [4, 5, 6, 7]] and batch.micro_weights == [0.5, 0.5]


def test_under_trl_d_t_is_measured_on_the_whole_batch_and_the_run_says_so():
    """TRL's loss has no per-micro-batch form: whatever sub-batch the instrument config asks for, the recorded
    config says "all" (what was measured), and nothing else of it changes."""
    import dataclasses
    from types import SimpleNamespace

    from discrepancy.instrumentation import InstrumentationConfig
    from discrepancy.integrations.trl_record import unmeasured

    asked = InstrumentationConfig(discrepancy_groups="micro")
    _, used = unmeasured(asked, SimpleNamespace(gradient_checkpointing=False))
    assert used.discrepancy_groups == "all"
    assert dataclasses.replace(used, discrepancy_groups="micro") == asked
