"""Automatic choice of the SGLD step size ε, localisation γ and steps per draw for LLC estimation.

The rule (documented in ``docs`` of ``estimate_llc``):

1. Curvature scale. Power iteration with Hessian-vector products gives the largest |eigenvalue| h_max of the Hessian
   of L at w* (sampled parameters only, first batch). The stiffest direction of the sampled density then has
   stiffness a_max = nβ·h_max + γ, and SGLD is stable only for ε·a_max < 4.
2. Localisation, if not given: γ = h_max, a prior worth one example (the curvature one example adds in the stiffest
   direction). It does not grow with n, so λ̂ → λ as n → ∞; a regular direction of stiffness a is scaled by
   nβh/(nβh + γ), so only directions flatter than h_max/nβ, which carry no information at this n, are damped; exactly
   flat directions (symmetries) stay bound. The former rule, γ = 10⁻⁴·nβ·h_max, grew with n and confined the
   degenerate directions of deep networks (at n = 10⁶: −17 % against −9 % now on a 4-layer network with a width-2
   bottleneck; benchmarks/results/llc.md).
3. Step size: ε = c/a_max for c on the ladder 2, 1, ½, ¼, ⅛. Because the estimator evaluates the loss at the midpoint
   of consecutive iterates (see ``sgld``), large steps carry no discretisation bias on quadratic parts of the loss,
   and large steps mix the slow degenerate directions much faster. The chosen c is the largest one whose short pilot
   run (a) has no diverged chain and (b) agrees with the pilot at c/2 within 15 % plus two standard errors; a
   disagreement means the loss is far from quadratic on the scale of one step (higher-order terms bias the correction).
   If no pair agrees, the smallest c is used and a calibration warning is recorded. Every pilot covers the same
   sampler time ε·steps (2/c steps per draw), so that a pilot at small c has relaxed from the start as far as its
   neighbour and the two differ only by the step size.
4. Overdispersed start: chains start at w* plus isotropic noise of scale σ₀ = (nβ·h_max)^(-1/6), the posterior width
   of a direction where the loss grows like the product of three factors (a depth-3 degeneracy). Started at w*
   itself, chains need thousands of steps to diffuse out along degenerate directions and underestimate λ (the
   "estimate keeps falling as ε shrinks" pitfall); started wider, they relax from above, and the stiff directions that
   the noise over-excites relax within a few steps at c ≥ 1. The start must stay where the curvature at w* still
   describes the loss (else ε·a_max > 4 there and chains blow up): σ₀ is halved until the top Hessian eigenvalue at
   a spread start is at most 2·h_max (in wide networks many small per-coordinate kicks add up to a large change).
5. Steps per draw: k = ⌈2·τ⌉, capped at 16, with τ the integrated autocorrelation time (in steps) of the squared
   distance ‖w − w*‖² in the chosen pilot's post-burn-in trace (pooled over chains). A draw is then k SGLD steps (its
   value the mean over them), so consecutive draws are about independent, and burn-in, counted in draws, lengthens
   with them. The draw budget (chains × draws) stays as asked; only models whose chains mix slowly pay more steps.
   The distance, not the loss, because the slow degenerate directions are wide and dominate ‖w − w*‖², while they
   barely move the loss: the loss trace of a deep linear network decorrelates within 1 to 3 steps at c = 2 even
   where the estimate is 10 % low for want of mixing. A 100-draw pilot cannot resolve τ much above 14 steps, so
   singular models with slow directions reach the cap, and regular ones get k = 2 (benchmarks/results/llc.md).
6. Heated burn-in: the first half of the burn-in runs at nβ/100 with ε·100 (the same ε·nβ·h_max, so as stable),
   the second half at the target. The degenerate directions of a deep network (products of several layers) are
   wider than the start's spread and, at the target temperature, are reached only by diffusion at a step size set
   by the stiff directions: chains then relax into them from below for longer than any budget, and λ̂ sits near
   rank(Hessian)/2 (−15 % on a 5-layer network of width 10 at n = 10⁶; 4× the draws: −7 %). Heated, they spread
   100× faster and cool back from above. Only burn-in is heated, so what is averaged samples the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from discrepancy.analysis.llc.sgld import SGLDSettings, Target, run_chains
from discrepancy.analysis.llc.stats import autocorr_time, chain_llcs, step_values

LADDER = (2.0, 1.0, 0.5, 0.25, 0.125)
BURNIN_HEAT = 100.0  # the first half of the burn-in at nβ/100 (rule 6)
START_DEPTH = 3  # the start's spread is the posterior width of a product of this many factors (rule 4)
LOCALIZATION_EXAMPLES = 1.0  # γ = this many examples' worth of the top curvature (rule 2)
AGREEMENT_TOL = 0.15
THIN_FACTOR = 2.0  # steps per draw = THIN_FACTOR·τ: draws about independent (AR(1) lag-2τ correlation ≈ e^-4)
MAX_STEPS_PER_DRAW = 16  # cost cap: the final run costs at most this many times the default budget


def steps_per_draw_for(tau: float) -> int:
    """Steps between recorded draws for a pilot autocorrelation time τ (rule 5), within 1 … MAX_STEPS_PER_DRAW."""
    if not math.isfinite(tau):
        return 1
    return int(min(max(math.ceil(THIN_FACTOR * tau), 1), MAX_STEPS_PER_DRAW))


def _hvp_fn(target: Target, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Hessian-vector products of the first batch's loss at ``w``.

    Double backward through autograd where the model supports it; otherwise (e.g. fused attention kernels without a
    second derivative) central differences of gradients, Hv ≈ (∇L(w + hv) − ∇L(w − hv))/2h, which need only the first
    derivatives every sampler needs anyway.
    """
    batch = target.batches[0]
    leaf = w.clone().requires_grad_(True)
    try:
        (g,) = torch.autograd.grad(target.loss_at(leaf, batch), leaf, create_graph=True)
        probe = torch.zeros_like(w)
        torch.autograd.grad(g @ probe, leaf, retain_graph=True)
        return lambda v: torch.autograd.grad(g @ v, leaf, retain_graph=True)[0]
    except RuntimeError:
        pass

    def grad_at(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(target.loss_at(x, batch), x)[0]

    h = 1e-3 * max(float(w.norm()) / math.sqrt(w.numel()), 1e-2)  # step relative to the typical weight size
    return lambda v: (grad_at(w + h * v) - grad_at(w - h * v)) / (2 * h)


def top_hessian_eigenvalue(target: Target, at: torch.Tensor | None = None, iters: int = 20, seed: int = 0) -> float:
    """Largest |eigenvalue| of the Hessian of the first batch's loss at ``at`` (default w*), by power iteration."""
    gen = torch.Generator(device=target.w0.device).manual_seed(seed)
    v = torch.randn(target.w0.shape, generator=gen, device=target.w0.device)
    v /= v.norm()
    hvp = _hvp_fn(target, target.w0 if at is None else at)
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v)
        lam = float(hv @ v)
        norm = hv.norm()
        if not torch.isfinite(norm) or norm == 0:
            break
        v = hv / norm
    return abs(lam)


def _start_spread(target: Target, nbeta: float, h_max: float, seed: int, max_halvings: int = 8) -> float:
    """σ₀ = (nβ·h_max)^(−1/(2·START_DEPTH)), halved until the curvature at w* + σ₀·ξ is at most 2·h_max (rule 4)."""
    gen = torch.Generator(device=target.w0.device).manual_seed(seed + 2)
    xi = torch.randn(target.w0.shape, generator=gen, device=target.w0.device)
    spread = (nbeta * h_max) ** (-1 / (2 * START_DEPTH))
    for _ in range(max_halvings):
        # a rough eigenvalue suffices for this comparison: fewer power iterations
        if top_hessian_eigenvalue(target, at=target.w0 + spread * xi, iters=8, seed=seed) <= 2.0 * h_max:
            return spread
        spread /= 2
    return 0.0


@dataclass
class Pilot:
    """One short calibration run."""

    c: float
    step_size: float
    llc: float
    se: float
    diverged: bool
    tau: float = 1.0  # integrated autocorrelation time of ‖w − w*‖² after burn-in, in steps (rule 5)
    tau_loss: float = 1.0  # the same for the per-step LLC values (reported only: it misses the slow directions)


@dataclass
class Calibration:
    """What the calibration measured and chose."""

    step_size: float
    localization: float
    h_max: float
    c: float
    init_spread: float = 0.0
    steps_per_draw: int = 1
    burnin_heat: float = 1.0
    pilots: list[Pilot] = field(default_factory=list)
    warning: str | None = None


def _pilot(target: Target, base: SGLDSettings, c: float, a_max: float, vectorised: bool) -> Pilot:
    # Every pilot covers the same sampler time ε·steps as the one at the top of the ladder: a pilot at a small c
    # otherwise has not relaxed from the overdispersed start, and would disagree with its neighbour for that reason.
    k = max(round(LADDER[0] / c), 1)
    s = SGLDSettings(**{**base.__dict__, "step_size": c / a_max, "steps_per_draw": k})
    traces = run_chains(target, s, vectorised)
    per_chain = chain_llcs(traces, s)
    ok = per_chain[torch.isfinite(per_chain)]
    diverged = bool(traces.diverged.any()) or ok.numel() < per_chain.numel() or bool((ok.abs() > target.dim).any())
    llc = float(ok.mean()) if ok.numel() else math.nan
    se = float(ok.std() / math.sqrt(ok.numel())) if ok.numel() > 1 else math.inf
    tau = k * autocorr_time(traces.dist2[:, s.num_burnin :]) if not diverged else math.inf  # in steps
    tau_loss = k * autocorr_time(step_values(traces, s)[:, s.num_burnin :]) if not diverged else math.inf
    return Pilot(c=c, step_size=s.step_size, llc=llc, se=se, diverged=diverged, tau=tau, tau_loss=tau_loss)


def calibrate(
    target: Target,
    nbeta: float,
    localization: float | None,
    num_chains: int,
    num_burnin: int,
    num_draws: int,
    seed: int,
    vectorised: bool,
    precondition: bool = False,
) -> Calibration:
    """Choose ε (and γ when not given) by the rule in the module docstring; pilots use half the draw budget."""
    h_max = top_hessian_eigenvalue(target, seed=seed)
    if not math.isfinite(h_max) or h_max <= 0:
        h_max = 1.0  # flat at w* on the first batch: fall back to unit curvature so ε and γ stay finite
    gamma = LOCALIZATION_EXAMPLES * h_max if localization is None else localization
    a_max = nbeta * h_max + gamma
    spread = _start_spread(target, nbeta, h_max, seed)
    base = SGLDSettings(
        step_size=1.0, localization=gamma, nbeta=nbeta, num_chains=num_chains,
        num_burnin=max(num_burnin // 2, 5), num_draws=max(num_draws // 2, 10), precondition=precondition, init_spread=spread,
        seed=seed + 1, burnin_heat=BURNIN_HEAT,
    )
    pilots: list[Pilot] = []
    cache: dict[float, Pilot] = {}

    def get(c: float) -> Pilot:
        if c not in cache:
            cache[c] = _pilot(target, base, c, a_max, vectorised)
            pilots.append(cache[c])
        return cache[c]

    for c, half in zip(LADDER[:-1], LADDER[1:]):
        hi = get(c)
        if hi.diverged:
            continue
        lo = get(half)
        if lo.diverged:
            continue
        slack = AGREEMENT_TOL * max(abs(lo.llc), 1.0) + 2 * math.hypot(hi.se, lo.se)
        if abs(hi.llc - lo.llc) <= slack:
            return Calibration(
                step_size=c / a_max, localization=gamma, h_max=h_max, c=c, init_spread=spread, pilots=pilots,
                steps_per_draw=steps_per_draw_for(hi.tau), burnin_heat=BURNIN_HEAT,
            )
    c = LADDER[-1]
    warning = (
        "step-size calibration found no pair of step sizes whose estimates agree; using the smallest "
        f"(ε = {c / a_max:.3g}); check the loss traces, or pass step_size explicitly after a sweep"
    )
    return Calibration(
        step_size=c / a_max, localization=gamma, h_max=h_max, c=c, init_spread=spread, pilots=pilots, warning=warning,
        steps_per_draw=steps_per_draw_for(get(c).tau), burnin_heat=BURNIN_HEAT,
    )


RESOLUTION_C = 0.5  # ε·a_max of the fixed-budget rule: the plain estimate moves by ≈ 3 % from c = ½ to ¼ (over_run)
RESOLUTION_GAMMA = 0.05  # γ/(nβ·h_max): the slowest direction relaxes in 1/(c·0.05) = 40 steps


def resolution_settings(target: Target, nbeta: float, c: float = RESOLUTION_C,
                        gamma_ratio: float = RESOLUTION_GAMMA, iters: int = 10) -> Calibration:
    """Settings for a small fixed budget (tens of draws, chains started at w*), as the LLC over a run's snapshots
    needs: no pilots, only the top Hessian eigenvalue (``iters`` Hessian-vector products, seconds).

    γ = ``gamma_ratio``·nβ·h_max makes every direction settle within the burn-in, so the estimate is the LLC at a
    resolution: directions whose curvature is far below γ/nβ add little (a quadratic direction of stiffness a adds
    nβh/(2a)); ε = c/(nβ·h_max + γ). Frozen across a run, so estimates at different snapshots compare.
    """
    h_max = top_hessian_eigenvalue(target, iters=iters)
    if not math.isfinite(h_max) or h_max <= 0:
        h_max = 1.0  # flat at w*: unit curvature keeps ε and γ finite (a diverging run backs off from there)
    gamma = gamma_ratio * nbeta * h_max
    return Calibration(step_size=c / (nbeta * h_max + gamma), localization=gamma, h_max=h_max, c=c)
