"""Component locking: a locked LoRA module gets no gradient, its weights stay bit-identical and its AdamW state is
kept while the unlocked ones train; unlocking resumes it from that state."""

from __future__ import annotations

import pytest
import torch

from discrepancy.errors import ConfigError
from discrepancy.modeling import attach_lora
from discrepancy.trainers.curriculum_config import PhaseConfig
from discrepancy.trainers.locking import apply_lock, check_train_modules, lora_parameters


def _loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float().pow(2).mean()


def test_locked_modules_stay_bit_identical_and_keep_their_optimizer_state(tiny_model) -> None:
    model = attach_lora(tiny_model, 2, 4.0, ["all-linear"])
    params = lora_parameters(model)
    with torch.no_grad():  # B ≠ 0, so every A gets a gradient too
        for name, p in params.items():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    opt = torch.optim.AdamW(list(params.values()), lr=0.01, weight_decay=0.1)  # decay would move a locked weight
    ids = torch.randint(3, 20, (2, 12), generator=torch.Generator().manual_seed(2))
    _loss(model, ids).backward()
    opt.step()
    locked = apply_lock(model, ["mlp"])
    assert locked and all(".mlp." not in n for n in locked)
    assert sorted(locked) == sorted(n for n in params if ".self_attn." in n)
    before = {n: p.detach().clone() for n, p in params.items()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in params.items()}
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        _loss(model, ids).backward()
        opt.step()
    for name, p in params.items():
        if name in locked:
            assert p.grad is None and torch.equal(p, before[name]), name
            assert all(torch.equal(opt.state[p][k], v) for k, v in state[name].items()), name
        else:
            assert not torch.equal(p, before[name]), name
            assert int(opt.state[p]["step"]) == 4
    apply_lock(model, [])  # unlock: the attention adapters continue from their kept moments and step count
    opt.zero_grad(set_to_none=True)
    _loss(model, ids).backward()
    opt.step()
    for name in locked:
        assert not torch.equal(params[name], before[name]) and int(opt.state[params[name]]["step"]) == 2


def test_a_module_part_that_names_nothing_is_one_line(tiny_model) -> None:
    check_train_modules(tiny_model, ["all-linear"], [PhaseConfig("a", train_modules=["mlp", "layers.0", "q_proj"])])
    with pytest.raises(ConfigError, match="'lm_head' names no LoRA module"):  # the output layer is not adapted
        check_train_modules(tiny_model, ["all-linear"], [PhaseConfig("a", train_modules=["lm_head"])])
    with pytest.raises(ConfigError, match="'mlp' names no LoRA module"):  # only q_proj and v_proj are
        check_train_modules(tiny_model, ["q_proj", "v_proj"], [PhaseConfig("a", train_modules=["mlp"])])
