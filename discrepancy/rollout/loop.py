"""Sampling without `generate`: each prompt encoded once, then a plain token loop over the model's own forward.

The CPU sampler. Around a small model's forward, `generate` spends much of each token on its own loop: input
preparation, logits processors (each inspecting its own signature every call), stopping criteria. This loop does only
what sampling needs: the model's forward with transformers' dynamic cache, the draw (`discrepancy.rollout.draw`) and
the EOS bookkeeping. The cache is written in place (`discrepancy.rollout.kv_reserve`). Measured side by side in
``benchmarks/results/sampling_cpu.md``.

Same distribution as `generate` with ``do_sample=True, top_k=0`` and no generation-config defaults (what
`sample_completions` asks for): softmax of logits / temperature, optionally restricted to the nucleus, EOS forbidden
before ``min_new_tokens``.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.rollout.draw import DrawRule
from discrepancy.rollout.kv_reserve import reserve
from discrepancy.modeling.logprobs import cache_kwargs, output_cache, position_ids_for
from discrepancy.rollout.rollouts import (Rollouts, encode_groups, merged_base, rollouts_from_tokens,
                                           shared_prompt_cache)

@torch.no_grad()
def decode_groups(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    greedy: bool = False,
) -> torch.Tensor:
    """Completion tokens ``[N, T]`` for the left-padded distinct prompts ``ids``/``mask`` ``[prompts, P]``, each
    continued ``group_size`` times (N = prompts × G, rows group by group). T ≤ ``max_new_tokens``: the loop stops
    once every row has drawn EOS; tokens after a row's EOS are arbitrary, mask them. ``model`` is a plain causal LM.
    """
    # Inference mode: no autograd bookkeeping at all (version counters, view tracking), 5 % of the loop's time on the
    # tiny recipe; the tokens leave it as an ordinary tensor (a clone made outside).
    rule = DrawRule(max_new_tokens, eos_id, temperature, top_p, min_new_tokens, greedy)
    with torch.inference_mode():
        tokens = _decode(model, ids, mask, group_size, rule)
    return tokens.clone()


def _decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, group_size: int,
            rule: DrawRule) -> torch.Tensor:
    """`decode_groups`' prefill and token loop."""
    max_new_tokens = rule.max_new_tokens
    rows_mask = mask.repeat_interleave(group_size, dim=0)  # [N, P]
    n, p = rows_mask.shape
    tokens = torch.empty(n, max(max_new_tokens, 0), dtype=torch.long, device=ids.device)  # [N, T]
    if max_new_tokens < 1:
        return tokens
    if p >= 2:  # every prompt token but the last, once per prompt, its keys and values repeated G times
        cache = shared_prompt_cache(model, ids, mask, group_size, room=max_new_tokens)
        start = p - 1
    else:
        cache, start = None, 0
    full_mask = torch.cat([rows_mask, rows_mask.new_ones(n, max_new_tokens)], dim=1)  # [N, P+T]
    out = model(input_ids=ids.repeat_interleave(group_size, dim=0)[:, start:], attention_mask=full_mask[:, :p],
                position_ids=position_ids_for(rows_mask)[:, start:], use_cache=True, **cache_kwargs(model, cache),
                logits_to_keep=1)
    cache = output_cache(out)
    if start == 0:
        reserve(cache, max_new_tokens)  # nothing was cached before this forward: room from here on
    next_position = rows_mask.long().sum(1, keepdim=True)  # [N, 1] position of the first completion token
    finished = torch.zeros(n, dtype=torch.bool, device=ids.device)
    check_every = rule.finish_check_every(ids.device)
    logits = out.logits[:, -1].float()  # [N, V]
    for i in range(max_new_tokens):
        tokens[:, i] = rule.next_tokens(logits, i)
        finished |= tokens[:, i] == rule.eos_id
        if i + 1 == max_new_tokens or ((i + 1) % check_every == 0 and bool(finished.all())):
            break
        out = model(input_ids=tokens[:, i : i + 1], attention_mask=full_mask[:, : p + i + 1],
                    position_ids=next_position + i, use_cache=True, **cache_kwargs(model, cache))
        cache = output_cache(out)
        logits = out.logits[:, -1].float()
    return tokens[:, : i + 1]


@torch.no_grad()
def sample_eager(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
) -> Rollouts:
    """`sample_completions` through `decode_groups`, with the LoRA weights merged: the same `Rollouts`."""
    device = next(model.parameters()).device
    enc, prompt_ids, prompt_mask = encode_groups(tokenizer, prompts, group_size, device)
    with merged_base(model) as base:
        completion_ids = decode_groups(base, enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                       group_size, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                                       temperature=temperature, top_p=top_p, min_new_tokens=min_new_tokens)
    return rollouts_from_tokens(tokenizer, prompt_ids, prompt_mask, completion_ids)
