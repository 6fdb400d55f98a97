"""Vectorised SGLD chains for local learning coefficient estimation (docs/definitions.md §5).

All chains live in ONE flat buffer ``w`` of shape [C, D] (C chains, D sampled scalars); each sampled parameter of the
model is a view into it. A step evaluates every chain's minibatch loss at once with ``torch.func.vmap`` over
``functional_call`` (the frozen rest of the model is shared, never copied), backpropagates the summed losses (the chains
are independent, so the gradient of the sum is each chain's own gradient), and applies the SGLD update to the whole
buffer in a few fused tensor operations:

    Δw = (ε/2)·(−nβ·∇L_m(w) − γ·(w − w*)) + N(0, ε)

Models that vmap cannot trace (data-dependent Python control flow, in-place ops on inputs), or on which one timed
step shows the vmapped step to be slower (operators without a batching rule), run the chains one after another through
the same functional call, with the same noise: the trajectories agree up to rounding.

Each step records ``L_b(w_t) − L_b(w*)`` on the step's own minibatch b (the reference loss of every batch is computed
once up front, so minibatch-to-minibatch variation cancels: a free control variate) and ``∇L_b(w_t)·(w_{t+1} − w_t)``,
from which ``stats`` forms the loss at the midpoint of consecutive iterates (no discretisation bias on quadratic
parts of the loss).

torch.func and vmap are used instead of devinterp's optimizer because devinterp runs chains one after another with a
deep copy of the model per chain; here the chains share one model and one batched computation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class SGLDSettings:
    """Everything that determines a sampling run; stored with every result so runs can be compared."""

    step_size: float
    localization: float
    nbeta: float
    num_chains: int
    num_draws: int
    num_burnin: int
    precondition: bool = False
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-3
    init_spread: float = 0.0
    seed: int = 0
    steps_per_draw: int = 1
    burnin_heat: float = 1.0  # first half of the burn-in at nβ/heat with ε·heat (``run_chains``); 1 = off


class _LossModule(nn.Module):
    """Wraps ``loss_fn(model, batch)`` as a module so that ``functional_call`` can swap the sampled parameters in."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class Target:
    """The posterior's ingredients: model, loss, fixed batches, sampled parameters and their values at w*."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], names: Sequence[str]) -> None:
        self.module = _LossModule(model, loss_fn)
        named = dict(model.named_parameters())
        self.names = list(names)
        self.shapes = [tuple(named[k].shape) for k in self.names]
        self.sizes = [named[k].numel() for k in self.names]
        self.batches = list(batches)
        first = named[self.names[0]]
        # w* as one flat fp32 vector [D]: sampling in fp32 even for low-precision models, because SGLD noise of size
        # sqrt(ε) is far below bf16 resolution around O(1) weights.
        self.w0 = torch.cat([named[k].detach().reshape(-1).float() for k in self.names]).to(first.device)
        self.dtype = first.dtype
        self.ref_losses = self._reference_losses()  # [num_batches]

    @property
    def dim(self) -> int:
        return int(self.w0.numel())

    def param_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat [..., D] buffer as the model's parameters (names prefixed for the wrapper module)."""
        out, off = {}, 0
        lead = flat.shape[:-1]
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out["model." + name] = flat[..., off : off + size].reshape(*lead, *shape).to(self.dtype)
            off += size
        return out

    def loss_at(self, flat: torch.Tensor, batch: Any) -> torch.Tensor:
        """Loss of one parameter vector [D] on one batch (scalar)."""
        return functional_call(self.module, self.param_dict(flat), (batch,)).float()

    @torch.no_grad()
    def _reference_losses(self) -> torch.Tensor:
        return torch.stack([self.loss_at(self.w0, b) for b in self.batches])

    def losses_and_grads(self, w: torch.Tensor, batch: Any, vectorised: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-chain loss [C] and gradient [C, D] at the chain positions ``w`` [C, D]."""
        if vectorised:
            leaf = w.detach().requires_grad_(True)
            losses = vmap(lambda p: self.loss_at(p, batch))(leaf)  # [C]
            (grad,) = torch.autograd.grad(losses.sum(), leaf)  # [C, D]: chains independent, so ∇Σ = per-chain ∇
            return losses.detach(), grad
        losses, grads = [], []
        for c in range(w.shape[0]):
            leaf = w[c].detach().requires_grad_(True)
            loss = self.loss_at(leaf, batch)
            (g,) = torch.autograd.grad(loss, leaf)
            losses.append(loss.detach())
            grads.append(g)
        return torch.stack(losses), torch.stack(grads)


def vmap_works(target: Target, num_chains: int) -> bool:
    """Whether the model's loss traces under vmap (tried once on the first batch); False means sequential chains."""
    w = target.w0.expand(num_chains, -1).clone()
    try:
        losses, grad = target.losses_and_grads(w, target.batches[0], vectorised=True)
    except Exception:  # noqa: BLE001 - any failure to trace under vmap means "use the sequential path"
        return False
    expected = target.ref_losses[0]
    return bool(torch.allclose(losses, expected.expand_as(losses), rtol=1e-4, atol=1e-6) and grad.isfinite().all())


def vectorising_pays(target: Target, num_chains: int) -> bool:
    """Whether vmapped chains are usable AND not clearly slower than sequential ones on this model.

    vmap is not always faster: operators without a batching rule (e.g. CPU flash attention inside transformers'
    SDPA path) run through a slow per-sample fallback, and for large models the sequential path already saturates
    the hardware. Two timed steps of each path (after a warm-up of both) decide, keeping vmap unless the sequential
    path is faster by more than a quarter: single timings on a shared machine are noisy.
    """
    if num_chains < 2 or not vmap_works(target, num_chains):
        return False
    w = target.w0.expand(num_chains, -1).clone()
    target.losses_and_grads(w, target.batches[0], vectorised=False)  # warm-up (vmap_works warmed the other path)
    best = {True: math.inf, False: math.inf}
    for vec in (True, False, True, False):
        t0 = time.perf_counter()
        target.losses_and_grads(w, target.batches[0], vectorised=vec)
        if w.is_cuda:
            torch.cuda.synchronize()  # kernels are asynchronous: wait for them before reading the clock
        best[vec] = min(best[vec], time.perf_counter() - t0)
    return best[False] >= 0.75 * best[True]


@dataclass
class ChainTraces:
    """Raw output of a sampling run: per-step loss differences and chain health."""

    deltas: torch.Tensor  # [C, burnin + draws] float64: L_b(w_t) − L_b(w*), mean over each draw's steps
    gdots: torch.Tensor  # [C, burnin + draws] float64: ∇L_b(w_t)·(w_{t+1} − w_t), mean over each draw's steps
    dist2: torch.Tensor  # [C, burnin + draws] float64: ‖w_t − w*‖², mean over each draw's steps (mixing diagnostic)
    diverged: torch.Tensor  # [C] bool: a non-finite loss or parameter appeared
    vectorised: bool


def run_chains(target: Target, s: SGLDSettings, vectorised: bool) -> ChainTraces:
    """Run ``s.num_chains`` SGLD chains from w* for ``(num_burnin + num_draws)·steps_per_draw`` steps.

    A draw is a block of ``steps_per_draw`` consecutive steps and records the block means of the per-step loss
    differences and gradient terms: every step's loss is computed anyway, and averaging all of them has lower variance
    than keeping only the last step of each block (thinning never reduces the variance of a mean).
    """
    gen = torch.Generator(device=target.w0.device).manual_seed(s.seed)
    C, k = s.num_chains, max(int(s.steps_per_draw), 1)
    T = s.num_burnin + s.num_draws
    w = target.w0.expand(C, -1).clone()  # [C, D]
    if s.init_spread > 0:
        w.add_(torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype), alpha=s.init_spread)
    sq_avg = torch.zeros_like(w) if s.precondition else None
    deltas = torch.zeros(C, T, dtype=torch.float64, device=w.device)
    gdots, dist2 = torch.zeros_like(deltas), torch.zeros_like(deltas)
    nb = len(target.batches)
    hot_steps = (s.num_burnin * k) // 2 if s.burnin_heat > 1 else 0
    for t in range(T * k):
        # A hot first half of the burn-in (nβ/heat, ε·heat: the same ε·nβ·h) spreads the chains along the slow
        # degenerate directions `heat` times faster than diffusion at the target temperature; the second half
        # cools them back, from above. Only burn-in is heated, so what is averaged samples the target.
        heat = s.burnin_heat if t < hot_steps else 1.0
        nbeta, eps = s.nbeta / heat, s.step_size * heat
        half_eps, sqrt_eps = 0.5 * eps, math.sqrt(eps)
        b = t % nb
        losses, grad = target.losses_and_grads(w, target.batches[b], vectorised)
        deltas[:, t // k] += (losses - target.ref_losses[b]).double() / k
        with torch.no_grad():
            off = w - target.w0  # [C, D]
            dist2[:, t // k] += off.square().sum(dim=1).double() / k
            drift = grad * nbeta + off * s.localization  # [C, D]
            noise = torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)
            if sq_avg is None:
                step = noise.mul_(sqrt_eps).sub_(drift, alpha=half_eps)  # [C, D]
            else:
                # RMSProp-preconditioned SGLD (Li et al. 2016, without the small Γ correction term): per-coordinate
                # step ε·G with G = 1/(eps + sqrt(v)), normalised so that its mean is 1 and ε keeps its meaning.
                sq_avg.mul_(s.rmsprop_alpha).addcmul_(drift, drift, value=1 - s.rmsprop_alpha)
                g = 1.0 / (s.rmsprop_eps + sq_avg.sqrt())
                g = g / g.mean(dim=1, keepdim=True)
                step = (g.sqrt() * noise).mul_(sqrt_eps).sub_(g * drift, alpha=half_eps)
            # ∇L_b(w_t)·(w_{t+1} − w_t), for the midpoint correction (block mean, like the loss)
            gdots[:, t // k] += (grad * step).sum(dim=1).double() / k
            w.add_(step)
    diverged = ~(deltas.isfinite().all(dim=1) & w.isfinite().all(dim=1))
    return ChainTraces(deltas=deltas, gdots=gdots, dist2=dist2, diverged=diverged, vectorised=vectorised)
