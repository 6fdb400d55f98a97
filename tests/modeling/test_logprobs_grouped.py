"""Prompt-sharing log-probs: the same log-probs, entropies and LoRA gradients as the plain full-row forward."""

from __future__ import annotations

import torch

from discrepancy.modeling import attach_lora
from discrepancy.modeling.logprobs import grouped_token_logprobs, rows_share_prompts, token_logprobs

G = 3


def _batch(tokenizer, completion_len: int = 7):
    """Three prompts of different lengths (left-padded), G completions each, one ending early (masked)."""
    prompts = ["3+4\n", "12-5+1\n", "100*2-7\n"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    pid = enc["input_ids"].repeat_interleave(G, 0)  # [9, P]
    pmask = enc["attention_mask"].repeat_interleave(G, 0)  # [9, P]
    gen = torch.Generator().manual_seed(0)
    comp = torch.randint(3, 20, (pid.size(0), completion_len), generator=gen)  # [9, T]
    cmask = torch.ones_like(comp)
    cmask[1, 4:] = 0
    return torch.cat([pid, comp], 1), torch.cat([pmask, cmask], 1), pid.size(1)


def _lora_model(tiny_model):
    torch.manual_seed(0)
    model = attach_lora(tiny_model, 4, 8.0, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a non-zero update, so the adapter changes the forward
            torch.nn.init.normal_(p, std=0.1)
    return model.train()


def _run(model, fn):
    model.zero_grad(set_to_none=True)
    logp, ent = fn()
    weights = torch.linspace(0.1, 1.0, logp.numel()).view_as(logp)  # distinct weight per token
    (logp * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logp.detach(), ent, grads


def test_grouped_logprobs_and_lora_gradients_equal_the_plain_forward(tiny_tokenizer, tiny_model):
    model = _lora_model(tiny_model)
    ids, attn, plen = _batch(tiny_tokenizer)
    assert attn[0, 0] == 0 and attn[-1, 0] == 1  # prompts of different lengths, left-padded
    assert rows_share_prompts(ids, attn, plen, G)
    plain = _run(model, lambda: token_logprobs(model, ids, attn, plen, with_entropy=True))
    shared = _run(model, lambda: grouped_token_logprobs(model, ids, attn, plen, G, with_entropy=True))
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=0)
    assert plain[2].keys() == shared[2].keys() and plain[2]
    for name, g in plain[2].items():
        assert g.norm() > 0
        assert (shared[2][name] - g).norm() <= 1e-5 * g.norm(), name


def test_grouped_logprobs_no_grad_in_eval_mode(tiny_tokenizer, tiny_model):
    ids, attn, plen = _batch(tiny_tokenizer)
    model = tiny_model.eval()
    with torch.no_grad():
        want, _ = token_logprobs(model, ids, attn, plen)
        got, _ = grouped_token_logprobs(model, ids, attn, plen, G)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_rows_that_do_not_share_prompts_fall_back_to_the_plain_forward(tiny_tokenizer, tiny_model):
    ids, attn, plen = _batch(tiny_tokenizer)
    perm = torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])  # every "group" now mixes the three prompts
    ids, attn = ids[perm], attn[perm]
    assert not rows_share_prompts(ids, attn, plen, G)
    with torch.no_grad():
        want, _ = token_logprobs(tiny_model.eval(), ids, attn, plen)
        got, _ = grouped_token_logprobs(tiny_model, ids, attn, plen, G)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
