"""The measurement forward of a GRPO batch, with each prompt encoded once per group instead of G times.

The G completions of a prompt share its tokens, so the prompt's keys and values are computed once (a KV cache over
the distinct prompts), repeated G times, and only the completion tokens run through the network again. On the tiny
recipe (prompt ≈ completion length) about half the tokens go through the network in the post-step forward, the one
forward the instrumentation adds to every step; the log-probs agree with the plain forward to float32 rounding
(tested).

The sharing itself is the trainer's (`discrepancy.trainers.logprobs.grouped_token_logprobs`); this module adds the
memory-bounded chunks of whole groups a measurement of the whole batch needs.
"""

from __future__ import annotations

import torch
from torch import nn

from discrepancy.modeling.modes import deterministic_mode


def groups_share_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                         group_size: int) -> bool:
    """True when rows g·G .. g·G+G−1 carry the same prompt tokens and mask, for every group g."""
    from discrepancy.trainers.logprobs import rows_share_prompts  # lazy: the trainer imports this module

    return rows_share_prompts(input_ids, attention_mask, prompt_len, group_size)


@torch.no_grad()
def shared_prompt_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_len: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log π of the completion tokens `input_ids[:, prompt_len:]` and the token entropies, both [N, T]: the
    trainer's own prompt-sharing forward (`grouped_token_logprobs`).

    Rows must come group by group with identical prompts inside a group (`groups_share_prompts`); the caller puts
    the model in eval mode.
    """
    from discrepancy.trainers.logprobs import grouped_token_logprobs  # lazy: the trainer imports this module

    logp, entropy = grouped_token_logprobs(model, input_ids, attention_mask, prompt_len, group_size,
                                           with_entropy=True)
    return logp, entropy  # type: ignore[return-value]


#: Bound on the logits one measurement call may hold; the batch is cut into whole groups that fit.
LOGITS_BUDGET_BYTES = 256 * 2**20


def group_chunks(n_rows: int, group_size: int, completion_len: int, vocab_size: int,
                 budget: int = LOGITS_BUDGET_BYTES) -> list[list[int]]:
    """Row lists of whole groups whose float32 logits [rows, T, V] stay under `budget` (at least one group each).

    Fewer, larger calls matter on small models, where each call's fixed cost rivals its arithmetic.
    """
    per_group = group_size * completion_len * vocab_size * 4
    groups_per_chunk = max(1, budget // max(per_group, 1))
    step = groups_per_chunk * group_size
    return [list(range(r, min(n_rows, r + step))) for r in range(0, n_rows, step)]


def batch_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                   group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`shared_prompt_logprobs` over the whole batch in memory-bounded chunks of whole groups, in eval mode."""
    with deterministic_mode(model):  # dropout off: a measurement, not a training forward
        n, t = input_ids.shape[0], input_ids.shape[1] - prompt_len
        vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 2**17)
        logp = torch.zeros(n, t, device=input_ids.device)  # [N, T]
        ent = torch.zeros(n, t, device=input_ids.device)  # [N, T]
        for rows in group_chunks(n, group_size, t, vocab):
            sl = slice(rows[0], rows[-1] + 1)
            logp[sl], ent[sl] = shared_prompt_logprobs(model, input_ids[sl], attention_mask[sl], prompt_len,
                                                       group_size)
    return logp, ent
