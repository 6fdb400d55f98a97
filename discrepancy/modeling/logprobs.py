"""Per-token log-probabilities and entropies of completions under the current weights.

`token_logprobs` runs every row in full. `grouped_token_logprobs` gives the same numbers (float32 rounding) when the
rows come in groups of G completions of one prompt: each prompt goes through the network once, its keys and values
are repeated G times, and only the completion tokens run per row. Gradients flow back through the repetition (the
G rows' gradients on the shared prompt add up), so it serves the training forward as well as the no-grad ones.
Written by hand because transformers offers prefix sharing only inside `generate`, which returns no log-probs of
given tokens and no gradients.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from discrepancy.modeling.devices import prompt_sharing_pays
from discrepancy.modeling.modes import deterministic_mode, has_active_dropout


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding ``[N, L]``, as ``generate`` computes them for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [N, L]


#: fp32 elements of logits handled at once (64 MiB): with a large vocabulary the full [N, T, V] fp32 copy is the
#: largest tensor of the step (0.8 GB for 32 × 128 tokens over 49k words), so it is never formed whole.
CHUNK_ELEMENTS = 2**24


class _TargetLogprob(torch.autograd.Function):
    """log softmax(logits)[target] per row, in fp32, from logits of any float dtype, chunk by chunk.

    Written by hand because autograd's own log_softmax keeps its fp32 [M, V] output for the backward. Here the
    backward recomputes softmax from the logits the model produced (which exist anyway) and the saved
    log-sum-exp, so the only [M, V] tensors are the logits and their gradient, in the model's dtype.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # [M, V], [M] -> [M]
        m, v = logits.shape
        step = max(1, CHUNK_ELEMENTS // max(v, 1))
        out = torch.empty(m, dtype=torch.float32, device=logits.device)  # [M]
        lse = torch.empty(m, dtype=torch.float32, device=logits.device)  # [M]
        for a in range(0, m, step):
            lg = logits[a : a + step].float()  # [c, V]
            lse[a : a + step] = torch.logsumexp(lg, dim=-1)
            out[a : a + step] = lg.gather(-1, targets[a : a + step, None]).squeeze(-1) - lse[a : a + step]
        ctx.save_for_backward(logits, targets, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # [M] -> [M, V]
        logits, targets, lse = ctx.saved_tensors
        m, v = logits.shape
        step = max(1, CHUNK_ELEMENTS // max(v, 1))
        grad = torch.empty_like(logits)  # [M, V]
        for a in range(0, m, step):
            g = grad_out[a : a + step, None].float()  # [c, 1]
            d = (logits[a : a + step].float() - lse[a : a + step, None]).exp_().mul_(-g)  # −g·softmax [c, V]
            d.scatter_add_(-1, targets[a : a + step, None], g)  # + g at the target: d log p_y / d logits
            grad[a : a + step] = d
        return grad, None


@torch.no_grad()
def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per row ``[M]`` in fp32, chunk by chunk (detached: logged, never trained on)."""
    m, v = logits.shape
    step = max(1, CHUNK_ELEMENTS // max(v, 1))
    out = torch.empty(m, dtype=torch.float32, device=logits.device)
    for a in range(0, m, step):
        logsm = torch.log_softmax(logits[a : a + step].float(), dim=-1)  # [c, V]
        out[a : a + step] = -(logsm.exp() * logsm).sum(-1)
    return out


def _logp_entropy(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool,
                  lean: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(targets) ``[N, T]`` from logits ``[N, T, V]`` in fp32, and the detached entropy.

    ``lean`` avoids an fp32 copy of all logits (`_TargetLogprob`) once they exceed one chunk; below that it saves
    no memory and its extra ops cost time (+0.7 ms a call on the tiny CPU recipe), so plain autograd runs.
    ``lean=False`` is always plain autograd, for torch.func transforms (jvp), which a hand-written
    autograd.Function does not support without more code.
    """
    n, t, v = logits.shape
    flat = logits.reshape(n * t, v)  # [N·T, V]
    if lean and flat.numel() > CHUNK_ELEMENTS:
        logp = _TargetLogprob.apply(flat, targets.reshape(n * t)).view(n, t)  # [N, T]
        return logp, (_entropy(flat).view(n, t) if with_entropy else None)
    logsm = torch.log_softmax(flat.float(), dim=-1)  # [N·T, V]
    logp = logsm.gather(-1, targets.reshape(n * t, 1)).view(n, t)  # [N, T]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logsm.exp() * logsm).sum(-1).view(n, t)  # [N, T]
    return logp, entropy


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM's forward accepts ``logits_to_keep`` (transformers' models do; a custom one may not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes(type(base), "logits_to_keep")


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def cache_kwargs(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword that hands a KV cache to ``model``'s forward (and `generate`): ``cache`` where the forward takes
    it (recent transformers, where the old name still works but warns on every call), else ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"cache" if _forward_takes(type(base), "cache") else "past_key_values": cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name (see `cache_kwargs`)."""
    return output["cache"] if "cache" in output else output.past_key_values


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    with_entropy: bool = False,
    lean: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(token) ``[N, T]`` of the completion tokens ``input_ids[:, prompt_len:]``, and optionally entropies.

    Logits are cast to fp32 before the softmax so bf16 models give log-probs precise enough for ratios near 1.
    The entropy is detached (it is logged, never trained on). ``lean=False``: plain autograd (see `_logp_entropy`).
    """
    t = input_ids.size(1) - prompt_len
    # Only the positions that predict completion tokens go through the output layer (over a large vocabulary the
    # prompt's logits would be a third of the step's largest tensors, for nothing).
    keep = {"logits_to_keep": t + 1} if _takes_logits_to_keep(model) else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_for(attention_mask), use_cache=False, **keep)
    logits = out.logits[:, -(t + 1):-1]  # [N, T, V] predictions of the completion tokens
    return _logp_entropy(logits, input_ids[:, prompt_len:], with_entropy, lean)


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
    share: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`token_logprobs` with each group's prompt encoded once; falls back to it when rows do not share prompts.

    ``share``: whether to share at all (default: the device policy, `devices.prompt_sharing_pays`; a run's speed plan
    passes its own choice). Also falls back under active dropout (see `_dropout_active`) and for one-token completions
    (nothing to share).
    """
    t = input_ids.size(1) - prompt_len
    share = prompt_sharing_pays(input_ids.device) if share is None else share
    if (not share or t < 2 or _dropout_active(model)
            or not rows_share_prompts(input_ids, attention_mask, prompt_len, group_size)):
        return token_logprobs(model, input_ids, attention_mask, prompt_len, with_entropy=with_entropy)
    n = input_ids.size(0)
    first = torch.arange(0, n, group_size, device=input_ids.device)  # one row per group
    pos = position_ids_for(attention_mask)  # [N, P+T]
    head = model(input_ids=input_ids[first, :prompt_len], attention_mask=attention_mask[first, :prompt_len],
                 position_ids=pos[first, :prompt_len], use_cache=True, logits_to_keep=1)
    cache = output_cache(head)
    # [groups, ...] -> [N, ...]: repeat_interleave is differentiable, so the prompt's gradient sums over its G rows.
    cache.batch_repeat_interleave(group_size)
    # The completion tokens but the last one: logits at position j predict token j+1.
    tail = model(input_ids=input_ids[:, prompt_len:-1], attention_mask=attention_mask[:, :-1],
                 position_ids=pos[:, prompt_len:-1], use_cache=True, **cache_kwargs(model, cache))
    first_logits = head.logits[:, -1:].repeat_interleave(group_size, dim=0)  # [N, 1, V] predicts token P
    logits = torch.cat([first_logits, tail.logits], dim=1)  # [N, T, V]
    return _logp_entropy(logits, input_ids[:, prompt_len:], with_entropy)


#: Bound on the logits one measurement call may hold; a batch is cut into whole groups that fit (`group_chunks`).
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


def vocab_size(model: torch.nn.Module) -> int:
    """The model's vocabulary size (from its config; a generous guess for a model without one)."""
    return int(getattr(getattr(model, "config", None), "vocab_size", 0) or 2**17)


@torch.no_grad()
def batch_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                   group_size: int, *, chunks: list[list[int]] | None = None, share: bool | None = None,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log π [N, T], entropy [N, T] or None) of the completion tokens at the current weights: a measurement, so no
    grad and dropout off (`deterministic_mode`), chunk by chunk (``chunks``: row lists of whole groups; default
    `group_chunks`), each chunk through `grouped_token_logprobs` with ``share``."""
    with deterministic_mode(model):
        n, t = input_ids.size(0), input_ids.size(1) - prompt_len
        if chunks is None:
            chunks = group_chunks(n, group_size, t, vocab_size(model))
        logp = torch.zeros(n, t, device=input_ids.device)  # [N, T]
        ent = torch.zeros(n, t, device=input_ids.device) if with_entropy else None  # [N, T]
        for rows in chunks:
            lp, en = grouped_token_logprobs(model, input_ids[rows], attention_mask[rows], prompt_len, group_size,
                                            with_entropy=with_entropy, share=share)
            logp[rows] = lp.float()
            if ent is not None:
                ent[rows] = en
    return logp, ent
