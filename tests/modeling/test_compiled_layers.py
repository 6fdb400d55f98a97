"""discrepancy.modeling.compiled: decoder layers run through one compiled function, with eager's numbers.

The reference is the same model run eagerly: log-probs and LoRA gradients must agree to float32 rounding.
Compiling on CPU (inductor's C++ backend) takes seconds, so the model is shared and the tests are marked slow.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from discrepancy.modeling import attach_lora, build_tiny_model
from discrepancy.modeling.compiled import CompiledLayers, compiled_layers, decoder_layers
from discrepancy.modeling.lora_fold import adapter_disabled
from discrepancy.modeling.logprobs import token_logprobs

pytestmark = pytest.mark.slow
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_model(tiny_tokenizer):
    torch.manual_seed(0)
    model = build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64)
    model = attach_lora(model, 4, 8.0, TARGETS)
    with torch.no_grad():  # B ≠ 0: the adapter changes the function
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _batch(length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (4, length), generator=gen)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # one left-padded row
    return ids, attn


_COMPILED: dict[int, CompiledLayers] = {}  # one per model, as a run's speed plan keeps it: compiled once


def _logp_and_grads(model, compiled: bool, length: int = 20) -> tuple[torch.Tensor, list[torch.Tensor]]:
    ids, attn = _batch(length)
    model.zero_grad(set_to_none=True)
    layers = _COMPILED.setdefault(id(model), CompiledLayers(model))
    with layers.active(enabled=compiled) as active:
        assert active == compiled
        logp, _ = token_logprobs(model, ids, attn, 8)
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
    return logp.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_compiled_layers_give_eager_logprobs_and_gradients(lora_model):
    graphs = counters["stats"]["unique_graphs"]
    eager_logp, eager_grads = _logp_and_grads(lora_model, compiled=False)
    logp, grads = _logp_and_grads(lora_model, compiled=True)
    torch.testing.assert_close(logp, eager_logp, rtol=1e-5, atol=1e-5)
    scale = max(g.abs().max() for g in eager_grads)
    assert scale > 0
    for g, ref in zip(grads, eager_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5 * scale)
    # One compiled function serves all three layers: the first layer (input without grad) and the rest, not one each.
    assert counters["stats"]["unique_graphs"] - graphs <= 2
    # A new sequence length still gives eager's numbers (dynamo recompiles, dynamic in the length).
    eager_logp, _ = _logp_and_grads(lora_model, compiled=False, length=16)
    logp, _ = _logp_and_grads(lora_model, compiled=True, length=16)
    torch.testing.assert_close(logp, eager_logp, rtol=1e-5, atol=1e-5)


def test_no_grad_forwards_stay_eager(lora_model):
    """The reference forward (no grad, adapter off) inside the block: eager's numbers, and nothing compiled."""
    ids, attn = _batch()
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        with_adapter, _ = token_logprobs(lora_model, ids, attn, 8)
        with adapter_disabled(lora_model):
            eager, _ = token_logprobs(lora_model, ids, attn, 8)
            with compiled_layers(lora_model):
                inside, _ = token_logprobs(lora_model, ids, attn, 8)
    assert torch.equal(inside, eager)
    assert (with_adapter - eager).abs().max() > 1e-3  # the switch mattered
    assert counters["stats"]["unique_graphs"] == graphs


def test_layers_get_their_own_forward_back_even_on_error(lora_model):
    layers = decoder_layers(lora_model)
    assert layers is not None and len(layers) == 3
    assert layers is lora_model.get_base_model().model.layers
    with pytest.raises(RuntimeError, match="boom"):
        with compiled_layers(lora_model):
            assert all("forward" in vars(layer) for layer in layers)
            raise RuntimeError("boom")
    assert not any("forward" in vars(layer) for layer in layers)
    with compiled_layers(lora_model, enabled=False) as active:  # disabled: nothing replaced
        assert not active and not any("forward" in vars(layer) for layer in layers)


def test_layer_stack_of_a_model_without_a_layers_attribute():
    """GPT-2 keeps its blocks in ``transformer.h``: found by the fallback (the largest list of same-typed blocks)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0,
                                       eos_token_id=0))
    assert decoder_layers(model) is model.transformer.h


def test_no_layer_stack_passes_through():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with compiled_layers(model) as active:
        assert not active
        assert model(torch.ones(1, 3)).shape == (1, 3)


def test_forward_mode_transforms_run_the_eager_layers(lora_model):
    """`torch.func.jvp` (the linearisation instrument) inside the block: the same directional derivative."""
    from torch.func import functional_call, jvp

    ids, attn = _batch()
    params = {n: p.detach() for n, p in lora_model.named_parameters() if p.requires_grad}
    tangent = {n: torch.randn_like(p) for n, p in params.items()}

    def f(theta):
        return functional_call(lora_model, theta, kwargs={"input_ids": ids, "attention_mask": attn}).logits.float()

    lora_model.get_base_model().set_attn_implementation("eager")  # no forward-mode rule for CPU fused attention
    try:
        _, eager = jvp(f, (params,), (tangent,))
        with compiled_layers(lora_model):
            _, inside = jvp(f, (params,), (tangent,))
    finally:
        lora_model.get_base_model().set_attn_implementation("sdpa")
    torch.testing.assert_close(inside, eager, rtol=1e-5, atol=1e-5)
