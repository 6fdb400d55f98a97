"""Sampling G completions per prompt with transformers ``generate``: the reference sampler (`Rollouts` rows group by
group, see `discrepancy.rollout.rollouts`)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.modeling.logprobs import cache_kwargs
from discrepancy.modeling.lora import merged_adapter
from discrepancy.modeling.modes import deterministic_mode, plain_generation_config
from discrepancy.rollout.rollouts import Rollouts, encode_groups, rollouts_from_tokens, shared_prompt_cache


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    static_cache: bool = False,
) -> Rollouts:
    """Sample ``group_size`` completions for each prompt, with the LoRA weights merged for speed.

    ``min_new_tokens = max_new_tokens`` suppresses EOS (fixed-length completions, for benchmarks).
    ``static_cache`` uses a static KV cache, which transformers compiles with ``torch.compile`` (GPU only: on CPU the
    compile costs more than it saves). Dropout is off while sampling (`deterministic_mode`).
    """
    device = next(model.parameters()).device
    enc, prompt_ids, prompt_mask = encode_groups(tokenizer, prompts, group_size, device, static=static_cache)
    eos_id = tokenizer.eos_token_id
    # A static cache is allocated and compiled inside `generate`: it does not take a prefilled dynamic cache.
    share = not static_cache and group_size > 1 and prompt_ids.size(1) > 1
    with deterministic_mode(model), plain_generation_config(model):
        with merged_adapter(model):
            cache = shared_prompt_cache(model, enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                         group_size) if share else None
            out = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                **cache_kwargs(model, cache),  # all prompt tokens but the last: generate runs only the rest
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,  # plain temperature / nucleus sampling; transformers would otherwise default to top-k 50
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=tokenizer.pad_token_id,
                cache_implementation="static" if static_cache else None,
            )  # [N, P+T']
    return rollouts_from_tokens(tokenizer, prompt_ids, prompt_mask, out[:, prompt_ids.size(1):])
