"""The CPU decode loop against transformers: greedy tokens equal `generate`'s, every sampled step's logits equal a
full forward of the sequence so far, the first token follows softmax(logits / T), EOS and lengths as `generate`."""

from __future__ import annotations

import pytest

import torch

import discrepancy.rollout.draw as draw_module
from discrepancy.rollout.loop import decode_groups, sample_eager
from discrepancy.modeling.logprobs import position_ids_for

PROMPTS = ["3+4\n", "12-5+1\n", "7\n"]  # three widths: left padding differs


def _distinct(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def test_greedy_tokens_equal_generate_on_the_repeated_batch(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    ids, mask = _distinct(tiny_tokenizer, PROMPTS)
    g, eos = 2, tiny_tokenizer.eos_token_id
    ours = decode_groups(tiny_model, ids, mask, g, max_new_tokens=12, eos_id=eos, min_new_tokens=12, greedy=True)
    ref = tiny_model.generate(input_ids=ids.repeat_interleave(g, 0), attention_mask=mask.repeat_interleave(g, 0),
                              do_sample=False, max_new_tokens=12, min_new_tokens=12, eos_token_id=eos,
                              pad_token_id=tiny_tokenizer.pad_token_id)[:, ids.size(1):]
    assert ours.shape == ref.shape == (6, 12)
    assert torch.equal(ours, ref)
    assert not ours.is_inference()  # an ordinary tensor: later training forwards may save it for backward


def test_every_sampled_step_sees_the_logits_of_a_full_forward(tiny_tokenizer, tiny_model, monkeypatch):
    """The shared prompt cache, positions and masks under sampling: the logits each draw got equal those of one
    forward over prompt and completion so far, for every row and step."""
    tiny_model.eval()
    ids, mask = _distinct(tiny_tokenizer, PROMPTS)
    g, t, temperature = 3, 9, 0.8
    seen = []
    real = draw_module.draw_tokens

    def recording(logits, *args, **kwargs):
        seen.append(logits.clone())
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(draw_module, "draw_tokens", recording)
    from discrepancy.rollout.kv_reserve import ReservedLayer

    writes = []
    real_update = ReservedLayer.update
    def spying(self, keys, *args, **kwargs):
        writes.append(self._fits(keys, self.length + keys.shape[-2]))  # in place, not the concatenation fallback
        return real_update(self, keys, *args, **kwargs)

    monkeypatch.setattr(ReservedLayer, "update", spying)
    torch.manual_seed(0)
    tokens = decode_groups(tiny_model, ids, mask, g, max_new_tokens=t, eos_id=tiny_tokenizer.eos_token_id,
                           min_new_tokens=t, temperature=temperature)
    full_ids = torch.cat([ids.repeat_interleave(g, 0), tokens], 1)
    full_mask = torch.cat([mask.repeat_interleave(g, 0), torch.ones_like(tokens)], 1)
    with torch.no_grad():
        logits = tiny_model(input_ids=full_ids, attention_mask=full_mask,
                            position_ids=position_ids_for(full_mask)).logits  # [N, P+T, V]
    p = ids.size(1)
    assert len(seen) == t and not torch.equal(tokens[0::g], tokens[1::g])  # rows of a group differ: sampled
    assert len(writes) == t * tiny_model.config.num_hidden_layers and all(writes)  # every token written in place
    for i, step_logits in enumerate(seen):
        expect = logits[:, p - 1 + i].float()
        finite = torch.isfinite(step_logits)  # EOS set to -inf before the minimum length
        torch.testing.assert_close(step_logits[finite], expect[finite], rtol=1e-5, atol=1e-5)


def test_sampled_first_token_follows_softmax_of_logits_over_temperature(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    ids, mask = _distinct(tiny_tokenizer, ["3+4\n"])
    n, temperature = 4000, 0.7
    torch.manual_seed(0)
    first = decode_groups(tiny_model, ids, mask, n, max_new_tokens=1, eos_id=tiny_tokenizer.eos_token_id,
                          temperature=temperature)[:, 0]
    with torch.no_grad():
        logits = tiny_model(input_ids=ids, attention_mask=mask).logits[0, -1]
    p = torch.softmax(logits.double() / temperature, -1)
    freq = torch.bincount(first, minlength=p.numel()).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-3).all()


def test_min_new_tokens_holds_back_eos_and_the_loop_stops_when_all_rows_ended(tiny_tokenizer, tiny_model):
    ids, mask = _distinct(tiny_tokenizer, ["1+1\n", "22\n"])
    eos = tiny_tokenizer.eos_token_id
    tiny_model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_fill(-1, torch.tensor([eos]), 1e4))
    out = decode_groups(tiny_model.eval(), ids, mask, 3, max_new_tokens=40, eos_id=eos, min_new_tokens=3)
    assert out.shape == (6, 4)  # on the CPU every token is checked: stops right after the first EOS of all rows
    assert (out[:, :3] != eos).all() and (out[:, 3] == eos).all()


def test_one_token_prompts_and_no_new_tokens(tiny_tokenizer, tiny_model):
    """A one-token prompt has nothing to share (no prompt cache); zero new tokens gives an empty completion."""
    tiny_model.eval()
    ids, mask = _distinct(tiny_tokenizer, ["7", "5"])
    eos = tiny_tokenizer.eos_token_id
    ours = decode_groups(tiny_model, ids, mask, 2, max_new_tokens=5, eos_id=eos, min_new_tokens=5, greedy=True)
    ref = tiny_model.generate(input_ids=ids.repeat_interleave(2, 0), attention_mask=mask.repeat_interleave(2, 0),
                              do_sample=False, max_new_tokens=5, min_new_tokens=5, eos_token_id=eos,
                              pad_token_id=tiny_tokenizer.pad_token_id)[:, 1:]
    assert torch.equal(ours, ref)
    assert decode_groups(tiny_model, ids, mask, 2, max_new_tokens=0, eos_id=eos).shape == (4, 0)


def test_sample_eager_rollouts_and_lora_restored(tiny_tokenizer, tiny_model, sampled_with_lora):
    model, roll = sampled_with_lora(sample_eager, tiny_model, tiny_tokenizer)
    assert roll.prompt_ids.shape == (6, 7)  # the tokenizer's own padding, no static widths
    # Greedy through the merged adapter equals greedy generate on the unmerged one (a near-zero temperature).
    torch.manual_seed(0)
    cold = sample_eager(model, tiny_tokenizer, ["3+4\n"], group_size=2, max_new_tokens=6, min_new_tokens=6,
                        temperature=1e-5)
    ref = model.generate(input_ids=cold.prompt_ids, attention_mask=cold.prompt_mask, do_sample=False,
                         max_new_tokens=6, min_new_tokens=6, eos_token_id=tiny_tokenizer.eos_token_id,
                         pad_token_id=tiny_tokenizer.pad_token_id)[:, cold.prompt_ids.size(1):]
    assert torch.equal(cold.completion_ids, ref)


def test_a_diverged_model_stops_sampling_with_a_clear_error(tiny_tokenizer, tiny_model):
    from discrepancy.rollout.draw import SamplingError

    with torch.no_grad():
        tiny_model.model.norm.weight.fill_(float("nan"))
    try:
        sample_eager(tiny_model, tiny_tokenizer, ["3+4\n"], group_size=2, max_new_tokens=4)
    except SamplingError as err:
        assert "diverged" in str(err)
    else:
        raise AssertionError("NaN logits were sampled from")


def test_the_plan_samples_with_the_sampler_of_its_device(tiny_tokenizer, tiny_model, monkeypatch):
    """``run.sampler = "auto"``. CPU: our eager loop; compiling (forced here) with a model the graphed decode serves:
    the graphed decode; a GPU without compiling (forced here): transformers' generate."""
    from types import SimpleNamespace

    from discrepancy.rollout import samplers
    from discrepancy.trainers import speed

    run = SimpleNamespace(compile=True, sampler="auto")
    instruments = SimpleNamespace(shared_prompt_forward=True, fold_lora=True)
    with pytest.warns(RuntimeWarning, match="run.compile applies to CUDA"):
        assert speed.plan_speed(run, instruments, tiny_model).sampler == "loop"  # run.compile: CUDA only
    monkeypatch.setattr(speed, "compiling_pays", lambda device: True)
    plan = speed.plan_speed(run, instruments, tiny_model)
    assert plan.sampler == "graphs" and samplers.SAMPLERS[plan.sampler] is samplers.sample_graphed
    monkeypatch.setattr(samplers, "graphable", lambda model: False)
    assert speed.plan_speed(run, instruments, tiny_model).sampler == "loop"
    monkeypatch.setattr(speed, "compiling_pays", lambda device: False)
    monkeypatch.setattr(samplers, "own_decode_loop_pays", lambda device: False)  # a GPU, as the policy sees it
    assert speed.plan_speed(run, instruments, tiny_model, warn=False).sampler == "generate"
    assert samplers.SAMPLERS["generate"] is samplers.sample_completions


@pytest.mark.parametrize("name, expected", [("generate", "sample_completions"), ("loop", "sample_eager"),
                                            ("graphs", "sample_graphed")])
def test_a_named_sampler_is_used_whatever_the_device(tiny_model, monkeypatch, name, expected):
    from discrepancy.rollout import samplers

    assert samplers.SAMPLERS[samplers.resolve_sampler(name, tiny_model, False)] is getattr(samplers, expected)
    assert samplers.SAMPLERS[samplers.resolve_sampler(name, tiny_model, True)] is getattr(samplers, expected)


def test_graphs_sampler_is_refused_where_it_cannot_serve(tiny_model, monkeypatch):
    """On the CPU, and for a model with sliding-window layers; accepted for the tiny model on a (pretended) GPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from discrepancy.errors import DiscrepancyError
    from discrepancy.rollout import samplers

    for name in ("auto", "generate", "loop"):
        samplers.check_sampler(name, tiny_model)
    with pytest.raises(DiscrepancyError, match="needs the model on a GPU"):
        samplers.check_sampler("graphs", tiny_model)
    with pytest.raises(DiscrepancyError, match="must be one of"):
        samplers.check_sampler("fast", tiny_model)
    monkeypatch.setattr(samplers, "_on_cuda", lambda model: True)
    samplers.check_sampler("graphs", tiny_model)
    sliding = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1, use_sliding_window=True,
                                           sliding_window=4, layer_types=["sliding_attention"] * 2))
    with pytest.raises(DiscrepancyError, match="sliding-window"):
        samplers.check_sampler("graphs", sliding)


def test_sliding_window_layers_keep_their_own_cache_and_equal_generate(tiny_tokenizer):
    """A cache with sliding-window layers is not reserved (they trim themselves); the loop still equals `generate`."""
    from transformers import Qwen2ForCausalLM

    from discrepancy.modeling import tiny_model_config

    config = tiny_model_config(tiny_tokenizer, hidden_size=32, num_heads=2, intermediate_size=64)
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 6, 1
    config.layer_types = ["full_attention", "sliding_attention"]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    ids, mask = _distinct(tiny_tokenizer, ["12-5+1\n", "3+4\n"])
    eos = tiny_tokenizer.eos_token_id
    ours = decode_groups(model, ids, mask, 2, max_new_tokens=10, eos_id=eos, min_new_tokens=10, greedy=True)
    ref = model.generate(input_ids=ids.repeat_interleave(2, 0), attention_mask=mask.repeat_interleave(2, 0),
                         do_sample=False, max_new_tokens=10, min_new_tokens=10, eos_token_id=eos,
                         pad_token_id=tiny_tokenizer.pad_token_id)[:, ids.size(1):]
    assert torch.equal(ours, ref)
