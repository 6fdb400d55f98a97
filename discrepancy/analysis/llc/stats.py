"""From recorded SGLD traces to per-chain LLC values and health diagnostics (docs/definitions.md §5).

Per step t the recorded value is nβ·(L_b(w_t) − L_b(w*) + ¼·∇L_b(w_t)·(w_{t+1} − w_t)). The last term turns the loss at
w_t into the loss at the midpoint (w_t + w_{t+1})/2 (exact for a quadratic loss, by a second-order Taylor expansion), and
for a Gaussian target the SGLD chain's midpoints have exactly the target's second moments at ANY stable step size,
whereas the iterates themselves are inflated by 1/(1 − ε·a/4) in a direction of stiffness a. ``corrected=False`` gives
the plain estimator of Lau et al. (loss at the iterates), the one devinterp reports.
Only post-burn-in steps enter the average.
"""

from __future__ import annotations

import math

import torch

from discrepancy.analysis.llc.sgld import ChainTraces, SGLDSettings


def step_values(traces: ChainTraces, s: SGLDSettings, corrected: bool = True) -> torch.Tensor:
    """nβ·(loss difference) per chain and step, [C, burnin + draws] float64."""
    d = traces.deltas + 0.25 * traces.gdots if corrected else traces.deltas
    return s.nbeta * d


def chain_llcs(traces: ChainTraces, s: SGLDSettings, corrected: bool = True) -> torch.Tensor:
    """Per-chain LLC [C]: the post-burn-in mean of ``step_values``; NaN for a chain that diverged."""
    v = step_values(traces, s, corrected)[:, s.num_burnin :]  # [C, draws]
    out = v.mean(dim=1)
    return torch.where(traces.diverged, torch.full_like(out, math.nan), out)


def autocorr_time(values: torch.Tensor) -> float:
    """Integrated autocorrelation time τ (in steps) of the per-step traces ``values`` [C, T], pooled over chains.

    τ = 1 + 2·Σ_k ρ(k), with ρ the autocorrelation averaged over chains (each chain centred on its own mean) and the
    sum cut at Sokal's automatic window, the smallest M ≥ 5·τ(M). Written here because neither numpy nor scipy has
    it, and the libraries that do (emcee, arviz) are not dependencies; it is ten lines of FFT. Returns 1 for a trace
    too short or constant to tell.
    """
    v = values[torch.isfinite(values).all(dim=1)]  # [C', T]: diverged chains carry no information
    if v.shape[0] == 0 or v.shape[1] < 4:
        return 1.0
    x = v - v.mean(dim=1, keepdim=True)
    T = x.shape[1]
    f = torch.fft.rfft(x, n=2 * T, dim=1)  # zero-padded to 2T: linear, not circular, correlation
    acov = torch.fft.irfft(f * f.conj(), n=2 * T, dim=1)[:, :T].mean(dim=0)  # [T]
    if acov[0] <= 0:
        return 1.0
    rho = acov / acov[0]
    taus = 2 * torch.cumsum(rho, 0) - 1  # τ(M) for windows M = 0 … T−1
    window = torch.arange(T, dtype=taus.dtype) >= 5 * taus
    m = int(window.nonzero()[0]) if window.any() else T - 1
    return max(float(taus[m]), 1.0)


def diagnose(values: torch.Tensor, per_chain: torch.Tensor, dim: int) -> list[str]:
    """Warnings for an unhealthy estimate: NaN/diverged chains, an LLC above the d/2 ceiling or below 0, a trace that
    still drifts after burn-in, a large spread across chains.

    ``values`` are the post-burn-in step values [C, draws]; ``dim`` the number of sampled parameters.
    """
    out: list[str] = []
    bad = ~torch.isfinite(per_chain)
    if bad.any():
        out.append(f"{int(bad.sum())} chain(s) produced NaN/inf: diverged (lower step_size)")
    # λ ≤ d/2 for any analytic model, so a chain far above it has left the basin rather than sampled it.
    high = per_chain > dim
    if high.any():
        out.append(f"{int(high.sum())} chain(s) exceed the ceiling d = {dim} (λ ≤ d/2): diverged (lower step_size)")
    ok = per_chain[~bad & ~high]
    if ok.numel() == 0:
        return out
    mean = float(ok.mean())
    if mean < 0:
        out.append(f"negative LLC ({mean:.3g}): w* is not a local minimum of the loss (train longer, or check loss_fn)")
    good = values[~bad & ~high]
    half = good.shape[1] // 2
    if half >= 2 and good.shape[0] >= 2:
        drift = good[:, half:].mean(dim=1) - good[:, :half].mean(dim=1)  # [C]
        se = float(drift.std() / math.sqrt(drift.numel()))
        d = float(drift.mean())
        if abs(d) > 0.1 * max(abs(mean), 1.0) and abs(d) > 2 * se:
            out.append(f"loss trace drifts after burn-in (second half − first half = {d:.3g}): raise the burn-in (num_burnin; --burnin of `discrepancy llc`)")
    if ok.numel() >= 2 and float(ok.std()) > 0.5 * max(abs(mean), 1.0):
        out.append(f"chains disagree (std {float(ok.std()):.3g} vs mean {mean:.3g}): raise the draws or chains (num_draws, num_chains; --draws, --chains)")
    return out
