"""The fixed evaluation set of an LLC over a run: recorded (prompt, completion) pairs and their token loss.

The GRPO objective is not a likelihood, so the LLC of an adapter is taken on a likelihood: the token-mean NLL of
completions the run itself produced, the first ones it recorded (a fixed choice, the same at every snapshot). n is
the number of completion tokens, so nβ = n/log n. (Stored settings name it the "probe" set, ``probe_pairs`` and
so on: those keys stay, so that older result folders keep resuming.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypedDict

import torch

from discrepancy.errors import DiscrepancyError


class EvalBatch(TypedDict):
    """Padded token tensors of a slice of the evaluation set, as the model's forward takes them (``model(**b)``);
    labels are -100 outside the completions."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]


def eval_pairs_from_run(run: Any, size: int) -> list[tuple[str, str]]:
    """The first ``size`` recorded (prompt, completion) samples of the run, in recording order (a fixed choice)."""
    df = run.samples()
    if df.empty:
        raise DiscrepancyError(f"{getattr(run, 'path', 'run')} has no recorded samples to build the LLC evaluation "
                               "set from (it was trained with samples_per_step = 0): retrain with samples_per_step "
                               "≥ 1 to estimate its LLC")
    df = df[df["completion"].str.len() > 0].head(size)
    return list(zip(df["prompt"], df["completion"]))


def tokenize_pairs(pairs: Sequence[tuple[str, str]], tokenizer: Any, batch_size: int = 8) -> list[EvalBatch]:
    """Token batches of the pairs; the loss covers the completion tokens and the EOS after them."""
    rows = []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p, c))
    batches: list[EvalBatch] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), pad)  # [B, T]
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for j, (p, c) in enumerate(chunk):
            ids[j, : len(p) + len(c)] = torch.tensor(p + c)
            labels[j, len(p) : len(p) + len(c)] = torch.tensor(c)
            mask[j, : len(p) + len(c)] = 1
        batches.append(EvalBatch(input_ids=ids, attention_mask=mask, labels=labels))
    return batches


def completion_tokens(batches: Sequence[EvalBatch]) -> int:
    """n: the completion tokens the loss averages over."""
    return int(sum(int((b["labels"] != -100).sum()) for b in batches))


def token_nll(model: torch.nn.Module, batch: EvalBatch) -> torch.Tensor:
    """Mean NLL per completion token (transformers' causal-LM loss ignores the -100 labels)."""
    return model(**batch).loss


def pairs_fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    """Fingerprint of the evaluation set: a different set of pairs gives different LLCs."""
    return hashlib.sha256(json.dumps([list(p) for p in pairs]).encode()).hexdigest()[:16]
