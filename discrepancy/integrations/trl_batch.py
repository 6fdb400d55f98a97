"""From what TRL's GRPOTrainer hands its loss to the project's `StepBatch`, and TRL's metric names to series names.

TRL generates one batch of completions, shuffles its rows and splits it into the gradient-accumulation micro-batches
(`GRPOTrainer._prepare_inputs`). So a micro-batch holds completions drawn at random from several prompt groups, not
whole groups as in `discrepancy train`. Each row carries its (generation, row) index, so that the step's batch can
be put back group by group and each row's text and reward components found again after the shuffle.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from discrepancy.instrumentation.hooks import StepBatch

#: Keys the trainer adds to TRL's generation output before the shuffle (TRL's loss reads neither).
GEN_KEY, ROW_KEY = "discrepancy_generation", "discrepancy_row"
#: Sample fields of a generation that are not reward components.
NOT_REWARDS = ("advantage", "length")


@dataclass
class Generation:
    """One TRL generation batch, in generation order (rows g*G .. g*G+G-1 are the completions of prompt g)."""

    prompts: list[str]  # the prompt text the model saw (chat template applied, padding removed): sampled rows only
    completions: list[str]  # every row's
    fields: dict[str, np.ndarray]  # per row: one column per reward function, "advantage", "length"


@dataclass
class MicroBatch:
    """One micro-batch of the accumulation window as TRL's loss saw it at θ_t."""

    inputs: dict[str, Any]  # TRL's prepared inputs (prompt_ids, completion_ids, masks, advantages, ...)
    logp: torch.Tensor  # [n, T] training forward's log-probs (detached)
    entropy: torch.Tensor | None  # [n, T] its token entropies
    loss: float  # the value TRL backpropagated for this micro-batch (already divided by the accumulation steps)


@dataclass
class StepRecord:
    """The micro-batches of one optimizer step, filled as TRL's inner loop runs."""

    micro: list[MicroBatch] = field(default_factory=list)
    order: np.ndarray | None = None  # stacked row j of the StepBatch is micro-batch row order[j] (None: as stacked)


def loss_mask(inputs: dict[str, Any]) -> torch.Tensor:
    """The completion tokens TRL's loss counts: the completion mask, times the tool mask when tools are used."""
    mask = inputs["completion_mask"]
    return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask


def pad_cat(parts: list[torch.Tensor], left: bool, value: float = 0) -> torch.Tensor:
    """Concatenate ``[n_k, L_k]`` tensors along rows, padding each to the longest L (on the left or the right)."""
    width = max(p.shape[1] for p in parts)
    padded = [F.pad(p, (width - p.shape[1], 0) if left else (0, width - p.shape[1]), value=value) for p in parts]
    return torch.cat(padded, 0)


def _row_advantages(inputs: dict[str, Any]) -> torch.Tensor:
    """[n] advantages: TRL's are per completion; a subclass's per-token ones are averaged over the loss mask."""
    adv = inputs["advantages"]
    if adv.dim() == 1:
        return adv
    mask = loss_mask(inputs).to(adv.dtype)
    return (adv * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def step_batch(record: StepRecord, generations: dict[int, Generation], pad_id: int,
               group_size: int) -> tuple[StepBatch, torch.Tensor, torch.Tensor | None]:
    """(the step's `StepBatch`, the training forward's log-probs [N, T], its entropies [N, T] or None).

    The K micro-batches are stacked and padded to common widths. When the step's rows are whole prompt groups
    (TRL's default: one generation batch per optimizer step) they are put back in generation order, so rows
    ``g*G .. g*G+G-1`` are prompt g's completions as `StepBatch` promises, and ``micro_batches`` lists where each
    micro-batch's rows went (shuffled completions, not whole groups). Otherwise the rows stay in micro-batch order
    with ``group_size = 1``. ``record.order`` keeps the permutation, for tensors computed later in micro-batch
    order (the post-step forward). ``micro_weights`` are 1/K: TRL divides each micro-batch's loss by the
    accumulation steps, so the full-batch loss (whose gradient `.grad` holds) is the mean of their own losses.
    """
    micro = record.micro
    k = len(micro)
    ins = [m.inputs for m in micro]
    entropies = [m.entropy for m in micro]
    refs = [i.get("ref_per_token_logps") for i in ins]
    cols = {
        "prompt_ids": pad_cat([i["prompt_ids"] for i in ins], left=True, value=pad_id),
        "prompt_mask": pad_cat([i["prompt_mask"] for i in ins], left=True),
        "completion_ids": pad_cat([i["completion_ids"] for i in ins], left=False, value=pad_id),
        "completion_mask": pad_cat([loss_mask(i) for i in ins], left=False),
        "logp": pad_cat([m.logp for m in micro], left=False),
        "entropy": pad_cat(entropies, left=False) if all(e is not None for e in entropies) else None,
        "old": pad_cat([i["old_per_token_logps"] if i.get("old_per_token_logps") is not None else m.logp
                        for i, m in zip(ins, micro)], left=False),
        "ref": pad_cat(refs, left=False) if all(r is not None for r in refs) else None,
        "adv": torch.cat([_row_advantages(i) for i in ins]),
    }
    rows = _row_keys(ins)
    sizes = [int(i["completion_ids"].shape[0]) for i in ins]
    owner = np.repeat(np.arange(k), sizes)  # micro-batch of each stacked row
    order = _group_order(rows, group_size)
    if order is None:
        group_size = 1
    else:
        cols = {name: None if t is None else t[torch.as_tensor(order, device=t.device)] for name, t in cols.items()}
        rows, owner = [rows[j] for j in order], owner[order]
    record.order = order
    texts, components = _row_texts(rows, generations, len(owner))
    return StepBatch(
        input_ids=torch.cat([cols["prompt_ids"], cols["completion_ids"]], 1),
        attention_mask=torch.cat([cols["prompt_mask"], cols["completion_mask"]], 1),
        completion_mask=cols["completion_mask"], old_logp=cols["old"], ref_logp=cols["ref"], advantages=cols["adv"],
        group_size=group_size,
        micro_batches=[np.flatnonzero(owner == j).tolist() for j in range(k)],
        micro_weights=[1.0 / k] * k,
        completions=texts,
        reward_components=components,
    ), cols["logp"], cols["entropy"]


def _row_keys(ins: list[dict[str, Any]]) -> list[tuple[int, int]] | None:
    """(generation, row) of every stacked row; None when TRL's inputs do not carry them."""
    if not all(GEN_KEY in i for i in ins):
        return None
    return [(int(g), int(r)) for i in ins for g, r in zip(i[GEN_KEY].tolist(), i[ROW_KEY].tolist())]


def _group_order(rows: list[tuple[int, int]] | None, group_size: int) -> np.ndarray | None:
    """The permutation that puts the rows in generation order, when they are whole groups of ``group_size``
    (every group's G rows present once); None otherwise."""
    if rows is None or group_size < 1 or len(rows) % group_size:
        return None
    order = np.array(sorted(range(len(rows)), key=rows.__getitem__))
    keys = [rows[j] for j in order]
    for start in range(0, len(keys), group_size):
        block = keys[start:start + group_size]
        gen, first = block[0]
        if first % group_size or block != [(gen, first + j) for j in range(group_size)]:
            return None
    return order


def _row_texts(rows: list[tuple[int, int]] | None, generations: dict[int, Generation],
               n: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """Completion text and reward components of each of the ``n`` rows, found through its (generation, row) key;
    NaN / "" where unknown."""
    if rows is None:
        return [""] * n, {}
    names = sorted({name for g, _ in rows if g in generations for name in generations[g].fields})
    components = {name: np.full(n, math.nan) for name in names if name not in NOT_REWARDS}
    texts = []
    for j, (g, r) in enumerate(rows):
        gen = generations.get(g)
        texts.append(gen.completions[r] if gen is not None else "")
        for name, column in components.items():
            if gen is not None and name in gen.fields:
                column[j] = gen.fields[name][r]
    return texts, components


def layout_batch(m: MicroBatch, k: int) -> StepBatch:
    """The batch the micro-batch hooks see after micro-batch ``m`` of ``k``: its own tensors, the step's layout.

    Those hooks read only the layout (how many micro-batches, their weights) and `.grad`; the full batch exists
    once the last micro-batch has run. TRL's micro-batches of one step are equal splits, so each has ``n`` rows.
    """
    i = m.inputs
    n = int(i["completion_ids"].shape[0])
    return StepBatch(
        input_ids=torch.cat([i["prompt_ids"], i["completion_ids"]], 1),
        attention_mask=torch.cat([i["prompt_mask"], i["completion_mask"]], 1),
        completion_mask=loss_mask(i), old_logp=m.logp, ref_logp=i.get("ref_per_token_logps"),
        advantages=_row_advantages(i), group_size=1,
        micro_batches=[list(range(j * n, (j + 1) * n)) for j in range(k)], micro_weights=[1.0 / k] * k)


def prompt_key(prompt: str) -> str:
    """A short stable id of a prompt's text (the samples table's ``prompt_id``: completions of one prompt share it)."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


def decode_rows(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor, *, skip_special: bool) -> list[str]:
    """Each row's text from its masked tokens (padding dropped)."""
    return [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=skip_special)
            for row, m in zip(ids.cpu(), mask.cpu())]
