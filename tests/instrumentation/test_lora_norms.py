"""‖(α/r)BA‖_F through r×r products against the explicitly formed product and peft's own delta weight."""

from __future__ import annotations

import math

import torch

from discrepancy.instrumentation.lora_norms import find_lora_modules, lora_delta_norm, lora_delta_norms, lora_grad_norms

from instr_models import make_lora_model, token_nll


def test_delta_norm_matches_explicit_product() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40, generator=gen)
    b = torch.randn(25, 3, generator=gen)
    explicit = float(torch.linalg.matrix_norm((2.5 * b.double()) @ a.double()))
    assert math.isclose(lora_delta_norm(a, b, 2.5), explicit, rel_tol=1e-10)
    assert lora_delta_norm(a, torch.zeros(25, 3), 2.5) == 0.0


def test_modules_of_a_peft_model_match_peft_delta_weight() -> None:
    model = make_lora_model(alpha=12.0, r=4)
    modules = find_lora_modules(model)
    assert [m.label for m in modules] == [
        "layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj", "layers.1.self_attn.q_proj",
        "layers.1.self_attn.v_proj",
    ]
    peft_layers = [mod for _, mod in model.named_modules() if hasattr(mod, "get_delta_weight")]
    for ours, layer in zip(modules, peft_layers):
        assert ours.scaling == 3.0
        ref = float(torch.linalg.matrix_norm(layer.get_delta_weight("default").double()))
        assert math.isclose(lora_delta_norm(ours.lora_a, ours.lora_b, ours.scaling), ref, rel_tol=1e-5)
    batched = lora_delta_norms(modules)  # stacked by shape: the same numbers as one module at a time
    single = [lora_delta_norm(m.lora_a, m.lora_b, m.scaling) for m in modules]
    assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(batched, single, strict=True))


def test_a_scale_set_after_the_modules_are_found_is_the_one_measured() -> None:
    """An α schedule changes peft's scaling between steps: the norms read it at each use (peft's own delta weight
    is the reference)."""
    from discrepancy.modeling.lora_growth import set_scale

    model = make_lora_model(alpha=12.0, r=4)
    modules = find_lora_modules(model)
    with torch.no_grad():
        for m in modules:
            m.lora_b.normal_()
    set_scale(model, 0.5)
    peft_layers = [mod for _, mod in model.named_modules() if hasattr(mod, "get_delta_weight")]
    for ours, layer in zip(modules, peft_layers):
        ref = float(torch.linalg.matrix_norm(layer.get_delta_weight("default").double()))
        assert ours.scaling == 0.5 and math.isclose(lora_delta_norms([ours])[0], ref, rel_tol=1e-5)


def test_grad_norm_per_module_adds_up_to_total() -> None:
    model = make_lora_model()
    modules = find_lora_modules(model)
    assert all(math.isnan(v) for v in lora_grad_norms(modules))
    ids = torch.randint(8, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    token_nll(model, ids).backward()
    total = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.requires_grad))
    per_module = lora_grad_norms(modules)
    assert math.isclose(math.sqrt(sum(v * v for v in per_module)), total, rel_tol=1e-9)
    for m, v in zip(modules, per_module, strict=True):  # each module against its own two gradients
        own = math.sqrt(float(m.lora_a.grad.double().pow(2).sum()) + float(m.lora_b.grad.double().pow(2).sum()))
        assert math.isclose(v, own, rel_tol=1e-12)
