"""Test helpers: a tiny peft-wrapped Qwen2 model built from a config (no hub, fp32, CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model

from discrepancy.modeling.tiny import build_tiny_model
from discrepancy.modeling.tokenizer import build_char_tokenizer
from discrepancy.trainers.grpo import grpo_loss
from discrepancy.instrumentation.hooks import HookRunner, StepBatch, StepContext
from discrepancy.instrumentation.shared import with_shared

# One thread: the tiny model gains nothing from more, and the 2 shared cores are oversubscribed otherwise.
torch.set_num_threads(1)


def make_lora_model(alpha: float = 8.0, r: int = 4, seed: int = 0, random_b: bool = True) -> torch.nn.Module:
    """Tiny Qwen2 (hidden 32) with LoRA on q/v; `random_b` gives B a non-zero start so both factors move."""
    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=seed, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(base, cfg)
    if random_b:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of `ids` [N, L] (a plain likelihood loss for the tests)."""
    logits = model(input_ids=ids).logits[:, :-1]  # [N, L-1, V]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


# ---- a hand-written GRPO-shaped step that drives instruments through the trainer's hook protocol ---------------


def tok_logp(model: torch.nn.Module, ids: torch.Tensor, plen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log π and entropy of the completion tokens ids[:, plen:] (no padding in these tests)."""
    logits = model(input_ids=ids).logits[:, plen - 1 : -1].float()  # [N, T, V]
    lsm = torch.log_softmax(logits, -1)
    lp = lsm.gather(-1, ids[:, plen:, None]).squeeze(-1)  # [N, T]
    return lp, -(lsm.exp() * lsm).sum(-1).detach()


@dataclass
class StepTruth:
    """What the driver knows independently of the instruments, per step."""

    row: dict = field(default_factory=dict)
    raw_grads: list = field(default_factory=list)  # unclipped full gradient, per trainable tensor
    micro_grads: list = field(default_factory=list)  # [K] flattened own gradient of each micro-batch
    theta_t: list = field(default_factory=list)
    theta_next: list = field(default_factory=list)
    loss_pre: float = 0.0
    ctx: StepContext | None = None


def drive(model: torch.nn.Module, instruments: list, *, steps: int = 2, groups: int = 4, group_size: int = 2,
          groups_per_micro: int = 2, plen: int = 4, tlen: int = 6, clip: float = 0.05, lr: float = 1e-2,
          beta: float = 0.0, seed: int = 0) -> list[StepTruth]:
    """Run `steps` GRPO-shaped steps on random rollouts with AdamW and gradient clipping, calling the hooks."""
    gen = torch.Generator().manual_seed(seed)
    runner = HookRunner(with_shared(instruments))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.0)
    n = groups * group_size
    micro = [list(range(g0 * group_size, min(groups, g0 + groups_per_micro) * group_size))
             for g0 in range(0, groups, groups_per_micro)]
    weights = [len(r) / n for r in micro]
    out = []
    for step in range(1, steps + 1):
        ids = torch.randint(8, 90, (n, plen + tlen), generator=gen)
        ids[:, :plen] = ids[::group_size, :plen].repeat_interleave(group_size, 0)  # one prompt per group
        lengths = torch.randint(2, tlen + 1, (n,), generator=gen)
        cmask = (torch.arange(tlen)[None, :] < lengths[:, None]).long()  # [N, T]
        rewards = torch.randn(n, generator=gen)
        adv = (rewards.view(groups, group_size) - rewards.view(groups, group_size).mean(1, keepdim=True)).flatten()
        ref = None
        if beta > 0:
            with torch.no_grad(), model.disable_adapter():
                ref = tok_logp(model, ids, plen)[0]
        old = torch.zeros(n, tlen)

        def loss_from_logp(lp: torch.Tensor, _ids=ids, _m=cmask, _a=adv, _r=ref, _o=old) -> float:
            return sum(w * float(grpo_loss(lp[r], _o[r], None if _r is None else _r[r], _a[r], _m[r],
                                           beta=beta)[0]) for r, w in zip(micro, weights))

        batch = StepBatch(input_ids=ids, attention_mask=torch.ones_like(ids), completion_mask=cmask, old_logp=old,
                          ref_logp=ref, advantages=adv, group_size=group_size, micro_batches=micro,
                          micro_weights=weights, completions=["wait, check it"] * n,
                          reward_components={"correctness": (rewards > 0).float().numpy()})
        ctx = StepContext(step=step, iteration=0, model=model, params=params, batch=batch, loss=loss_from_logp)
        truth = StepTruth(ctx=ctx)
        opt.zero_grad(set_to_none=True)
        logp_all, ent_all = torch.zeros(n, tlen), torch.zeros(n, tlen)
        for k, (rows, w) in enumerate(zip(micro, weights)):
            lp, ent = tok_logp(model, ids[rows], plen)
            old[rows] = lp.detach()
            loss_k = grpo_loss(lp, old[rows], None if ref is None else ref[rows], adv[rows], cmask[rows], beta=beta)[0]
            own = torch.autograd.grad(loss_k, list(params.values()), retain_graph=True)
            truth.micro_grads.append(torch.cat([g.flatten() for g in own]))
            (w * loss_k).backward()
            logp_all[rows], ent_all[rows] = lp.detach(), ent
            truth.row.update(runner.on_micro_backward(ctx, k))
        ctx.logp, ctx.entropy = logp_all, ent_all
        truth.loss_pre = loss_from_logp(logp_all)
        truth.raw_grads = [p.grad.clone() for p in params.values()]
        truth.theta_t = [p.detach().clone() for p in params.values()]
        torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        truth.row.update(runner.on_before_optimizer(ctx))
        opt.step()
        truth.row.update(runner.on_after_optimizer(ctx))
        truth.theta_next = [p.detach().clone() for p in params.values()]
        out.append(truth)
    return out


def digit_reward(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """Share of digits in a completion: varies across an untrained model's samples, so advantages are non-zero."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
