"""The no-grad batch forward with shared prompts against the plain forward, with left-padded prompts."""

from __future__ import annotations

import pytest
import torch

from discrepancy.modeling.logprobs import batch_logprobs, group_chunks, rows_share_prompts, token_logprobs

from instr_models import make_lora_model


def _batch(groups: int = 3, g: int = 4, p: int = 7, t: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(8, 90, (groups, p), generator=gen)
    pmask = torch.ones(groups, p, dtype=torch.long)
    for i, pad in enumerate((0, 2, 3)):  # left padding of different lengths
        prompts[i, :pad] = 0
        pmask[i, :pad] = 0
    comp = torch.randint(8, 90, (groups * g, t), generator=gen)
    cmask = (torch.arange(t)[None] < torch.randint(1, t + 1, (groups * g, 1), generator=gen)).long()
    ids = torch.cat([prompts.repeat_interleave(g, 0), comp], 1)  # [N, P+T]
    return ids, torch.cat([pmask.repeat_interleave(g, 0), cmask], 1)


def test_shared_prompt_forward_equals_plain_forward(monkeypatch) -> None:
    import discrepancy.modeling.logprobs as logprobs

    torch.manual_seed(0)
    model = make_lora_model().train()
    ids, attn = _batch()
    assert rows_share_prompts(ids, attn, 7, 4)
    with torch.no_grad():
        ref_lp, ref_ent = token_logprobs(model.eval(), ids, attn, 7, with_entropy=True)
    model.train()
    monkeypatch.setattr(logprobs, "token_logprobs", lambda *a, **k: pytest.fail("fell back to the plain forward"))
    lp, ent = batch_logprobs(model, ids, attn, 7, 4)  # prompts shared: the plain forward never runs
    monkeypatch.undo()
    assert model.training  # mode restored
    cmask = attn[:, 7:].bool()
    torch.testing.assert_close(lp[cmask], ref_lp[cmask], rtol=1e-6, atol=1e-5)  # float32 rounding
    torch.testing.assert_close(ent[cmask], ref_ent[cmask], rtol=1e-6, atol=1e-5)


def test_groups_with_different_prompts_are_detected() -> None:
    ids, attn = _batch()
    ids[1, 5] += 1  # row 1 of group 0 now has another prompt
    assert not rows_share_prompts(ids, attn, 7, 4)
    assert not rows_share_prompts(ids[:10], attn[:10], 7, 4)  # not whole groups


def test_chunks_are_whole_groups_within_the_logits_budget() -> None:
    # 5 groups of 4 rows, T = 10, V = 100: 16 000 bytes of logits per group; a 40 000-byte budget fits 2 groups.
    chunks = group_chunks(20, 4, 10, 100, budget=40_000)
    assert chunks == [list(range(0, 8)), list(range(8, 16)), list(range(16, 20))]
    assert group_chunks(8, 4, 10, 100, budget=1) == [list(range(0, 4)), list(range(4, 8))]  # at least one group
