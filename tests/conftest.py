"""Shared fixtures: the embedded tiny model and tokenizer, and a fast training config.

- ``tiny_tokenizer``: the char-level tokenizer of the embedded model (session-scoped, read-only).
- ``tiny_model``: a freshly built random tiny Qwen2 model (function-scoped: tests may wrap or train it).
- ``fast_train_config``: a `TrainConfig` for a seconds-long run (tiny model, 2 prompts × 4 completions, 8 tokens).
- ``bias_towards_eos``: a function ``(model, eos_id)`` that makes a tiny model emit EOS at every position.
- ``sampled_with_lora``: a function ``(sample, tiny_model, tokenizer) -> Rollouts`` that samples through a non-zero
  LoRA adapter with ``sample`` and checks what every sampler owes: grouped rows, masks, prompts, weights restored.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from discrepancy.modeling import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    from discrepancy.modeling import build_tiny_model

    torch.set_num_threads(1)  # the tiny model is fastest on one thread, and the test machine is shared
    return build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture()
def fast_train_config():
    """A config whose 10-step run takes seconds on one CPU thread (two micro-batches per step, all instruments)."""
    from discrepancy.config import apply_overrides
    from discrepancy.trainers.config import TrainConfig

    return apply_overrides(TrainConfig(), [
        "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
        "sft.steps=5", "sft.batch_size=8",
        "lora.rank=2", "lora.alpha=4.0",
        "grpo.num_prompts=2", "grpo.group_size=4", "grpo.max_completion_length=8", "grpo.micro_batch_groups=1",
        "task.num_examples=50",
        "run.steps=10", "run.snapshot_every=5", "run.checkpoint_every=0", "run.samples_per_step=2",
        "run.flush_every=5", "run.threads=1", "run.device=\"cpu\"",
        # every step's post-step measurements, so that a 10-step run checks them at every step (the default, every
        # fourth step, is checked on its own: tests/instrumentation/test_discrepancy_every.py)
        "instruments.discrepancy_every=1",
        # an untrained 10-step run fires early-warning events; their evidence dossier (every completion of the
        # steps after an event, extra snapshots) would change the counts these tests check: tested on its own
        "early_warning.dossier_steps=0",
    ])


def _bias_towards_eos(model: torch.nn.Module, eos_id: int) -> None:
    """Make ``model`` emit EOS at every position: zero hidden state, and a huge bias on the EOS logit."""
    with torch.no_grad():
        model.model.norm.weight.zero_()
    bias = torch.zeros(model.lm_head.out_features)
    bias[eos_id] = 50.0
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)


@pytest.fixture()
def bias_towards_eos():
    """`_bias_towards_eos`: a model that ends every completion at once (for EOS and min-length tests)."""
    return _bias_towards_eos


def _sampled_with_lora(sample, model, tokenizer):  # noqa: ANN001, ANN202
    """Sample 2 prompts × G 3 through a non-zero LoRA adapter and check the common contract of the samplers."""
    from discrepancy.modeling import attach_lora
    from discrepancy.rollout.rollouts import completion_mask

    model = attach_lora(model, 2, 4.0, ["q_proj", "v_proj"])
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = ["3+4\n", "12-5+1\n"]
    roll = sample(model, tokenizer, prompts, group_size=3, max_new_tokens=6)
    assert roll.prompt_ids.size(0) == roll.completion_ids.size(0) == 6
    mask, truncated = completion_mask(roll.completion_ids, tokenizer.eos_token_id)
    assert torch.equal(mask, roll.completion_mask) and torch.equal(truncated, roll.truncated)
    for row in range(6):
        real = roll.prompt_ids[row][roll.prompt_mask[row].bool()]
        assert tokenizer.decode(real) == prompts[row // 3]  # rows group by group
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # merge undone bit for bit
    assert not any("forward" in m.__dict__ for m in model.modules())  # every layer has its own forward back
    return model, roll


@pytest.fixture()
def sampled_with_lora():
    """`_sampled_with_lora`: returns the LoRA model and its `Rollouts` after the checks."""
    return _sampled_with_lora
