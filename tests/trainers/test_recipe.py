"""Pieces of the step recipe against independent truths: micro-batch weights, schedules, SFT batches."""

from __future__ import annotations

import math

import pytest
import torch

from discrepancy.trainers.grpo import grpo_loss
from discrepancy.trainers.recipe import micro_batches, micro_weights
from discrepancy.trainers.schedules import beta_at, lr_at, temperature_at
from discrepancy.trainers.sft import sft_batch, sft_loss
from discrepancy.grading import format_prompt
from discrepancy.trainers.tasks import Example, format_solution


def test_micro_batches_are_whole_groups():
    assert micro_batches(3, 2, 2) == [[0, 1, 2, 3], [4, 5]]
    assert micro_batches(2, 4, 1) == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_weighted_micro_losses_equal_the_full_batch_loss(loss_type):
    # Truth: grpo_loss on the whole batch at once. Unequal micro-batches and ragged masks make the weights matter.
    gen = torch.Generator().manual_seed(0)
    n, t, g = 6, 5, 2
    logp = -torch.rand(n, t, generator=gen)
    old = logp + 0.1 * torch.randn(n, t, generator=gen)
    ref = logp + 0.2 * torch.randn(n, t, generator=gen)
    adv = torch.randn(n, generator=gen)
    mask = (torch.rand(n, t, generator=gen) > 0.3).long()
    mask[:, 0] = 1
    kw = dict(loss_type=loss_type, beta=0.05, max_completion_length=t, num_items=float(mask.sum()))
    full, _ = grpo_loss(logp, old, ref, adv, mask, **kw)
    micro = micro_batches(3, g, 2)  # 4 rows + 2 rows
    weights = micro_weights(mask, micro, loss_type)
    combined = sum(w * grpo_loss(logp[r], old[r], ref[r], adv[r], mask[r], **kw)[0] for r, w in zip(micro, weights))
    assert torch.allclose(combined, full, atol=1e-6)


def test_schedules_hand_values():
    # Warm-up: linear to the peak; then cosine to min_ratio·peak at the last step.
    assert lr_at(1, 10, 1.0, warmup=4) == pytest.approx(0.25)
    assert lr_at(4, 10, 1.0, warmup=4) == pytest.approx(1.0)
    assert lr_at(10, 10, 1.0, warmup=4, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_at(7, 10, 1.0, warmup=4, min_ratio=0.0) == pytest.approx(0.5)  # half way: cos(π/2) = 0
    assert lr_at(7, 10, 1.0, warmup=4, decay="linear") == pytest.approx(0.5)
    assert lr_at(9, 10, 2.0, decay="constant") == 2.0
    assert temperature_at(1, 5, 1.0, 0.5) == pytest.approx(1.0)
    assert temperature_at(5, 5, 1.0, 0.5) == pytest.approx(0.5)
    assert temperature_at(3, 5, 1.0, 0.5) == pytest.approx(0.75)
    assert beta_at(4, 5, 0.04, None) == 0.04
    assert beta_at(5, 5, 0.04, 0.0) == pytest.approx(0.0)


def test_sft_batch_masks_only_the_solution(tiny_tokenizer, tiny_model):
    ex = [Example("a", "3+4", "7", 1, "3+4=7"), Example("b", "12+13", "25", 1, "12+13=25")]
    ids, attn, tmask = sft_batch(tiny_tokenizer, ex)
    for row, e in enumerate(ex):
        n_prompt = len(tiny_tokenizer(format_prompt(e.question), add_special_tokens=False)["input_ids"])
        target = tiny_tokenizer(format_solution(e), add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        assert tmask[row, :n_prompt].sum() == 0
        assert ids[row, n_prompt:n_prompt + len(target)].tolist() == target
        assert tmask[row].sum() == len(target) == attn[row].sum() - n_prompt
    # The SFT loss is the mean NLL over target tokens: check it against a per-token loop.
    with torch.no_grad():
        loss = sft_loss(tiny_model, ids, attn, tmask)
        logits = tiny_model(input_ids=ids, attention_mask=attn).logits
        nll = [-torch.log_softmax(logits[r, i - 1], -1)[ids[r, i]] for r in range(2) for i in range(1, ids.size(1))
               if tmask[r, i]]
    assert math.isclose(float(loss), float(torch.stack(nll).mean()), rel_tol=1e-5)
