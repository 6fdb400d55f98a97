"""Per-token log-probabilities and entropies of completions under the current weights.

`token_logprobs` runs every row in full. `grouped_token_logprobs` gives the same numbers (float32 rounding) when the
rows come in groups of G completions of one prompt: each prompt goes through the network once, its keys and values
are repeated G times, and only the completion tokens run per row. Gradients flow back through the repetition (the
G rows' gradients on the shared prompt add up), so it serves the training forward as well as the no-grad ones.
Written by hand because transformers offers prefix sharing only inside `generate`, which returns no log-probs of
given tokens and no gradients.
"""

from __future__ import annotations

import torch

from discrepancy.modeling.modes import has_active_dropout


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding ``[N, L]``, as ``generate`` computes them for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [N, L]


def _logp_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(targets) ``[N, T]`` from logits ``[N, T, V]`` (cast to fp32 first), and the detached entropy."""
    logsm = torch.log_softmax(logits.float(), dim=-1)  # [N, T, V]
    logp = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, T]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logsm.exp() * logsm).sum(-1)  # [N, T]
    return logp, entropy


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(token) ``[N, T]`` of the completion tokens ``input_ids[:, prompt_len:]``, and optionally entropies.

    Logits are cast to fp32 before the softmax so bf16 models give log-probs precise enough for ratios near 1.
    The entropy is detached (it is logged, never trained on).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_for(attention_mask), use_cache=False)
    logits = out.logits[:, prompt_len - 1:-1]  # [N, T, V] predictions of the completion tokens
    return _logp_entropy(logits, input_ids[:, prompt_len:], with_entropy)


def rows_share_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                       group_size: int) -> bool:
    """True when rows g·G .. g·G+G−1 carry the same prompt tokens and mask, for every group g."""
    n = input_ids.size(0)
    if group_size < 2 or n % group_size or prompt_len < 1:
        return False
    ids = input_ids[:, :prompt_len].reshape(n // group_size, group_size, prompt_len)  # [groups, G, P]
    mask = attention_mask[:, :prompt_len].reshape(n // group_size, group_size, prompt_len)  # [groups, G, P]
    return bool((ids == ids[:, :1]).all()) and bool((mask == mask[:, :1]).all())


def _dropout_active(model: torch.nn.Module) -> bool:
    """A train-mode forward with dropout would draw one mask per prompt instead of one per row: not the same."""
    if not model.training:
        return False
    return has_active_dropout(model)


def grouped_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    group_size: int,
    *,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`token_logprobs` with each group's prompt encoded once; falls back to it when rows do not share prompts.

    Shares only on the CPU. On a GPU a small model's forward is bound by kernel launches, not by the tokens
    sharing saves, and sharing doubles the calls: on an H100 the training forward + backward of the GPU benchmark
    took 0.55 s shared against 0.25 s plain (``benchmarks/results/profile_step.md``). Also falls back under active
    dropout (see `_dropout_active`) and for one-token completions (nothing to share).
    """
    t = input_ids.size(1) - prompt_len
    if (t < 2 or input_ids.device.type != "cpu" or _dropout_active(model)
            or not rows_share_prompts(input_ids, attention_mask, prompt_len, group_size)):
        return token_logprobs(model, input_ids, attention_mask, prompt_len, with_entropy=with_entropy)
    n = input_ids.size(0)
    first = torch.arange(0, n, group_size, device=input_ids.device)  # one row per group
    pos = position_ids_for(attention_mask)  # [N, P+T]
    head = model(input_ids=input_ids[first, :prompt_len], attention_mask=attention_mask[first, :prompt_len],
                 position_ids=pos[first, :prompt_len], use_cache=True, logits_to_keep=1)
    cache = head.past_key_values
    # [groups, ...] -> [N, ...]: repeat_interleave is differentiable, so the prompt's gradient sums over its G rows.
    cache.batch_repeat_interleave(group_size)
    # The completion tokens but the last one: logits at position j predict token j+1.
    tail = model(input_ids=input_ids[:, prompt_len:-1], attention_mask=attention_mask[:, :-1],
                 position_ids=pos[:, prompt_len:-1], past_key_values=cache, use_cache=True)
    first_logits = head.logits[:, -1:].repeat_interleave(group_size, dim=0)  # [N, 1, V] predicts token P
    logits = torch.cat([first_logits, tail.logits], dim=1)  # [N, T, V]
    return _logp_entropy(logits, input_ids[:, prompt_len:], with_entropy)
