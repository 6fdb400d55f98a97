"""Closed-form learning coefficients used as the truth in the LLC tests, and test networks that realise them.

- ``rrr_lambda``: reduced-rank regression, i.e. a two-layer linear network (Aoyagi & Watanabe 2005, Theorem 1), with
  its four cases.
- ``dln_lambda``: deep linear networks of any depth (Aoyagi 2024, the form used by Furman & Lau 2024 to validate LLC
  estimators): a subset Σ of layers, chosen by the three inequalities of the theorem, enters the formula.
- ``orthonormal_dln``: a deep linear network at a point where every layer has rank exactly r (orthonormal factors of a
  rank-r teacher), the point at which the closed form holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def rrr_lambda(n_in: int, hidden: int, n_out: int, rank: int) -> float:
    """λ of y = B A x with A: hidden×n_in, B: n_out×hidden at a true map of rank ``rank`` (Aoyagi & Watanabe 2005).

    Notation of the paper: N inputs, M outputs, H hidden units, r the true rank.
    """
    N, M, H, r = n_in, n_out, hidden, rank
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    if M + N < H + r:
        return M * N / 2
    odd = (M + H + N + r) % 2
    return (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2 + odd) / 8


def dln_lambda(widths: Sequence[int], rank: int) -> float:
    """λ of a deep linear network with layer widths H_1 (input), …, H_{M+1} (output) at a rank-``rank`` point.

    Aoyagi (2024): with Δ_s = H_s − r, there is a subset Σ of {1, …, M+1} of size ℓ+1 such that
      max_{σ∈Σ} Δ_σ < min_{k∉Σ} Δ_k,   Σ_{σ∈Σ} Δ_σ ≥ ℓ·max_{σ∈Σ} Δ_σ,   Σ_{σ∈Σ} Δ_σ < ℓ·min_{k∉Σ} Δ_k,
    and then, with S = Σ_{σ∈Σ} Δ_σ and a = S − ℓ·⌊S/ℓ⌋,
      λ = (−r² + r(H_1 + H_{M+1}))/2 + a(ℓ − a)/(4ℓ) − (ℓ − 1)·S²/(4ℓ) + ½·Σ_{i<j∈Σ} Δ_i Δ_j.
    The first inequality forces Σ to be the ℓ+1 smallest Δ, so only ℓ needs searching.
    """
    r = rank
    deltas = sorted(h - r for h in widths)
    if deltas[0] < 0:
        raise ValueError("every width must be at least the rank")
    found = []
    for ell in range(1, len(deltas)):
        inside, outside = deltas[: ell + 1], deltas[ell + 1 :]
        min_out = min(outside) if outside else float("inf")
        s = sum(inside)
        if max(inside) < min_out and s >= ell * max(inside) and s < ell * min_out:
            found.append(ell)
    if len(found) != 1:
        raise ValueError(f"expected exactly one admissible subset, found ℓ in {found}")
    ell = found[0]
    inside = deltas[: ell + 1]
    s = sum(inside)
    a = s - ell * (s // ell)
    pairs = sum(inside[i] * inside[j] for i in range(len(inside)) for j in range(i + 1, len(inside)))
    return (-(r**2) + r * (widths[0] + widths[-1])) / 2 + a * (ell - a) / (4 * ell) - (ell - 1) * s**2 / (4 * ell) + pairs / 2


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen))
    return q  # [rows, cols] with orthonormal columns


def orthonormal_dln(widths: Sequence[int], rank: int, seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    """Deep linear network (no biases) whose product is a rank-``rank`` teacher and every layer has rank ``rank``.

    Layer k maps P_{k-1} to P_k, where P_0 = V, P_M = U and the P_k in between are orthonormal r-frames of the hidden
    spaces, so W_M ⋯ W_1 = U Vᵀ. Returns the network and the teacher matrix [out, in].
    """
    gen = torch.Generator().manual_seed(seed)
    frames = [_orthonormal(h, rank, gen) for h in widths]  # P_k: [H_k, r]
    layers = []
    for k in range(len(widths) - 1):
        lin = nn.Linear(widths[k], widths[k + 1], bias=False)
        with torch.no_grad():
            lin.weight.copy_(frames[k + 1] @ frames[k].T)  # [H_{k+1}, H_k], rank r
        layers.append(lin)
    teacher = frames[-1] @ frames[0].T
    return nn.Sequential(*layers), teacher


def gaussian_regression_data(
    teacher: torch.Tensor, n: int, batch_size: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Noise-free data y = teacher·x, x ~ N(0, I): the loss then equals the KL divergence K(w) itself, so the
    empirical minimum is the teacher exactly and no finite-sample shift of w* biases the estimate."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, teacher.shape[1], generator=gen)
    y = x @ teacher.T
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def gaussian_nll(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood (up to a constant) of a unit-variance Gaussian regression model."""
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()
