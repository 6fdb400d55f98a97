"""The next token of every row, drawn from softmax(logits / T), optionally restricted to the nucleus.

The same distribution as transformers' `generate` with ``do_sample=True, top_k=0``; written here because our decode
loops (`discrepancy.rollout.graphs`, `discrepancy.rollout.loop`) skip `generate`'s per-token loop. How the
draw is made depends on the device (`devices.host_syncs_are_cheap`), for speed only:

- **An accelerator, the exponential race:** argmax pᵢ/Eᵢ with Eᵢ ~ Exp(1). Four elementwise kernels and no host
  sync, where ``torch.multinomial`` cost 0.47 ms of CPU per call on the H100 machine.
- **CPU, the inverse CDF:** one uniform number per row, looked up in the cumulative probabilities. On the 2-core
  machine, for 64 rows over ~100 tokens: 72 µs, against 180 µs for ``torch.multinomial`` and 200 µs for the race,
  whose per-element exponential draws dominate there (``benchmarks/results/sampling_cpu.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import TopPLogitsWarper

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling.devices import host_syncs_are_cheap

#: Tokens between checks that every row has finished, where each check waits for the device (`host_syncs_are_cheap`).
CHECK_EVERY_ACCELERATOR = 16


class SamplingError(DiscrepancyError):
    """The logits hold NaN or inf where a probability is needed (a diverged model)."""


@dataclass(frozen=True)
class DrawRule:
    """How a decode loop draws each next token and when a completion ends: what every loop of ours shares."""

    max_new_tokens: int
    eos_id: int
    temperature: float = 1.0
    top_p: float = 1.0
    min_new_tokens: int = 0  # EOS is forbidden before this many tokens
    greedy: bool = False  # argmax instead of a draw

    def next_tokens(self, logits: torch.Tensor, i: int) -> torch.Tensor:
        """Token ``i`` of every row ``[N]`` from fp32 logits ``[N, V]`` (changed in place)."""
        forbid = self.eos_id if i < self.min_new_tokens else None
        return draw_tokens(logits, self.temperature, self.top_p, forbid, self.greedy)

    def finish_check_every(self, device: torch.device) -> int:
        """Tokens between checks that every row has drawn EOS (each check reads a value back from the device)."""
        return 1 if host_syncs_are_cheap(device) else CHECK_EVERY_ACCELERATOR


def draw_tokens(logits: torch.Tensor, temperature: float, top_p: float, forbid: int | None,
                greedy: bool = False) -> torch.Tensor:
    """Next token ``[N]`` from fp32 logits ``[N, V]`` (changed in place); ``forbid`` is a token id that may not be
    drawn (EOS before the minimum length). ``greedy`` takes the argmax instead."""
    if forbid is not None:
        logits[:, forbid] = float("-inf")
    if greedy:
        return logits.argmax(-1)
    scores = logits / temperature
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)  # transformers' own nucleus filter
    probs = torch.softmax(scores, dim=-1)  # [N, V]
    if host_syncs_are_cheap(probs.device):
        return _inverse_cdf(probs)
    return _race(probs)


def _race(probs: torch.Tensor) -> torch.Tensor:
    """argmax pᵢ/Eᵢ, Eᵢ ~ Exp(1): a draw from p (zero-probability ids never win), without a host sync."""
    torch._assert_async(torch.isfinite(probs).all(), "non-finite logits while sampling")
    race = torch.empty_like(probs).exponential_().clamp_(min=torch.finfo(probs.dtype).tiny)  # E_i > 0
    return (probs / race).argmax(-1)


def _inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """The first id whose cumulative probability exceeds u·total, u ~ U[0, 1): a draw from p.

    ``side="right"`` skips zero-probability ids even at u = 0 (their interval [cᵢ₋₁, cᵢ) is empty), and scaling u by
    the row's total keeps the float32 rounding of the cumulative sum from leaving u past the last id.
    """
    if not bool(torch.isfinite(probs).all()):  # a host check costs nothing on the CPU
        raise SamplingError("non-finite logits while sampling: the model has diverged (NaN or inf in its output); "
                            "lower optim.lr or check the rewards")
    cdf = probs.cumsum(-1)  # [N, V]
    u = torch.rand(probs.size(0), 1, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]  # [N, 1]
    return torch.searchsorted(cdf, u, side="right").squeeze(1).clamp_(max=probs.size(1) - 1)
