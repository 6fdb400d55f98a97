"""Cold start (DeepSeek-R1): a short supervised phase on formatted solutions before GRPO.

A random tiny model never writes ``<think>…</think><answer>…</answer>`` on its own, so GRPO would see only zero
rewards. A few supervised steps on ``format_solution`` targets teach the format (and some arithmetic); GRPO then
improves correctness. The loss is the token-mean cross-entropy of the target tokens only (prompt tokens are context).
"""

from __future__ import annotations

import random
from typing import Callable

import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.trainers.tasks import Example, format_solution


def sft_batch(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], device: torch.device | str = "cpu",
    completions: dict[str, str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, target_mask), each ``[B, L]``: prompt + solution + EOS, right-padded.

    ``target_mask`` marks the tokens that are predicted (solution and EOS), not the prompt or the padding.
    ``completions`` (prompt_id → text) replaces the worked solutions, e.g. a teacher's (distillation).
    """
    rows, targets = [], []
    for ex in examples:
        p = tokenizer(ex.prompt_text, add_special_tokens=False)["input_ids"]
        text = completions[ex.prompt_id] if completions is not None else format_solution(ex)
        s = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + s)
        targets.append([0] * len(p) + [1] * len(s))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)  # [B, L]
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)  # [B, L]
    tmask = torch.tensor([t + [0] * (width - len(t)) for t in targets], device=device)  # [B, L]
    return ids, attn, tmask


def sft_loss(model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of the target tokens (next-token prediction, fp32 softmax)."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()  # [B, L-1, V]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [B, L-1]
    weight = tmask[:, 1:].to(nll.dtype)  # [B, L-1] the token at position i+1 is predicted from position i
    return (nll * weight).sum() / weight.sum().clamp(min=1.0)


def cold_start(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    completions: dict[str, str] | None = None,
) -> list[float]:
    """Train every trainable parameter of ``model`` for ``steps`` AdamW steps; returns the loss per step.
    ``completions``: the targets by prompt_id instead of the worked solutions (`sft_batch`).

    Batches are drawn with their own ``random.Random(seed)``, so the phase is deterministic given the model's
    initial weights and the torch seed. The learning rate warms up linearly over the first 10 % of the steps.
    """
    if steps <= 0:
        return []
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    rng = random.Random(seed)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        loss = sft_loss(model, *sft_batch(tokenizer, batch, device, completions))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))  # one device sync per step; the phase is short
        if on_step is not None:
            on_step(step, losses[-1])
    return losses
