"""The graph-captured decode loop against transformers `generate`: same tokens greedily, same distribution sampled."""

from __future__ import annotations

import types

import pytest
import torch

from discrepancy.rollout.graphs import Decoders, decode_tokens, sample_graphed


def _prompts(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def test_greedy_tokens_equal_generate_with_left_padding(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n", "12-5+1\n", "7\n"])  # three widths: left padding differs
    ours = decode_tokens(tiny_model, ids, mask, max_new_tokens=12, eos_id=tiny_tokenizer.eos_token_id, greedy=True,
                         min_new_tokens=12)
    ref = tiny_model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, eos_token_id=tiny_tokenizer.eos_token_id,
                              pad_token_id=tiny_tokenizer.pad_token_id)[:, ids.size(1):]
    assert ours.shape == ref.shape == (3, 12)
    assert torch.equal(ours, ref)
    # A second call that reuses the same cache: stale keys from the first must not leak in.
    decoders = Decoders()
    for _ in range(2):
        again = decode_tokens(tiny_model, ids, mask, max_new_tokens=12, eos_id=tiny_tokenizer.eos_token_id,
                              greedy=True, min_new_tokens=12, decoders=decoders)
        assert torch.equal(again, ref)


def test_one_cache_per_model_grows_and_left_pads_shorter_prompts(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    eos = tiny_tokenizer.eos_token_id
    kw = dict(do_sample=False, max_new_tokens=6, min_new_tokens=6, eos_token_id=eos,
              pad_token_id=tiny_tokenizer.pad_token_id)
    narrow = _prompts(tiny_tokenizer, ["3+4\n", "7\n"])
    wide = _prompts(tiny_tokenizer, ["1+2+3+4+5+6+7+8+9+10+11+12+13+14+15+16+17+18+19+20+21+22+23+24+25\n", "7\n"])
    decoders = Decoders()
    for ids, mask in (narrow, wide, narrow):  # grows at the wide call; the narrow one is then padded into it
        ours = decode_tokens(tiny_model, ids, mask, max_new_tokens=6, eos_id=eos, greedy=True, min_new_tokens=6,
                             decoders=decoders)
        ref = tiny_model.generate(input_ids=ids, attention_mask=mask, **kw)[:, ids.size(1):]
        assert torch.equal(ours, ref)
    assert len(decoders.by_key) == 1  # one static cache, however the widths vary
    (dec,) = decoders.by_key.values()
    assert dec.length % 64 == 0 and dec.length >= wide[0].size(1) + 6 > 64


def test_no_new_tokens_gives_an_empty_completion(tiny_tokenizer, tiny_model):
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n"])
    out = decode_tokens(tiny_model.eval(), ids, mask, max_new_tokens=0, eos_id=tiny_tokenizer.eos_token_id)
    assert out.shape == (1, 0)


def test_sliding_window_models_are_not_graphable(tiny_tokenizer, tiny_model):
    """Sliding-window cache layers count positions in a Python int (a graph would recompile every token): the
    trainer sends such models to `sample_completions`, and the graphed path refuses them with a clear error."""
    from transformers import Qwen2ForCausalLM

    from discrepancy.modeling import tiny_model_config
    from discrepancy.rollout.graphs import graphable

    config = tiny_model_config(tiny_tokenizer)
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 8, 1
    config.layer_types = ["full_attention", "sliding_attention"]
    model = Qwen2ForCausalLM(config).eval()
    assert graphable(tiny_model) and not graphable(model)
    # Mistral slides by default (no layer_types list): its static cache says so, and that is what is asked.
    from transformers import MistralConfig

    mistral = MistralConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, sliding_window=16)
    assert not graphable(torch.nn.Module()) and not graphable(types.SimpleNamespace(config=mistral))
    with pytest.raises(ValueError, match="sliding-window"):
        sample_graphed(model, tiny_tokenizer, ["3+4\n"], group_size=2, max_new_tokens=5)


def test_sampled_first_token_follows_softmax_of_logits_over_temperature(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n"])
    n, temperature = 4000, 0.7
    ids, mask = ids.repeat(n, 1), mask.repeat(n, 1)
    torch.manual_seed(0)
    first = decode_tokens(tiny_model, ids, mask, max_new_tokens=1, eos_id=tiny_tokenizer.eos_token_id,
                          temperature=temperature)[:, 0]
    with torch.no_grad():
        logits = tiny_model(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1]
    p = torch.softmax(logits / temperature, -1)
    freq = torch.bincount(first, minlength=p.numel()).float() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-3).all()  # every token's frequency within 5 standard errors


def test_min_new_tokens_forbids_eos_and_early_stop_masks(tiny_tokenizer, tiny_model):
    ids, mask = _prompts(tiny_tokenizer, ["1+1\n"])
    eos = tiny_tokenizer.eos_token_id
    # EOS made the likeliest token everywhere: only the minimum length holds it back.
    tiny_model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_fill(-1, torch.tensor([eos]), 1e4))
    out = decode_tokens(tiny_model, ids.repeat(5, 1), mask.repeat(5, 1), max_new_tokens=40, eos_id=eos,
                        min_new_tokens=3)
    assert (out[:, :3] != eos).all() and (out[:, 3] == eos).all()
    assert out.size(1) == 16  # every row finished: stopped at the first check after EOS


def test_sample_graphed_rollouts_and_lora_restored(tiny_tokenizer, tiny_model, sampled_with_lora):
    _, roll = sampled_with_lora(sample_graphed, tiny_model, tiny_tokenizer)
    assert roll.prompt_ids.size(1) % 64 == 0  # static widths: few compiled shapes on a GPU


@pytest.mark.slow
def test_compiled_step_tracks_in_place_weight_changes(tiny_tokenizer):
    """The compiled path (inductor on CPU; the CUDA-graph capture itself needs a GPU): the same tokens as the eager
    loop on every call, also after the weights change in place, as they do between sampling steps (a captured
    graph reads the weights where they are, so a stale copy would go unnoticed)."""
    from discrepancy.modeling import build_tiny_model

    eager, compiled = (build_tiny_model(tiny_tokenizer, seed=0).eval() for _ in range(2))
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n", "12-5+1\n"])
    kw = dict(max_new_tokens=8, eos_id=tiny_tokenizer.eos_token_id, greedy=True, min_new_tokens=8)
    gen, wants = torch.Generator().manual_seed(0), []
    for _ in range(2):
        for _ in range(2):  # the second call of each round runs a warm step
            want = decode_tokens(eager, ids, mask, compile_step=False, **kw)
            assert torch.equal(decode_tokens(compiled, ids, mask, compile_step=True, **kw), want)
        wants.append(want)
        with torch.no_grad():
            for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
                noise = 0.5 * a.abs().mean() * torch.randn(a.shape, generator=gen)
                a.add_(noise)
                b.add_(noise)
    assert not torch.equal(wants[0], wants[1])  # the change matters: stale weights would have been caught
    # Another row count gets its own cache and graph; each call must use its own. A different completion length
    # reuses a warm graph (its inputs do not depend on it), and a prompt longer than the cache grows it.
    three = _prompts(tiny_tokenizer, ["12+34-5*6\n", "7\n", "8-1\n"])
    long_prompt = _prompts(tiny_tokenizer, ["1+2+3+4+5+6+7+8+9+10+11+12+13+14+15+16+17+18+19+20\n", "5\n"])
    for i, m, t in ((ids, mask, 8), three + (8,), (ids, mask, 5), three + (8,), (ids, mask, 8), long_prompt + (8,),
                    (ids, mask, 8)):
        args = dict(kw, max_new_tokens=t, min_new_tokens=t)
        want = decode_tokens(eager, i, m, compile_step=False, **args)
        assert torch.equal(decode_tokens(compiled, i, m, compile_step=True, **args), want)


def test_a_replaced_weight_tensor_rebuilds_the_decoder(tiny_tokenizer, tiny_model):
    """A captured graph reads weights by address: after a tensor is swapped out, the old decoder must not be reused."""
    tiny_model.eval()
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n", "7\n"])
    decoders = Decoders()
    kw = dict(max_new_tokens=6, eos_id=tiny_tokenizer.eos_token_id, greedy=True, min_new_tokens=6, decoders=decoders)
    decode_tokens(tiny_model, ids, mask, **kw)
    first = decoders.get(tiny_model, 2, ids.size(1) + 6, False)
    assert decoders.get(tiny_model, 2, ids.size(1) + 6, False) is first  # in-place use keeps it
    head = tiny_model.lm_head
    head.weight = torch.nn.Parameter(head.weight.detach().flip(0).clone())  # a new tensor: other tokens win
    assert decoders.get(tiny_model, 2, ids.size(1) + 6, False) is not first
    want = tiny_model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6,
                               min_new_tokens=6, eos_token_id=tiny_tokenizer.eos_token_id,
                               pad_token_id=tiny_tokenizer.pad_token_id)[:, ids.size(1):]
    assert torch.equal(decode_tokens(tiny_model, ids, mask, **kw), want)


def test_packed_grouped_query_attention_equals_transformers_sdpa():
    """One new token over grouped keys/values: the packed call gives transformers' own SDPA attention."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from discrepancy.rollout.graphs import _packed_gqa_attention

    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    query = torch.randn(4, 6, 1, 8, generator=gen)  # 6 query heads over 2 key/value heads
    key, value = torch.randn(4, 2, 10, 8, generator=gen), torch.randn(4, 2, 10, 8, generator=gen)
    mask = torch.ones(4, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., :4] = False  # a left-padded row
    mask[2, ..., 7:] = False  # positions not yet written
    for m in (mask, None):
        ours, _ = _packed_gqa_attention(module, query, key, value, m, scaling=0.3)
        ref, _ = sdpa_attention_forward(module, query, key, value, m, scaling=0.3)
        assert ours.shape == ref.shape == (4, 1, 6, 8)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    per_head = mask.expand(4, 6, 1, 10).clone()
    per_head[1, 4:, ..., :2] = False  # the second key/value head's query heads see less of row 1
    torch.testing.assert_close(_packed_gqa_attention(module, query, key, value, per_head, scaling=0.3)[0],
                               sdpa_attention_forward(module, query, key, value, per_head, scaling=0.3)[0],
                               rtol=1e-5, atol=1e-6)
    several = torch.randn(4, 6, 3, 8, generator=gen)  # more than one query token: transformers' path, same numbers
    torch.testing.assert_close(_packed_gqa_attention(module, several, key, value, None, scaling=0.3)[0],
                               sdpa_attention_forward(module, several, key, value, None, scaling=0.3)[0])


def test_greedy_tokens_of_a_grouped_query_model_equal_generate(tiny_tokenizer):
    from discrepancy.modeling import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, seed=3, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
                             intermediate_size=64).eval()
    ids, mask = _prompts(tiny_tokenizer, ["3+4\n", "12-5+1\n"])
    eos = tiny_tokenizer.eos_token_id
    ours = decode_tokens(model, ids, mask, max_new_tokens=10, eos_id=eos, greedy=True, min_new_tokens=10)
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, min_new_tokens=10,
                         eos_token_id=eos, pad_token_id=tiny_tokenizer.pad_token_id)[:, ids.size(1):]
    assert torch.equal(ours, ref)
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    assert model.config._attn_implementation == "sdpa"  # the model's own setting is never touched
    assert AttentionInterface._global_mapping["sdpa"] is sdpa_attention_forward  # the swap is undone


@pytest.mark.slow
def test_a_step_that_recompiles_per_token_is_not_captured():
    """A compiled step that depends on a per-token Python value would be frozen by a CUDA graph: the check before
    the capture catches the recompile, warns, and the decoder runs uncaptured with the right numbers."""
    from discrepancy.modeling.compiled import own_code
    from discrepancy.rollout.graphs import _Decoder

    seen = {"tokens": 0}

    def step(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        seen["tokens"] += 1  # read as a constant by the compiled code: a new value means a recompile
        return token.float() * seen["tokens"] + position

    dec = _Decoder(None, torch.ones(1, 1), torch.compile(own_code(step), backend="eager"),
                   torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), capture=True)
    dec.token.fill_(3)
    assert dec.step(dec.token, dec.position).item() == 3.0  # compiled for tokens == 1
    with pytest.warns(RuntimeWarning, match="not captured"):
        out = dec._checked_step()
    assert out.item() == 6.0 and not dec.capture
