"""The fixed evaluation set of an LLC over a run and its loss: the snapshot's own predictions as the truth.

The GRPO objective is not a likelihood, so the LLC of an adapter is taken on one. The contexts are fixed: the first
recorded (prompt, completion) pairs of the run, the same at every snapshot; the positions scored are those that
predict a completion token or the EOS after it, n of them, so nβ = n/log n. The loss at a snapshot w* is the token-mean

    K(w) = (1/n) Σ_positions KL(p_{w*}(·|context) ‖ p_w(·|context)),

the cross-entropy of the model against the snapshot's own next-token distributions minus their entropy: the
expected NLL of completions the snapshot itself would sample, with the sampling done exactly (a sum over the
vocabulary) rather than by drawing tokens. Why this loss and not the NLL of the recorded tokens (``token_nll``):
K ≥ 0 with K(w*) = 0, so w* is an exact minimum, the condition under which λ̂ is an LLC at all. The recorded
completions were drawn by earlier policies (and at a sampling temperature below 1 late in training), so the
snapshot is not a minimum of their NLL: its gradient there is O(1) (0.27 at the first snapshot of the demo run,
0.8–1.5 later, with 27,648 LoRA parameters), SGLD chains slide downhill from w*, and every estimate came out
negative. Noise-free regression in the closed-form tests is the same construction: there the loss is K itself.
(Stored settings name the evaluation set the "probe" set, ``probe_pairs`` and so on: those keys stay, so that older
result folders keep resuming.)
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


class KLBatch(TypedDict):
    """A slice of the evaluation set with the snapshot's next-token log-probabilities at the scored positions."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [m] flat indices into the [B·(T−1)] next-token predictions that are scored
    target: torch.Tensor  # [m, V] float32: log p_{w*}(·|context) at those positions


def _next_token_logits(model: torch.nn.Module, batch: EvalBatch | KLBatch) -> torch.Tensor:
    """Logits of every next-token prediction, flattened: [B·(T−1), V] (the last position predicts nothing)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # [B, T-1, V]
    return logits.reshape(-1, logits.shape[-1]).float()


@torch.no_grad()
def snapshot_targets(model: torch.nn.Module, batches: Sequence[EvalBatch]) -> list[KLBatch]:
    """The evaluation batches with the model's current next-token log-probs as targets (one forward per batch).

    Memory: m × V floats per batch (the tiny model: 105-token vocabulary; a 150k vocabulary with 200 scored
    positions takes 120 MB).
    """
    out = []
    for b in batches:
        positions = (b["labels"][:, 1:] != -100).reshape(-1).nonzero().squeeze(1)  # [m]
        target = torch.log_softmax(_next_token_logits(model, b)[positions], dim=-1)  # [m, V]
        out.append(KLBatch(input_ids=b["input_ids"], attention_mask=b["attention_mask"], positions=positions,
                           target=target))
    return out


def self_kl(model: torch.nn.Module, batch: KLBatch) -> torch.Tensor:
    """Token-mean KL(p_{w*} ‖ p_w) over the scored positions (≥ 0, and 0 at the snapshot the targets came from)."""
    logp = torch.log_softmax(_next_token_logits(model, batch)[batch["positions"]], dim=-1)  # [m, V]
    target = batch["target"]
    return (target.exp() * (target - logp)).sum(-1).mean()


def pairs_fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    """Fingerprint of the evaluation set: a different set of pairs gives different LLCs."""
    return hashlib.sha256(json.dumps([list(p) for p in pairs]).encode()).hexdigest()[:16]
