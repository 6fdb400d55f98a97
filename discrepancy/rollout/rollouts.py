"""What every sampler shares: `Rollouts` (one step's completions with the masks GRPO needs), prompt encoding, the
shared-prompt KV cache and the merged model our decode loops run.

Rows come out ordered group by group (prompt 0's G completions, then prompt 1's, ...). Prompts are left-padded so
every completion starts at the same column; the completion mask covers each completion up to and including its
first EOS, and a completion without EOS within ``max_new_tokens`` is flagged as truncated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.modeling.lora import merged_adapter
from discrepancy.modeling.logprobs import output_cache, position_ids_for
from discrepancy.modeling.modes import deterministic_mode
from discrepancy.rollout.kv_reserve import reserve

STATIC_PAD_MULTIPLE = 64


@dataclass
class Rollouts:
    """One step's sampled completions. N = prompts × G, P = padded prompt length, T = completion length."""

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T] right-padded after the first EOS
    completion_mask: torch.Tensor  # [N, T] 1 up to and including the first EOS
    truncated: torch.Tensor  # [N] bool: no EOS within T tokens
    completions: list[str]  # decoded completions (special tokens dropped), N of them

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and completion side by side ``[N, P+T]``."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """Attention mask of `input_ids` ``[N, P+T]``: the prompt's padding and everything after the first EOS off."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)


def completion_mask(completion_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[N, T]`` (1 up to and including the first EOS) and truncated flags ``[N]`` (no EOS at all)."""
    is_eos = completion_ids == eos_id  # [N, T]
    has_eos = is_eos.any(dim=1)  # [N]
    t = completion_ids.size(1)
    # argmax of a bool row gives the first True; rows without EOS keep every token.
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, t, dtype=torch.long))  # [N]
    positions = torch.arange(t, device=completion_ids.device).unsqueeze(0)  # [1, T]
    mask = (positions <= first.unsqueeze(1)).long()  # [N, T]
    return mask, ~has_eos


@torch.no_grad()
def shared_prompt_cache(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, group_size: int,
                        room: int = 0) -> Any:
    """KV cache of each distinct prompt but its last token, computed once and repeated ``group_size`` times.

    ``ids``/``mask`` ``[prompts, P]`` are the left-padded distinct prompts; the cache then covers ``[N, P-1]``
    (rows group by group). The G completions of a prompt share its tokens, so `generate`'s prefill of the
    repeated batch would encode every prompt G times; this runs it once. The last prompt token is left to the
    decode loop, whose first forward must produce the logits of the first completion token. ``room``: positions
    reserved for the tokens to come (`discrepancy.rollout.kv_reserve`), for a loop that then writes in place.
    """
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids_for(mask)[:, :-1],
                use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    if not (room and reserve(cache, room, repeats=group_size)):
        cache.batch_repeat_interleave(group_size)  # [prompts, ...] -> [N, ...] keys and values, group by group
    return cache


@contextmanager
def merged_base(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The plain causal LM under ``model``, with the LoRA weights merged and dropout off, for our own decode loops
    (they call the model's forward directly, not peft's wrapper)."""
    with deterministic_mode(model), merged_adapter(model):
        yield model.get_base_model() if hasattr(model, "get_base_model") else model


def encode_groups(tokenizer: PreTrainedTokenizerBase, prompts: list[str], group_size: int, device: torch.device,
                  static: bool = False) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The prompts left-padded once each (the tokenizer's encoding) and repeated G times, group by group: ids and
    mask ``[N, P]`` on ``device``. ``static``: widths padded to a multiple of 64, because with a static cache every
    new width means a new compiled graph; a run then compiles a handful of shapes instead of one per step."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                    pad_to_multiple_of=STATIC_PAD_MULTIPLE if static else None)
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, dim=0).to(device)  # [N, P]
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, dim=0).to(device)  # [N, P]
    return enc, prompt_ids, prompt_mask


def rollouts_from_tokens(tokenizer: PreTrainedTokenizerBase, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                         completion_ids: torch.Tensor) -> Rollouts:
    """`Rollouts` from sampled tokens ``[N, T]``: masks up to the first EOS, padding after it, decoded texts."""
    mask, truncated = completion_mask(completion_ids, tokenizer.eos_token_id)
    completion_ids = torch.where(mask.bool(), completion_ids, tokenizer.pad_token_id)  # [N, T] clean padding
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollouts(prompt_ids, prompt_mask, completion_ids, mask, truncated, texts)
