"""Sampling: completion masks on hand cases, grouped rollouts, and log-probs that ignore left padding."""

from __future__ import annotations

import torch

from discrepancy.modeling import attach_lora
from discrepancy.modeling.logprobs import token_logprobs
from discrepancy.rollout.generate import sample_completions
from discrepancy.rollout.rollouts import completion_mask

EOS, PAD = 2, 0


def test_completion_mask_hand_cases():
    ids = torch.tensor([
        [5, 6, EOS, PAD, PAD],  # EOS at 2: mask through the EOS
        [EOS, PAD, PAD, PAD, PAD],  # immediate EOS: one token
        [5, 6, 7, 8, 9],  # no EOS: truncated, all tokens count
        [5, EOS, 6, EOS, PAD],  # only the first EOS ends it
    ])
    mask, truncated = completion_mask(ids, EOS)
    assert mask.tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0],
    ]
    assert truncated.tolist() == [False, False, True, False]


def test_sample_completions_groups_masks_and_eos(tiny_tokenizer, tiny_model):
    torch.manual_seed(0)
    model = attach_lora(tiny_model, 2, 4.0, ["q_proj", "v_proj"])
    prompts = ["3+4\n", "12-5+1\n"]  # different lengths: the first is left-padded
    roll = sample_completions(model, tiny_tokenizer, prompts, group_size=3, max_new_tokens=6)
    n, t = 6, roll.completion_ids.size(1)
    assert roll.prompt_ids.shape[0] == n and roll.input_ids.shape == (n, roll.prompt_ids.size(1) + t)
    assert t <= 6
    # Rows are grouped by prompt: rows 0-2 carry prompt 0, rows 3-5 prompt 1.
    for row in range(n):
        real = roll.prompt_ids[row][roll.prompt_mask[row].bool()]
        assert tiny_tokenizer.decode(real) == prompts[row // 3]
    assert roll.prompt_mask[0, 0] == 0 and roll.prompt_mask[3, 0] == 1  # left padding of the shorter prompt
    mask, truncated = completion_mask(roll.completion_ids, tiny_tokenizer.eos_token_id)
    assert torch.equal(mask, roll.completion_mask) and torch.equal(truncated, roll.truncated)
    # Tokens after the first EOS are padding, and the decoded text is what the mask covers.
    for row in range(n):
        kept = roll.completion_ids[row][roll.completion_mask[row].bool()]
        assert (roll.completion_ids[row][~roll.completion_mask[row].bool()] == tiny_tokenizer.pad_token_id).all()
        assert roll.completions[row] == tiny_tokenizer.decode(kept, skip_special_tokens=True)


def test_eos_suppressed_gives_fixed_length_truncated(tiny_tokenizer, tiny_model):
    torch.manual_seed(1)
    roll = sample_completions(tiny_model, tiny_tokenizer, ["1+1\n"], group_size=4, max_new_tokens=5,
                              min_new_tokens=5)
    assert roll.completion_ids.shape == (4, 5)
    assert roll.truncated.all() and roll.completion_mask.sum() == 20


def test_eos_model_stops_after_one_token(tiny_tokenizer, tiny_model, bias_towards_eos):
    # Force EOS: every completion is exactly [EOS].
    bias_towards_eos(tiny_model, tiny_tokenizer.eos_token_id)
    roll = sample_completions(tiny_model, tiny_tokenizer, ["2+2\n", "9-1\n"], group_size=2, max_new_tokens=4)
    assert roll.completion_ids.shape == (4, 1)
    assert roll.completion_mask.tolist() == [[1]] * 4
    assert not roll.truncated.any() and roll.completions == [""] * 4


def test_min_new_tokens_holds_back_the_eos_of_an_eos_model(tiny_tokenizer, tiny_model, bias_towards_eos):
    # The model above ends every completion at once; min_new_tokens = 3 forces 3 other tokens, then its EOS.
    bias_towards_eos(tiny_model, tiny_tokenizer.eos_token_id)
    torch.manual_seed(2)
    roll = sample_completions(tiny_model, tiny_tokenizer, ["2+2\n", "9-1\n"], group_size=2, max_new_tokens=6,
                              min_new_tokens=3)
    assert roll.completion_mask.sum(1).tolist() == [4] * 4  # 3 tokens + EOS
    assert (roll.completion_ids[:, :3] != tiny_tokenizer.eos_token_id).all()
    assert (roll.completion_ids[:, 3] == tiny_tokenizer.eos_token_id).all() and not roll.truncated.any()


def test_token_logprobs_ignore_left_padding(tiny_tokenizer, tiny_model):
    tiny_model.eval()
    prompts = ["7+1\n", "12+13\n"]
    enc = tiny_tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    completion = torch.tensor([[20, 21, 22], [23, 24, 25]])  # [2, 3]
    ids = torch.cat([enc["input_ids"], completion], 1)  # [2, P+3]
    attn = torch.cat([enc["attention_mask"], torch.ones_like(completion)], 1)
    with torch.no_grad():
        logp, ent = token_logprobs(tiny_model, ids, attn, enc["input_ids"].size(1), with_entropy=True)
        # Independent truth: the padded row alone, without padding, through the plain forward.
        p0 = tiny_tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
        alone = torch.tensor([p0 + completion[0].tolist()])
        lsm = torch.log_softmax(tiny_model(alone).logits[0], -1)
        manual = torch.stack([lsm[len(p0) - 1 + j, completion[0, j]] for j in range(3)])
    assert torch.allclose(logp[0], manual, atol=1e-5)
    assert ent.shape == (2, 3) and (ent > 0).all() and (ent <= torch.log(torch.tensor(len(tiny_tokenizer)))).all()


def test_static_cache_path_matches_the_dynamic_cache(tiny_tokenizer, tiny_model):
    # Near-zero temperature makes sampling greedy, so both cache implementations must produce the same tokens;
    # the static path also pads prompts to a fixed width multiple (fewer shapes to compile on GPU).
    from discrepancy.rollout.rollouts import STATIC_PAD_MULTIPLE

    prompts = ["3+4\n", "12-5+1\n"]
    kw = dict(group_size=2, max_new_tokens=6, temperature=1e-4)
    torch.manual_seed(0)
    dynamic = sample_completions(tiny_model, tiny_tokenizer, prompts, **kw)
    torch.manual_seed(0)
    static = sample_completions(tiny_model, tiny_tokenizer, prompts, static_cache=True, **kw)
    assert static.prompt_ids.size(1) % STATIC_PAD_MULTIPLE == 0
    assert static.completions == dynamic.completions
    assert torch.equal(static.completion_mask, dynamic.completion_mask)


def _lora_with_update(model):
    model = attach_lora(model, 2, 4.0, ["q_proj", "v_proj"])
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a non-zero adapter, so merging matters
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_shared_prompt_sampling_draws_the_tokens_of_plain_generate(tiny_tokenizer, tiny_model, monkeypatch):
    # Prompts encoded once and their cache repeated G times must give generate's own draws for the same seed:
    # the repeated-batch path (no prefilled cache) is plain transformers `generate`.
    import discrepancy.rollout.generate as sampling

    model = _lora_with_update(tiny_model)
    prompts = ["3+4\n", "12-5+1\n", "100*2-7\n"]  # different lengths: left padding inside the shared cache
    calls = []
    real = sampling.shared_prompt_cache

    def counting(*args, **kw):
        calls.append(args[1].shape)
        return real(*args, **kw)

    for kw in ({}, {"temperature": 0.7, "top_p": 0.9}, {"min_new_tokens": 10}):
        monkeypatch.setattr(sampling, "shared_prompt_cache", counting)
        torch.manual_seed(5)
        shared = sample_completions(model, tiny_tokenizer, prompts, group_size=4, max_new_tokens=10, **kw)
        monkeypatch.setattr(sampling, "shared_prompt_cache", lambda *a, **k: None)
        torch.manual_seed(5)
        plain = sample_completions(model, tiny_tokenizer, prompts, group_size=4, max_new_tokens=10, **kw)
        assert torch.equal(shared.completion_ids, plain.completion_ids)
        assert shared.completions == plain.completions
    assert len(calls) == 3 and calls[0][0] == 3  # the shared path ran, on the 3 distinct prompts


def test_shared_prompt_sampling_feeds_generate_only_the_uncached_tokens(tiny_tokenizer, tiny_model):
    seen = []
    hook = tiny_model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    torch.manual_seed(0)
    roll = sample_completions(tiny_model, tiny_tokenizer, ["3+4\n", "12-5+1\n"], group_size=4, max_new_tokens=3,
                              min_new_tokens=3)
    hook.remove()
    p = roll.prompt_ids.size(1)
    # Distinct prompts but their last token once, then generate's first forward: the last prompt token of all 8 rows.
    assert seen[0] == (2, p - 1) and seen[1] == (8, 1)


def test_a_models_own_generation_defaults_do_not_change_the_sampled_policy(tiny_tokenizer, tiny_model):
    """A local model may ship e.g. a repetition penalty in generation_config.json: sampling must still draw from
    softmax(logits / T), the distribution GRPO's ratios assume, and leave the model's config as it was."""
    from discrepancy.modeling import build_tiny_model

    clean = build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    shipped = tiny_model  # the fixture: same seed and sizes, same weights
    shipped.generation_config.repetition_penalty = 50.0
    shipped.generation_config.no_repeat_ngram_size = 1
    kw = dict(group_size=4, max_new_tokens=12, min_new_tokens=12)
    torch.manual_seed(0)
    ours = sample_completions(shipped, tiny_tokenizer, ["3+4\n"], **kw)
    torch.manual_seed(0)
    ref = sample_completions(clean, tiny_tokenizer, ["3+4\n"], **kw)
    assert torch.equal(ours.completion_ids, ref.completion_ids)
    assert shipped.generation_config.repetition_penalty == 50.0  # restored
    # The defaults do bite when generate is left to apply them: no token repeats within a completion then.
    torch.manual_seed(0)
    raw = shipped.generate(input_ids=ours.prompt_ids, attention_mask=ours.prompt_mask, do_sample=True, top_k=0,
                           max_new_tokens=12, min_new_tokens=12)[:, ours.prompt_ids.size(1):]
    assert all(len(set(row.tolist())) == 12 for row in raw)
    assert any(len(set(row.tolist())) < 12 for row in ref.completion_ids)
