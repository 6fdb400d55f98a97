"""Model-facing scorers: teacher-forced log-probability of a continuation, and batched generation.

Both encode text without special tokens (``add_special_tokens=False``) and pad by hand, so they behave the same
for the project's char-level tokenizer (which may lack a pad token) and for Hugging Face tokenizers. The
log-probability is gathered at the continuation positions only, so a large vocabulary never costs a full
[B, T, V] log-softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from discrepancy.modeling.modes import plain_generation_config

if TYPE_CHECKING:  # type names only: importing transformers is slow
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Generation:
    """One generated completion: its text (cut after the first ``</answer>``) and how many tokens it took."""

    text: str
    n_tokens: int


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS, so context + continuation ids equal their separate encodings."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Pad id: the tokenizer's pad, else its EOS, else 0 (padding is always masked, so any id is correct)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def pad_sequences(seqs: Sequence[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], attention mask [B, T]) of token lists padded to the longest; left padding for generation."""
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)  # [B, T]
    mask = torch.zeros_like(ids)
    for i, x in enumerate(seqs):
        span = slice(width - len(x), width) if left else slice(0, len(x))
        ids[i, span] = torch.tensor(x, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def continuation_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """(sum of log p, token count) of each continuation given its context, in one forward per batch.

    The two texts are encoded separately and concatenated, so the scored tokens are exactly the continuation's.
    """
    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations must have the same length")
    pairs = [(encode(tokenizer, c), encode(tokenizer, t)) for c, t in zip(contexts, continuations)]
    out: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        out.extend(_logprob_batch(model, pairs[start : start + batch_size], pad_token_id(tokenizer)))
    return out


def _logprob_batch(model: torch.nn.Module, pairs: list[tuple[list[int], list[int]]],
                   pad: int) -> list[tuple[float, int]]:
    device = _device(model)
    ids, mask = pad_sequences([ctx + cont for ctx, cont in pairs], pad)  # [B, T], right-padded
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
    n_cont = max(len(cont) for _, cont in pairs)
    # token at position p is predicted by the logits at p - 1; rows with shorter continuations reuse the last
    # position and are masked out below
    pos = torch.zeros((len(pairs), n_cont), dtype=torch.long)  # [B, L]
    valid = torch.zeros((len(pairs), n_cont), dtype=torch.bool)  # [B, L]
    for i, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise ValueError("context and continuation must each encode to at least one token "
                             "(nothing predicts a first token, and an empty answer has no log-prob)")
        pos[i] = len(ctx) - 1 + torch.arange(n_cont).clamp(max=len(cont) - 1)
        valid[i, : len(cont)] = True
    pos, valid = pos.to(device), valid.to(device)
    picked = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()  # [B, L, V]
    targets = ids.gather(1, pos + 1)  # [B, L]
    lp = picked.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)  # [B, L]
    sums = (lp * valid).sum(-1)  # [B]
    return [(float(s), len(cont)) for s, (_, cont) in zip(sums.tolist(), pairs)]


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    num_samples: int = 1,
    temperature: float = 0.0,
    stop: str = "</answer>",
) -> list[list[Generation]]:
    """Completions for each prompt: greedy when ``temperature == 0`` (then ``num_samples`` must be 1), else sampled.

    Prompts are left-padded (decoder-only models continue from the right end) and batched; generation stops at EOS
    or at ``stop``. Returns one list of ``num_samples`` generations per prompt.
    """
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; set temperature > 0 to sample several")
    results: list[list[Generation]] = []
    for start in range(0, len(prompts), batch_size):
        results.extend(
            _generate_batch(model, tokenizer, prompts[start : start + batch_size], max_new_tokens, num_samples,
                            temperature, stop)
        )
    return results


def _generate_batch(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                    max_new_tokens: int, num_samples: int, temperature: float, stop: str) -> list[list[Generation]]:
    device = _device(model)
    pad = pad_token_id(tokenizer)
    ids, mask = pad_sequences([encode(tokenizer, p) for p in prompts], pad, left=True)  # [B, T], left-padded
    width = ids.shape[1]
    kwargs = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_k=0)
    with plain_generation_config(model):  # greedy is the argmax, sampling softmax(logits / T): no shipped defaults
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            stop_strings=[stop] if stop else None,
            tokenizer=tokenizer if stop else None,
            **kwargs,
        )  # [B * num_samples, T + new]
    new = out[:, width:].tolist()  # the single device→host sync of the batch
    gens = [_decode(tokenizer, row, pad, stop) for row in new]
    return [gens[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def _decode(tokenizer: PreTrainedTokenizerBase, row: list[int], pad: int, stop: str) -> Generation:
    eos = tokenizer.eos_token_id
    n = len(row)
    for j, tid in enumerate(row):
        if tid == eos or tid == pad:
            # count the EOS the model chose to emit, never the padding generate() adds after a finished row
            n = j + 1 if tid == eos else j
            break
    text = tokenizer.decode(row[:n], skip_special_tokens=True)
    if stop and stop in text:
        text = text[: text.index(stop) + len(stop)]
    return Generation(text, n)
