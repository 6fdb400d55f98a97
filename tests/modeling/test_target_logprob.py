"""Chunked fp32 log-probs of target tokens against autograd's log_softmax: values, gradients, entropy."""

from __future__ import annotations

import pytest
import torch

import discrepancy.modeling.logprobs as lp


def _reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logsm = torch.log_softmax(logits.float(), dim=-1)
    return logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7 * 11, 2**24])  # several chunks (7 rows of 11) and one
def test_values_and_gradients_match_log_softmax(monkeypatch, dtype, chunk):
    monkeypatch.setattr(lp, "CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(0)
    base = (3 * torch.randn(4, 6, 11, generator=gen)).to(dtype)
    targets = torch.randint(0, 11, (4, 6), generator=gen)
    weights = torch.randn(4, 6, generator=gen)
    a = base.clone().requires_grad_(True)
    b = base.clone().requires_grad_(True)
    ours, ent = lp._logp_entropy(a, targets, with_entropy=True)
    ref, ref_ent = _reference(b, targets)
    assert ours.dtype == torch.float32 and ours.shape == (4, 6)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent.detach(), rtol=0, atol=1e-5)
    (weights * ours).sum().backward()
    (weights * ref).sum().backward()
    assert a.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # bf16 gradients are rounded once, either way
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=0, atol=tol)


def test_gradcheck_in_double(monkeypatch):
    monkeypatch.setattr(lp, "CHUNK_ELEMENTS", 2 * 5)  # two rows per chunk

    def fn(x: torch.Tensor) -> torch.Tensor:
        return lp._TargetLogprob.apply(x, torch.tensor([0, 4, 2, 1, 3]))

    x = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    # The forward works in fp32 by design, so the numerical Jacobian is checked at fp32 precision.
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-3, atol=1e-3, rtol=1e-3)
