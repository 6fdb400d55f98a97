"""discrepancy.modeling: tokenizer, tiny model, local loading errors, LoRA merge/unmerge."""

from __future__ import annotations

import pytest
import torch

from discrepancy.modeling import (
    ModelLoadError, attach_lora, build_tiny_model, load_char_tokenizer, load_local_model, merged_adapter,
    save_local_model,
)
from discrepancy.modeling.tokenizer import TAG_TOKENS

TEXT = "What is 12 - 5?\nReply <think>..</think><answer>..</answer>\n<think>12-5=7</think> <answer>7</answer>"


def test_tokenizer_round_trip_and_single_token_tags(tiny_tokenizer, tmp_path):
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == TEXT
    # 4 tags × 2 occurrences are one token each; every other character is one token.
    n_tag_chars = 2 * sum(len(t) for t in TAG_TOKENS)
    assert len(ids) == len(TEXT) - n_tag_chars + 2 * len(TAG_TOKENS)
    for tag in TAG_TOKENS:
        assert len(tiny_tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    # EOS/pad are special (dropped when decoding completions), the tags are not.
    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids + [eos], skip_special_tokens=True) == TEXT
    tiny_tokenizer.save_pretrained(tmp_path)
    again = load_char_tokenizer(tmp_path)
    assert again(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert again.padding_side == "left"


def test_tiny_model_forward_matches_manual_next_token_loss(tiny_tokenizer, tiny_model):
    ids = torch.tensor([tiny_tokenizer("<think>3+4=7</think>", add_special_tokens=False)["input_ids"]])  # [1, L]
    out = tiny_model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.size(1), len(tiny_tokenizer))
    assert tiny_model.dtype == torch.float32
    # Independent check of the loss: mean NLL of each next token, computed position by position.
    logp = torch.log_softmax(out.logits[0], -1)
    manual = -torch.stack([logp[i, ids[0, i + 1]] for i in range(ids.size(1) - 1)]).mean()
    assert torch.allclose(out.loss, manual, atol=1e-6)
    # Same seed, same weights; another seed, other weights.
    same = build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_heads=2, intermediate_size=64)
    other = build_tiny_model(tiny_tokenizer, seed=1, hidden_size=32, num_heads=2, intermediate_size=64)
    assert torch.equal(same(ids).logits, tiny_model(ids).logits)
    assert not torch.allclose(other(ids).logits, tiny_model(ids).logits)


def test_save_and_load_local_model_round_trip(tiny_tokenizer, tiny_model, tmp_path):
    save_local_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    model, tok = load_local_model(tmp_path / "m", dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, tiny_model(ids).logits)
    assert tok.decode(tok("1+2", add_special_tokens=False)["input_ids"]) == "1+2"


def test_load_local_model_errors(tiny_tokenizer, tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_local_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_local_model(tmp_path / "empty")
    from transformers import DistilBertConfig  # an encoder with no causal-LM head in transformers

    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2,
                     hidden_dim=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_local_model(tmp_path / "bert")
    tiny_model.save_pretrained(tmp_path / "no_tok")  # weights but no tokenizer
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_local_model(tmp_path / "no_tok")


def _randomise_lora_b(model: torch.nn.Module) -> None:
    # B = 0 at init makes merged == unmerged trivially; give the adapter a real update first.
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_merged_and_unmerged_lora_agree_and_unmerge_restores(tiny_model):
    model = attach_lora(tiny_model, 4, 8.0, ["q_proj", "v_proj", "down_proj"]).eval()
    _randomise_lora_b(model)
    ids = torch.tensor([[9, 10, 11, 12, 13, 14]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        unmerged = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
        with merged_adapter(model):
            merged = model(ids).logits
        after = model(ids).logits
    assert (unmerged - base).abs().max() > 1e-3  # the adapter changes the output
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(after, unmerged, atol=1e-5)  # W + ΔW − ΔW: equal up to rounding
    for n, p in model.named_parameters():
        assert torch.allclose(p, before[n], atol=1e-6), n


def test_merged_adapter_unmerges_on_exception(tiny_model):
    model = attach_lora(tiny_model, 2, 4.0, ["q_proj"])
    _randomise_lora_b(model)
    weight = next(p for n, p in model.named_parameters() if "q_proj.base_layer.weight" in n)
    before = weight.detach().clone()
    with pytest.raises(RuntimeError):
        with merged_adapter(model):
            assert not torch.allclose(weight, before)  # merged: the base weight holds W + (α/r)BA
            raise RuntimeError("boom")
    assert torch.allclose(weight, before, atol=1e-6)


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}


def _perturb_lora(model: torch.nn.Module, gen: torch.Generator) -> None:
    """A changing adapter, as optimizer steps would make it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.05)


def test_bf16_sample_update_cycles_leave_the_base_weights_bit_identical(tiny_tokenizer, tiny_model):
    from discrepancy.rollout.generate import sample_completions

    torch.manual_seed(0)
    targets = ["q_proj", "v_proj", "down_proj"]
    ids = torch.tensor([[9, 10, 11, 12, 13, 14]])
    # Independent truth that the test can see drift at all: peft's own merge/unmerge cycle in bf16 does not
    # return the base weights exactly (W + ΔW − ΔW is rounded twice).
    plain = attach_lora(build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=2,
                                         intermediate_size=64).to(torch.bfloat16), 4, 8.0, targets).eval()
    _randomise_lora_b(plain)
    start = _base_weights(plain)
    plain.merge_adapter()
    plain.unmerge_adapter()
    assert any(not torch.equal(p, start[n]) for n, p in _base_weights(plain).items())

    model = attach_lora(tiny_model.to(torch.bfloat16), 4, 8.0, targets).eval()
    _randomise_lora_b(model)
    start = _base_weights(model)
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        sample_completions(model, tiny_tokenizer, ["3+4\n"], group_size=2, max_new_tokens=3)
        _perturb_lora(model, gen)
        with torch.no_grad():
            unmerged = model(ids).logits.float()
            with model.disable_adapter():
                base = model(ids).logits.float()
            with merged_adapter(model):
                merged = model(ids).logits.float()  # what sampling sees
        # bf16 tolerance: the merged W + ΔW is rounded to bf16 (relative 2^-8) where the unmerged path adds an
        # fp32 adapter output; the adapter's own effect is much larger, so the check has teeth.
        scale = unmerged.abs().max()
        assert (unmerged - base).abs().max() > 0.1 * scale
        assert (merged - unmerged).abs().max() <= 0.03 * scale
    for name, p in _base_weights(model).items():
        assert torch.equal(p, start[name]), name


def test_lora_target_typo_is_a_config_error(tiny_model):
    from discrepancy.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'lora.target_modules': \['c_attn'\].*q_proj"):
        attach_lora(tiny_model, 2, 4.0, ["q_proj", "c_attn"])


def test_merged_adapter_falls_back_to_peft_for_layouts_it_cannot_fold(tiny_model):
    """DoRA layers are not plain LoRA: the fold declines them and peft's own merge runs, restored bit for bit."""
    from peft import LoraConfig, get_peft_model

    from discrepancy.modeling.lora_fold import fold_plan

    model = get_peft_model(tiny_model, LoraConfig(r=2, lora_alpha=4.0, target_modules=["q_proj", "v_proj"],
                                                  use_dora=True)).eval()
    _randomise_lora_b(model)
    assert fold_plan(model, exact=False) is None
    before = _base_weights(model)
    ids = torch.tensor([[9, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        unmerged = model(ids).logits
        with merged_adapter(model):
            assert any(not torch.equal(p, before[n]) for n, p in _base_weights(model).items())  # really merged
            merged = model(ids).logits
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in _base_weights(model).items())


def test_config_dropout_and_router_jitter_count_as_train_only_randomness(tiny_tokenizer):
    from discrepancy.modeling.modes import deterministic_mode, has_active_dropout

    plain = build_tiny_model(tiny_tokenizer, seed=0).train()
    assert not has_active_dropout(plain)
    with deterministic_mode(plain):
        assert plain.training  # nothing random: no switch (it walks every module)
    for key in ("attention_dropout", "hidden_dropout", "router_jitter_noise"):
        model = build_tiny_model(tiny_tokenizer, seed=0).train()
        setattr(model.config, key, 0.1)
        assert has_active_dropout(model), key
        with deterministic_mode(model):
            assert not model.training
        assert model.training
