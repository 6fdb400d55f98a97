"""Local learning coefficient (LLC) of a trained model at its current weights w* (docs/llc.md).

    λ̂(w*) = nβ·(E_{w∼p}[L_n(w)] − L_n(w*)),   p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²),   nβ = n/log n by default,

sampled with SGLD chains that run vectorised (``sgld``); ``step_size=None`` calibrates ε, γ, the chains' start and
the number of SGLD steps between recorded draws automatically (``calibrate``). ``loss_fn(model, batch)`` must return
the mean negative log-likelihood of the batch (a likelihood, not an RL surrogate); ``data`` is a sequence of batches
whose total number of examples is n.

The expectation is averaged over post-burn-in draws only, with the loss taken at the midpoint of consecutive SGLD
iterates (``stats``: removes the step-size bias on quadratic parts of the loss, so calibrated steps can be large
and mix fast); ``LLCResult.llc_plain_per_chain`` holds the plain estimator (loss at the iterates) as other tools
report it.

Divergence never ends a call with default arguments: when a chain diverges (its loss or weights become NaN/inf),
the step size is halved and the sampling run repeated, up to ``MAX_BACKOFFS`` times; every attempt is recorded in
``LLCResult.backoff``. Only a model whose chains all diverge at every step size tried raises ``LLCError``. A finite
chain above the ceiling d (λ ≤ d/2) is left out of the mean and named in the health verdict. An explicit
``step_size`` is honoured as given (no back-off) unless ``backoff=True``.

Example::

    res = estimate_llc(model, loss_fn, batches)
    res                      # LLCResult(λ̂ = 14.0, s.e. 0.04, 4/4 chains, health ok, ε = 5.1e-06, …)
    res.llc_mean, res.llc_se, res.health, res.warnings
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from discrepancy.analysis.llc.calibrate import Calibration, calibrate
from discrepancy.analysis.llc.health import health_of
from discrepancy.analysis.llc.sgld import ChainTraces, LossFn, SGLDSettings, Target, run_chains, vectorising_pays
from discrepancy.analysis.llc.stats import chain_llcs, diagnose, step_values
from discrepancy.errors import DiscrepancyError

MAX_BACKOFFS = 10  # halvings of ε after a divergence: down to 1/1024 of the first step size


class LLCError(DiscrepancyError):
    """The LLC could not be estimated as asked (bad inputs, or the chains diverged at every step size tried)."""


@dataclass(repr=False)
class LLCResult:
    """An LLC estimate with everything needed to judge and reproduce it (``repr`` is one line; the traces are in
    ``loss_traces``)."""

    llc_mean: float
    llc_std: float  # spread across the chains kept
    llc_per_chain: list[float]
    loss_traces: torch.Tensor  # [chains, draws] float64: L_b(w) − L_b(w*) after burn-in
    init_loss: float  # L_n(w*)
    settings: dict[str, Any]  # ε, γ, nβ, chains, draws, burn-in, steps per draw, seed, precondition, n, d, …
    llc_plain_per_chain: list[float]  # the uncorrected estimator (loss at the iterates), as other tools report it
    warnings: list[str] = field(default_factory=list)
    calibration: Calibration | None = None
    backoff: list[dict[str, float]] = field(default_factory=list)  # each sampling attempt: step_size, diverged chains
    seconds: float = math.nan  # wall time of the call, calibration included

    @property
    def llc_se(self) -> float:
        """Standard error of ``llc_mean``: the chain spread over √(chains kept)."""
        return float(health_of(self.llc_per_chain, self.settings.get("num_params"))["llc_se"])

    @property
    def health(self) -> str:
        """"ok", or the symptoms that make the number no LLC ("negative", "diverged k/C", "spread", "drift",
        "step size"): see ``health``."""
        return str(health_of(self.llc_per_chain, self.settings.get("num_params"), " | ".join(self.warnings))["health"])

    @property
    def healthy(self) -> bool:
        return self.health == "ok" and not self.warnings

    @property
    def llc_plain_mean(self) -> float:
        """Mean over finite chains of the uncorrected estimator."""
        ok = [x for x in self.llc_plain_per_chain if math.isfinite(x)]
        return sum(ok) / len(ok) if ok else math.nan

    def __repr__(self) -> str:
        s = self.settings
        kept = sum(1 for x in self.llc_per_chain if math.isfinite(x) and x <= s.get("num_params", math.inf))
        backed = f", step size halved {len(self.backoff) - 1}×" if len(self.backoff) > 1 else ""
        return (f"LLCResult(λ̂ = {self.llc_mean:.4g}, s.e. {self.llc_se:.2g}, {kept}/{len(self.llc_per_chain)} "
                f"chains, health {self.health}, ε = {s.get('step_size', math.nan):.3g}, "
                f"γ = {s.get('localization', math.nan):.3g}, nβ = {s.get('nbeta', math.nan):.4g}, "
                f"{s.get('num_draws')} draws × {s.get('steps_per_draw')} steps after {s.get('num_burnin')} burn-in"
                f"{backed}, {len(self.warnings)} warning(s))")

    __str__ = __repr__


def _batch_len(batch: Any) -> int:
    """Number of examples in a batch: a tensor, a tuple/list of tensors, or a dict of tensors (first entry)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_len(batch[0])
    if hasattr(batch, "__len__"):
        return len(batch)
    raise LLCError(f"cannot count the examples in a batch of type {type(batch).__name__}: pass tensors, tuples or dicts")


def _select_params(model: nn.Module, params: Iterable[str] | Iterable[nn.Parameter] | None) -> list[str]:
    """Names of the sampled parameters: given names or Parameter objects; else LoRA for peft models; else trainable."""
    named = dict(model.named_parameters())
    if params is None:
        if hasattr(model, "peft_config"):
            names = [k for k in named if "lora_" in k]
        else:
            names = [k for k, p in named.items() if p.requires_grad]
    else:
        by_id = {id(p): k for k, p in named.items()}
        names = [p if isinstance(p, str) else by_id.get(id(p), "") for p in params]
        unknown = [k for k in names if k not in named]
        if unknown:
            raise LLCError(f"params not found in the model: {unknown[:3]}; pass names from model.named_parameters()")
    if not names:
        raise LLCError("no parameters to sample: pass params=, or make some parameters trainable")
    return names


def estimate_llc(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Any] | Iterable[Any],
    *,
    params: Iterable[str] | Iterable[nn.Parameter] | None = None,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 100,
    step_size: float | None = None,
    localization: float | None = None,
    nbeta: float | None = None,
    seed: int = 0,
    precondition: bool = False,
    init_spread: float | None = None,
    vectorise: bool = True,
    steps_per_draw: int | None = None,
    backoff: bool | None = None,
    corrected: bool = True,
    burnin_heat: float | None = None,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current weights; see the module docstring.

    ``step_size=None`` calibrates ε (and γ when ``localization`` is None) by the rule in ``calibrate``. Chains run in
    one vmapped computation unless the model cannot be traced by vmap, or one timed step shows that running them one
    after another is faster on this model, or ``vectorise=False`` (same noise, same result up to rounding).
    ``backoff`` (default: on when ε is calibrated, off when given) halves ε and repeats the sampling run whenever a
    chain diverges. Raises ``LLCError`` only when every chain diverges at every step size tried; other problems
    (negative LLC, drifting trace, some chains diverged) are in ``warnings`` and ``health``, and are also emitted as
    Python warnings. ``precondition`` turns on RMSProp-preconditioned SGLD (the midpoint correction is then only
    approximate). ``init_spread`` (std of the chains' start around w*) defaults to the calibrated value, or 0 when
    ``step_size`` is given; likewise ``steps_per_draw`` (SGLD steps per recorded draw; burn-in is counted in draws,
    so it lengthens too) and ``burnin_heat`` (the first half of the burn-in runs at nβ/heat; ``sgld.run_chains``);
    pass a result's ``settings`` back in to freeze them across checkpoints. ``corrected=False``
    reports the plain estimator (loss at the iterates) as ``llc_mean``: the midpoint correction assumes the loss is
    quadratic on the scale of one step, which fails where nβ is small and chains roam far (see ``over_run``).
    """
    t0 = time.perf_counter()
    if num_chains < 1 or num_draws < 2 or num_burnin < 0:
        raise LLCError("need num_chains ≥ 1, num_draws ≥ 2 and num_burnin ≥ 0")
    if steps_per_draw is not None and steps_per_draw < 1:
        raise LLCError(f"steps_per_draw = {steps_per_draw}: pass an integer ≥ 1, or None to choose it automatically")
    if step_size is not None and not step_size > 0:
        raise LLCError(f"step_size = {step_size}: pass a positive number, or None to calibrate it")
    batches = list(data)  # fixed batches: each one's loss at w* is the control variate of its draws
    if not batches:
        raise LLCError("data is empty: pass at least one batch")
    n = sum(_batch_len(b) for b in batches)
    if nbeta is None:
        if n < 3:
            raise LLCError(f"n = {n} examples is too few for the default nβ = n/log n: pass nbeta")
        nbeta = n / math.log(n)
    names = _select_params(model, params)
    backoff = step_size is None if backoff is None else backoff
    was_training = model.training
    model.eval()  # dropout off: the loss must be a deterministic function of the weights
    try:
        target = Target(model, loss_fn, batches, names)
        vec = vectorise and vectorising_pays(target, num_chains)
        calib = None
        if step_size is None:
            calib = calibrate(target, nbeta, localization, num_chains, num_burnin, num_draws, seed, vec, precondition)
            step_size, localization = calib.step_size, calib.localization
            init_spread = calib.init_spread if init_spread is None else init_spread
            steps_per_draw = calib.steps_per_draw if steps_per_draw is None else steps_per_draw
            burnin_heat = calib.burnin_heat if burnin_heat is None else burnin_heat
        elif localization is None:
            localization = 0.0
        s = SGLDSettings(
            step_size=step_size, localization=localization, nbeta=nbeta, num_chains=num_chains,
            num_draws=num_draws, num_burnin=num_burnin, precondition=precondition, init_spread=init_spread or 0.0,
            seed=seed, steps_per_draw=steps_per_draw or 1, burnin_heat=burnin_heat or 1.0,
        )
        traces, s, attempts = sample_with_backoff(target, s, vec, MAX_BACKOFFS if backoff else 0)
    finally:
        model.train(was_training)
    res = _result(target, traces, s, n, calib, attempts, corrected)
    res.seconds = time.perf_counter() - t0
    return res


def diverged_chains(traces: ChainTraces) -> int:
    """Chains whose loss or weights became non-finite: the signature of a step size too large somewhere on the
    chain's path (SGLD is unstable where ε·a > 4, and the error then grows geometrically to overflow)."""
    return int(traces.diverged.sum())


def sample_with_backoff(target: Target, s: SGLDSettings, vectorised: bool,
                        max_backoffs: int) -> tuple[ChainTraces, SGLDSettings, list[dict[str, float]]]:
    """Run the chains; while any diverges and halvings are left, halve ε and run again (same seed and budget).

    Returns the last run, its settings and every attempt as ``{"step_size", "diverged"}``. Why halve rather than
    trust the calibration: the calibration sees the curvature at w* and at a spread start, but a chain can reach
    stiffer regions later (unbalanced layers of a deep network, a narrow bottleneck), where ε·a > 4 blows it up.
    A finite chain above the ceiling d is no reason to halve (a burn-in too short for the start's excess, or a chain
    that left the basin: a smaller step cures neither); it is left out of the mean and named by the health verdict.
    """
    attempts: list[dict[str, float]] = []
    while True:
        traces = run_chains(target, s, vectorised)
        bad = diverged_chains(traces)
        attempts.append({"step_size": s.step_size, "diverged": bad})
        if bad == 0 or len(attempts) > max_backoffs:
            return traces, s, attempts
        s = replace(s, step_size=s.step_size / 2)


def _result(target: Target, traces: ChainTraces, s: SGLDSettings, n: int, calib: Calibration | None,
            attempts: list[dict[str, float]], corrected: bool = True) -> LLCResult:
    per_chain = chain_llcs(traces, s, corrected)  # [C]
    values = step_values(traces, s, corrected)[:, s.num_burnin :]  # [C, draws]
    warns = diagnose(values, per_chain, target.dim)
    if calib is not None and calib.warning:
        warns.append(calib.warning)
    ok = per_chain[torch.isfinite(per_chain) & (per_chain <= target.dim)]
    if bool(traces.diverged.all()):
        tried = f"from {attempts[0]['step_size']:.3g} down to {s.step_size:.3g}" if len(attempts) > 1 else \
            f"{s.step_size:.3g} (given; pass backoff=True or step_size=None to let it back off)"
        raise LLCError(f"every chain diverged at every step size tried ({tried}): the loss is not finite or grows "
                       "without bound near w*; check loss_fn and that the model's weights are finite")
    plain = chain_llcs(traces, s, corrected=False)
    ref = target.ref_losses.double()
    sizes = torch.tensor([float(_batch_len(b)) for b in target.batches], dtype=torch.float64)
    settings = {**asdict(s), "n": n, "num_params": target.dim, "vectorised": traces.vectorised, "corrected": corrected}
    if len(attempts) > 1:
        settings["step_size_first"] = attempts[0]["step_size"]
    for w in warns:
        warnings.warn(w, stacklevel=3)
    return LLCResult(
        llc_mean=float(ok.mean()) if ok.numel() else math.nan,  # every finite chain above the ceiling: no estimate
        llc_std=float(ok.std()) if ok.numel() > 1 else 0.0,
        llc_per_chain=[float(x) for x in per_chain],
        loss_traces=traces.deltas[:, s.num_burnin :].cpu(),
        init_loss=float((ref.cpu() * sizes).sum() / sizes.sum()),
        settings=settings,
        llc_plain_per_chain=[float(x) for x in plain],
        warnings=warns,
        calibration=calib,
        backoff=attempts,
    )
