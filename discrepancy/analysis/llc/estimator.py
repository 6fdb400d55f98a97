"""Local learning coefficient (LLC) of a trained model at its current weights w* (SPEC §5).

    λ̂(w*) = nβ·(E_{w∼p}[L_n(w)] − L_n(w*)),   p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²),   nβ = n/log n by default,

sampled with SGLD chains that run vectorised (``sgld``); ``step_size=None`` calibrates ε, γ and the number of
SGLD steps between recorded draws automatically (``calibrate``: k = ⌈2τ⌉ ≤ 16 from the pilot's autocorrelation
time τ of ‖w − w*‖², so slowly mixing models get longer chains at the same draw budget; an explicit
``steps_per_draw`` is honoured, and it is 1 when ``step_size`` is given). ``loss_fn(model, batch)`` must return the mean negative log-likelihood of the batch (a
likelihood, not an RL surrogate); ``data`` is a sequence of batches whose total number of examples is n.

The expectation is averaged over post-burn-in draws only, with the loss taken at the midpoint of consecutive SGLD
iterates (``stats``: removes the step-size bias on quadratic parts of the loss, so calibrated steps can be large
and mix fast); ``LLCResult.llc_plain_per_chain`` holds the plain estimator (loss at the iterates) as other tools
report it.

Example::

    res = estimate_llc(model, loss_fn, batches)
    res.llc_mean, res.llc_std, res.warnings
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from discrepancy.analysis.llc.calibrate import Calibration, calibrate
from discrepancy.analysis.llc.sgld import LossFn, SGLDSettings, Target, run_chains, vectorising_pays
from discrepancy.analysis.llc.stats import chain_llcs, diagnose, step_values
from discrepancy.errors import DiscrepancyError


class LLCError(DiscrepancyError):
    """The LLC could not be estimated as asked (bad inputs, or every chain diverged)."""


@dataclass
class LLCResult:
    """An LLC estimate with everything needed to judge and reproduce it."""

    llc_mean: float
    llc_std: float
    llc_per_chain: list[float]
    loss_traces: torch.Tensor  # [chains, draws] float64: L_b(w) − L_b(w*) after burn-in
    init_loss: float  # L_n(w*)
    settings: dict[str, Any]  # ε, γ, nβ, chains, draws, burn-in, steps per draw, seed, precondition, n, d, …
    llc_plain_per_chain: list[float]  # the uncorrected estimator (loss at the iterates), as other tools report it
    warnings: list[str] = field(default_factory=list)
    calibration: Calibration | None = None

    @property
    def healthy(self) -> bool:
        return not self.warnings

    @property
    def llc_plain_mean(self) -> float:
        """Mean over finite chains of the uncorrected estimator."""
        ok = [x for x in self.llc_plain_per_chain if math.isfinite(x)]
        return sum(ok) / len(ok) if ok else math.nan


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
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current weights; see the module docstring.

    ``step_size=None`` calibrates ε (and γ when ``localization`` is None) by the rule in ``calibrate``. Chains run in
    one vmapped computation unless the model cannot be traced by vmap, or one timed step shows that running them one
    after another is faster on this model, or ``vectorise=False`` (same noise, same result up to rounding).
    Raises ``LLCError`` if every chain diverges; other problems (negative LLC, drifting trace, some chains diverged)
    are returned in ``warnings`` and also emitted as Python warnings. ``precondition`` turns on RMSProp-preconditioned
    SGLD (the midpoint correction is then only approximate). ``init_spread`` (std of the chains' start around
    w*) defaults to the calibrated value, or 0 when ``step_size`` is given; likewise ``steps_per_draw`` (SGLD steps
    per recorded draw; burn-in is counted in draws, so it lengthens too); pass a result's ``settings`` back in to
    freeze them across checkpoints.
    """
    if num_chains < 1 or num_draws < 2 or num_burnin < 0:
        raise LLCError("need num_chains ≥ 1, num_draws ≥ 2 and num_burnin ≥ 0")
    if steps_per_draw is not None and steps_per_draw < 1:
        raise LLCError(f"steps_per_draw = {steps_per_draw}: pass an integer ≥ 1, or None to choose it automatically")
    batches = list(data)  # fixed batches: each one's loss at w* is the control variate of its draws
    if not batches:
        raise LLCError("data is empty: pass at least one batch")
    n = sum(_batch_len(b) for b in batches)
    if nbeta is None:
        if n < 3:
            raise LLCError(f"n = {n} examples is too few for the default nβ = n/log n: pass nbeta")
        nbeta = n / math.log(n)
    names = _select_params(model, params)
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
        elif localization is None:
            localization = 0.0
        s = SGLDSettings(
            step_size=step_size, localization=localization, nbeta=nbeta, num_chains=num_chains,
            num_draws=num_draws, num_burnin=num_burnin, precondition=precondition, init_spread=init_spread or 0.0,
            seed=seed, steps_per_draw=steps_per_draw or 1,
        )
        traces = run_chains(target, s, vec)
    finally:
        model.train(was_training)
    return _result(target, traces, s, n, calib)


def _result(target: Target, traces: Any, s: SGLDSettings, n: int, calib: Calibration | None) -> LLCResult:
    per_chain = chain_llcs(traces, s)  # [C]
    values = step_values(traces, s)[:, s.num_burnin :]  # [C, draws]
    warns = diagnose(values, per_chain, target.dim)
    if calib is not None and calib.warning:
        warns.append(calib.warning)
    ok = per_chain[torch.isfinite(per_chain) & (per_chain <= target.dim)]
    if ok.numel() == 0:
        raise LLCError(
            f"every chain diverged at step size {s.step_size:.3g}: pass a smaller step_size, or step_size=None to calibrate"
        )
    plain = chain_llcs(traces, s, corrected=False)
    ref = target.ref_losses.double()
    sizes = torch.tensor([float(_batch_len(b)) for b in target.batches], dtype=torch.float64)
    settings = {**asdict(s), "n": n, "num_params": target.dim, "vectorised": traces.vectorised}
    for w in warns:
        warnings.warn(w, stacklevel=3)
    return LLCResult(
        llc_mean=float(ok.mean()),
        llc_std=float(ok.std()) if ok.numel() > 1 else 0.0,
        llc_per_chain=[float(x) for x in per_chain],
        loss_traces=traces.deltas[:, s.num_burnin :].cpu(),
        init_loss=float((ref.cpu() * sizes).sum() / sizes.sum()),
        settings=settings,
        llc_plain_per_chain=[float(x) for x in plain],
        warnings=warns,
        calibration=calib,
    )
