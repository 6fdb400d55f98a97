"""The base-model fingerprint: equal for equal weights however they are stored or adapted, different as soon as
one weight moves."""

from __future__ import annotations

import copy

import torch

from discrepancy.modeling import attach_lora, build_char_tokenizer, build_tiny_model, load_local_model, save_local_model
from discrepancy.modeling.fingerprint import weights_fingerprint


def test_equal_weights_give_one_fingerprint_and_any_change_another(tmp_path) -> None:
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=0, hidden_size=16, intermediate_size=32, num_layers=1)
    fp = weights_fingerprint(model)
    assert fp == weights_fingerprint(build_tiny_model(tok, seed=0, hidden_size=16, intermediate_size=32, num_layers=1))
    assert fp != weights_fingerprint(build_tiny_model(tok, seed=1, hidden_size=16, intermediate_size=32, num_layers=1))
    reloaded, _ = load_local_model(save_local_model(model, tok, tmp_path / "base"), dtype=torch.float32)
    assert weights_fingerprint(reloaded) == fp
    assert weights_fingerprint(attach_lora(copy.deepcopy(model), 2, 4.0, ["q_proj"], 0.0)) == fp  # adapter left out
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert weights_fingerprint(half) == weights_fingerprint(copy.deepcopy(half).to(torch.float32))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.model.layers[0].mlp.down_proj.weight[3, 5] += 1e-3  # one weight, possibly outside the sampled ones
    assert weights_fingerprint(moved) != fp
