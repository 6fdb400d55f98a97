"""Folding LoRA into the base weights for a measurement forward: same values, base restored bit for bit."""

from __future__ import annotations

import pytest
import torch

from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.registry import build_instruments
from discrepancy.modeling.lora_fold import bypassed_lora, folded_lora
from discrepancy.modeling.logprobs import batch_logprobs
from discrepancy.modeling.lora import merged_adapter

from instr_models import drive, make_lora_model
from test_batch_logprobs import _batch


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_folded_forward_equals_unmerged_and_peft_merged_forward() -> None:
    model = make_lora_model()  # B ≠ 0, so the fold changes every targeted weight
    ids, attn = _batch()
    before = _base_weights(model)
    lp, ent = batch_logprobs(model, ids, attn, 7, 4)  # unmerged peft forward
    with folded_lora(model) as folded:
        assert folded
        lp_f, ent_f = batch_logprobs(model, ids, attn, 7, 4)
    with merged_adapter(model):  # second implementation of the merge: peft's own merge_adapter
        lp_m, _ = batch_logprobs(model, ids, attn, 7, 4)
    keep = attn[:, 7:].bool()
    torch.testing.assert_close(lp_f[keep], lp[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_f[keep], ent[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(lp_f[keep], lp_m[keep], rtol=0, atol=1e-5)
    after = _base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # bit-identical base weights
    assert all(not m.merged_adapters for m in model.modules() if hasattr(m, "merged_adapters"))
    assert torch.equal(batch_logprobs(model, ids, attn, 7, 4)[0], lp)  # the unmerged model is back exactly


def test_fold_changes_the_weights_inside_the_block() -> None:
    model = make_lora_model()
    layer = next(m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "merged_adapters"))
    w = layer.get_base_layer().weight
    expected = w.detach() + layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    with folded_lora(model):
        torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-6)
        assert layer.merged


def test_base_is_restored_when_the_body_raises() -> None:
    model = make_lora_model()
    before = _base_weights(model)
    with pytest.raises(RuntimeError), folded_lora(model):
        raise RuntimeError("measurement failed")
    assert all(torch.equal(before[n], p) for n, p in _base_weights(model).items())


def test_no_fold_under_a_disabled_adapter_or_bf16_base() -> None:
    model = make_lora_model()
    ids, attn = _batch()
    with model.disable_adapter():
        base_lp = batch_logprobs(model, ids, attn, 7, 4)[0]
        with folded_lora(model) as folded:
            assert not folded  # folding here would turn the base model into the adapted one
            assert torch.equal(batch_logprobs(model, ids, attn, 7, 4)[0], base_lp)
    bf16 = make_lora_model()
    for n, p in bf16.named_parameters():
        if "lora_" not in n:
            p.data = p.data.to(torch.bfloat16)
    with folded_lora(bf16) as folded:
        assert not folded


@pytest.mark.parametrize(("beta", "random_b"), [(0.0, False), (0.05, False), (0.0, True)])
def test_recorded_series_agree_with_and_without_folding(beta: float, random_b: bool) -> None:
    """All three ways of measuring kl_start: adapter disabled (β = 0), ref_logp (β > 0), θ_0 swapped in (B ≠ 0)."""
    rows = {}
    for fold in (False, True):
        torch.manual_seed(0)  # peft draws A from the global generator
        model = make_lora_model(random_b=random_b)
        cfg = InstrumentationConfig(fold_lora=fold, timing=False, grad_noise=False, rollout_stats=False,
                                    discrepancy_every=1)
        rows[fold] = [t.row for t in drive(model, build_instruments(cfg, model), steps=3, beta=beta)]
    for off, on in zip(rows[False], rows[True], strict=True):
        assert off.keys() == on.keys()
        for k in ("loss_post", "dloss_obs", "kl_realised", "entropy_post", "kl_start", "ratio_q50"):
            assert on[k] == pytest.approx(off[k], abs=1e-5), k


def test_bypass_computes_exactly_the_disabled_adapter_forward() -> None:
    model = make_lora_model()  # B ≠ 0: the adapted model differs from the base
    ids, attn = _batch()
    before = _base_weights(model)
    with model.disable_adapter():
        base_lp = batch_logprobs(model, ids, attn, 7, 4)[0]
    with bypassed_lora(model) as bypassed:
        assert bypassed
        lp = batch_logprobs(model, ids, attn, 7, 4)[0]
    assert torch.equal(lp, base_lp)  # the same computation, so bit for bit
    assert not torch.equal(batch_logprobs(model, ids, attn, 7, 4)[0], base_lp)  # the adapter is active again
    assert all(torch.equal(before[n], p) for n, p in _base_weights(model).items())
