"""The LLC's evaluation loss on a run: K(w) = token-mean KL(p_{w*} ‖ p_w) at fixed contexts. Checked against
torch.distributions' KL (a second implementation), and for what makes it a valid LLC loss: K(w*) = 0, ∇K(w*) = 0,
K ≥ 0 around w*, where the NLL of the same completions has a non-zero gradient."""

from __future__ import annotations

import pytest
import torch

from discrepancy.analysis.llc.evalset import (
    completion_tokens, self_kl, snapshot_targets, token_nll, tokenize_pairs,
)

PAIRS = [("2+3=", "5"), ("1+4=", "5 ok"), ("3+3=", "6"), ("12+2=", "14")]


@pytest.fixture(scope="module")
def lora_model():
    from discrepancy.modeling import attach_lora, build_char_tokenizer, build_tiny_model

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=0, hidden_size=16, intermediate_size=32, num_layers=1)
    model = attach_lora(base, 2, 4.0, ("q_proj", "v_proj"), 0.0).eval()
    with torch.no_grad():  # a trained-looking adapter: B ≠ 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    return model, tok


def _lora(model) -> list[torch.nn.Parameter]:  # noqa: ANN001
    return [p for name, p in model.named_parameters() if "lora_" in name]


def test_self_kl_matches_torch_distributions(lora_model) -> None:  # noqa: ANN001
    model, tok = lora_model
    batches = tokenize_pairs(PAIRS, tok, batch_size=3)  # two batches of different widths
    targets = snapshot_targets(model, batches)
    assert sum(int(t["positions"].numel()) for t in targets) == completion_tokens(batches)
    saved = [p.detach().clone() for p in _lora(model)]
    with torch.no_grad():
        for p in _lora(model):
            p.add_(0.3 * torch.randn_like(p))
        try:
            for b, t in zip(batches, targets):
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
                mask = b["labels"][:, 1:] != -100  # [B, T-1]: positions that predict a completion token or EOS
                now = torch.distributions.Categorical(logits=logits[mask].double())
                then = torch.distributions.Categorical(logits=t["target"].double())
                expected = torch.distributions.kl_divergence(then, now).mean()
                assert float(self_kl(model, t)) == pytest.approx(float(expected), rel=1e-3)  # fp32 sums
                assert float(expected) > 0
        finally:
            for p, s in zip(_lora(model), saved):
                p.copy_(s)


def test_snapshot_is_an_exact_minimum_of_self_kl_but_not_of_the_nll(lora_model) -> None:  # noqa: ANN001
    model, tok = lora_model
    batch = tokenize_pairs(PAIRS, tok, batch_size=8)[0]
    target = snapshot_targets(model, [batch])[0]
    params = _lora(model)
    k = self_kl(model, target)
    grads = torch.autograd.grad(k, params)
    assert abs(float(k.detach())) < 1e-6
    assert max(float(g.abs().max()) for g in grads) < 1e-5  # ∇K(w*) = 0: w* is a critical point
    nll_grads = torch.autograd.grad(token_nll(model, batch), params)
    assert torch.cat([g.reshape(-1) for g in nll_grads]).norm() > 1e-2  # the NLL of the same tokens is not flat
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(5):  # K ≥ 0 at random nearby points
            shift = [0.1 * torch.randn(p.shape, generator=gen) for p in params]
            for p, s in zip(params, shift):
                p.add_(s)
            assert float(self_kl(model, target)) > 0
            for p, s in zip(params, shift):
                p.sub_(s)
