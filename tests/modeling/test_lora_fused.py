"""The fused LoRA forward against peft's own: same outputs and gradients, and peft's path wherever it must apply."""

from __future__ import annotations

import pytest
import torch

from discrepancy.modeling import attach_lora
from discrepancy.modeling.lora_fold import adapter_disabled
from discrepancy.modeling.lora_fused import fused_lora

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(model, dropout: float = 0.0):
    model = attach_lora(model, 4, 8.0, TARGETS, dropout)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B = 0 at init would hide a wrong adapter path
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _loss_and_grads(model, ids: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout masks: the same draws in the same order on both paths
    logits = model(input_ids=ids).logits
    loss = torch.log_softmax(logits, -1)[..., 3].mean()
    loss.backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("dropout,fold", [(0.0, True), (0.0, False), (0.3, True)])
def test_outputs_and_gradients_equal_peft(tiny_model, dropout, fold, monkeypatch):
    """Folded (the fixture's layers are small), fused (folding off), and fused under active dropout, which a fold
    has no place for: peft's outputs and gradients each time."""
    import discrepancy.modeling.lora_fused as lora_fused
    from peft.tuners.lora.layer import Linear

    if not fold:
        monkeypatch.setattr(lora_fused, "FOLD_MAX_ELEMENTS", 0)
    addmm_shapes = []
    real_addmm = torch.addmm
    monkeypatch.setattr(lora_fused.torch, "addmm",
                        lambda *a, **k: addmm_shapes.append(isinstance(a[0], torch.nn.Parameter)) or real_addmm(*a, **k))
    model = _lora(tiny_model, dropout).train()
    ids = torch.randint(4, 60, (3, 11))
    want_logits, want_grads = _loss_and_grads(model, ids)
    with fused_lora(model) as fused:
        monkeypatch.setattr(Linear, "forward", lambda *a, **k: pytest.fail("fell back to peft's forward"))
        got_logits, got_grads = _loss_and_grads(model, ids)
        monkeypatch.undo()
    assert fused == 2 * len(TARGETS)  # every LoRA layer of both decoder layers
    # A fold adds B·A to the base weight (a parameter); the fused form adds the adapter's output to the base output.
    assert len(addmm_shapes) == fused and set(addmm_shapes) == {fold and dropout == 0.0}
    tol = {"rtol": 1e-5, "atol": 1e-5} if fold and dropout == 0.0 else {"rtol": 1e-6, "atol": 1e-6}  # a fold rounds
    torch.testing.assert_close(got_logits, want_logits, **tol)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=10 * tol["rtol"], atol=tol["atol"] / 10)


def test_forwards_come_back_even_after_an_error(tiny_model):
    model = _lora(tiny_model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    with pytest.raises(KeyError):
        with fused_lora(model):
            assert "forward" in layer.__dict__
            raise KeyError("boom")
    assert "forward" not in layer.__dict__
    with fused_lora(model, enabled=False) as fused:
        assert fused == 0 and "forward" not in layer.__dict__


def test_a_disabled_adapter_still_computes_the_base_model(tiny_model):
    """The KL reference inside the fused block: the adapter off gives exactly the base model's logits."""
    ids = torch.randint(4, 60, (2, 9))
    with torch.no_grad():
        base_logits = tiny_model(input_ids=ids).logits
    model = _lora(tiny_model).eval()
    with torch.no_grad(), fused_lora(model), adapter_disabled(model):
        assert torch.equal(model(input_ids=ids).logits, base_logits)
    with torch.no_grad(), fused_lora(model), model.disable_adapter():
        assert torch.equal(model(input_ids=ids).logits, base_logits)


def test_mixed_dtypes_and_variants_keep_peft_forward(tiny_model):
    """A bf16 base under an fp32 adapter keeps peft's casts (equal outputs); a DoRA layer is not swapped at all."""
    from peft import LoraConfig, get_peft_model

    ids = torch.randint(4, 60, (2, 7))
    model = _lora(tiny_model.to(torch.bfloat16))
    lora_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert lora_a.dtype == torch.float32  # the adapter stays fp32 on a bf16 base
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with fused_lora(model):
            assert torch.equal(model(input_ids=ids).logits, want)
    from discrepancy.modeling import build_tiny_model
    from discrepancy.modeling.tokenizer import build_char_tokenizer

    dora = get_peft_model(build_tiny_model(build_char_tokenizer(), hidden_size=32, num_layers=1, num_heads=2,
                                           intermediate_size=64),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True))
    with fused_lora(dora) as fused:
        assert fused == 0


def test_merged_and_bypassed_layers_run_their_base_layer_and_give_back_any_forward(tiny_model):
    """Folded or bypassed, a LoRA layer runs as its base layer: not registered as a submodule (the state dict keeps
    its keys), and the forward it had before (here the fused one) comes back after the block."""
    from discrepancy.modeling.lora_fold import _merged_forward, bypassed_lora, folded_lora

    model = _lora(tiny_model).eval()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    keys = list(model.state_dict())
    ids = torch.randint(4, 60, (2, 9))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with fused_lora(model):
            fused_forward = layer.__dict__["forward"]
            for block in (bypassed_lora, folded_lora):
                with block(model) as applied:
                    assert applied and layer.forward.__func__ is _merged_forward
                    assert list(model.state_dict()) == keys
                    logits = model(input_ids=ids).logits
                assert layer.__dict__["forward"] is fused_forward
            torch.testing.assert_close(logits, unmerged, rtol=1e-5, atol=1e-5)  # the folded adapter: same model
        assert "forward" not in layer.__dict__


@pytest.mark.parametrize("alpha,rslora", [(3.0, False), (5.0, True)])
def test_any_scaling_matches_peft_to_float_rounding(tiny_tokenizer, alpha, rslora):
    """A scale that is not a power of two (α/r = 0.75; rsLoRA's α/√r = 2.5) changes the rounding, not the result."""
    from peft import LoraConfig, get_peft_model

    from discrepancy.modeling import build_tiny_model

    base = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=alpha, target_modules=TARGETS, use_rslora=rslora))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(alpha / (2.0 if rslora else 4.0))
    ids = torch.randint(4, 60, (3, 11))
    want_logits, want_grads = _loss_and_grads(model, ids)
    with fused_lora(model) as fused:
        got_logits, got_grads = _loss_and_grads(model, ids)
    assert fused == 2 * len(TARGETS)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fold", [True, False])
def test_forward_mode_derivatives_through_the_fused_layers(tiny_model, monkeypatch, fold):
    """The linearisation instrument pushes tangents of the LoRA weights through `functional_call` + `jvp`: the folded
    and the fused forward must each give peft's directional derivative."""
    import discrepancy.modeling.lora_fused as lora_fused

    if not fold:
        monkeypatch.setattr(lora_fused, "FOLD_MAX_ELEMENTS", 0)
    from torch.func import functional_call, jvp

    from discrepancy.instrumentation.linearisation import eager_attention

    model = _lora(tiny_model).eval()
    ids = torch.randint(4, 60, (2, 7))
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    gen = torch.Generator().manual_seed(2)
    tangents = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}

    def logits(p):
        return functional_call(model, p, (ids,)).logits

    with eager_attention(model):  # torch has no forward-mode derivative of the fused CPU attention kernel
        want = jvp(logits, (params,), (tangents,))
        with fused_lora(model):
            from peft.tuners.lora.layer import Linear

            peft_forward = Linear.forward
            Linear.forward = lambda *a, **k: pytest.fail("fell back to peft's forward")
            try:
                got = jvp(logits, (params,), (tangents,))
            finally:
                Linear.forward = peft_forward
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
