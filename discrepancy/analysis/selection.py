"""Which series of a run are searched for events, and why the others are not.

Searched: every series that learning moves. Drawn but not searched: per-step timings (they follow machine load),
config schedules (set, not learned), smoothed copies of a searched series and series computed from a smoothed one
(``FROM_SMOOTHED``). Neither searched nor drawn: series with one value over the whole run, and series whose value is 0
by construction and whose records are float round-off (``round_off_series``). Each reason is said once, in a note,
with every name it covers.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.jumps import MIN_POINTS

# Per-step wall-clock timings jump with machine load (other jobs, cache, I/O), not with learning: by default they are
# plotted under "other" but not searched for jumps or plateaus, so they never join a phase transition.
# HF Trainer's evaluation timings (eval_runtime, eval_samples_per_second, eval_steps_per_second) are such series too.
TIMING = re.compile(r"^time_|_time$|_runtime$|_per_second$")  # per-step wall-clock series: they follow machine load
# Schedules are set by the config (recipe.STEP_SERIES: "learning rate / sampling temperature / KL weight β of the
# step"), not learned: a warm-up kink is the config's, not the run's. Plotted, never searched.
# A curriculum's phase index and trigger, and the reward weights the trainer sets, are decisions of the trainer too;
# so are a growing LoRA adapter's active rank and scale (lora.growth: set by its schedules) and the prompts a step
# draws (num_prompts: the batch controller's), and the closed-loop controllers' multipliers and decision flags
# (ctl_*: ``ctl_action`` is a sum of bit flags, no level at all).
SCHEDULE = re.compile(r"^(lr|learning_rate|temperature|beta|phase|phase_trigger|lora_active_rank|lora_scale"
                      r"|num_prompts)$|_schedule$|^reward_weight_|^ctl_")
# Which rows the post-step measurements read (instrumentation/shared.py: the micro-batch index, rotating from one
# measured step to the next, and the row count) is bookkeeping of the measurement, neither learned nor set by the
# recipe: neither searched nor drawn (a zig-zag across a panel of the losses figure says nothing); the run keeps it.
BOOKKEEPING = re.compile(r"^discrepancy_(micro|rows)$")
DERIVED_SUFFIX = "_ewma"  # X_ewma smooths X: a spike of X becomes a step of X_ewma, so only X is searched
# Series computed from a smoothed series inherit its steps: instrumentation.grad_noise records
# noise_snr = prompt groups of the step / b_simple_ewma, so one grad_sq spike moves b_simple_ewma for tens of steps
# and noise_snr with it (a "jump" and a "plateau" of a spike). Drawn, never searched, for the same reason as X_ewma.
FROM_SMOOTHED: dict[str, str] = {"noise_snr": "b_simple_ewma"}  # {series: the smoothed series it is computed from}
# Series that are a mean of mean-centred advantages, so 0 in value whenever the trainer makes one update per batch
# (ratio ≡ 1): GRPO's policy loss −mean(Â·ρ) and the advantages' own mean. Their records are then the round-off of
# summing terms as large as the step's advantages, and the advantages' extremes give that scale.
ROUND_OFF_SCALE: dict[str, tuple[str, ...]] = {"policy_loss": ("adv_min", "adv_max"),
                                               "adv_mean": ("adv_min", "adv_max")}
ROUND_OFF_ULPS = 8.0  # "a few ulps": recorded runs stay below 0.2 ulp; a real loss (μ > 1, bnpo) is ≥ 10⁴ ulps
EPS32 = float(np.finfo(np.float32).eps)  # the trainer computes in float32 (or coarser)


def constant_series(frame: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """{name: value} of the series among ``names`` whose finite values are all one value (at least MIN_POINTS).

    Such a series has neither jumps nor plateaus nor transients (a clip ratio of a run with one inner iteration is
    0 at every step, its ratio 1, ``skipped`` 0): searching it reports its whole run as one "plateau", drawing it
    fills a panel with a flat line. It is named once instead.
    """
    out = {}
    for name in names:
        y = frame[name].to_numpy()
        y = y[np.isfinite(y)]
        if y.size >= MIN_POINTS and y.min() == y.max():
            out[name] = float(y[0])
    return out


def round_off_series(frame: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """{name: largest |value| in float32 ulps of its scale} of the series among ``names`` that are float round-off
    of 0: at every step where it and its scale are finite (at least MIN_POINTS), |value| ≤ ROUND_OFF_ULPS · eps32 ·
    scale, the scale being the step's largest |value| of its companions in ``ROUND_OFF_SCALE``.

    Why a declared companion, not a rule over the values alone: a tiny magnitude says nothing by itself (a gradient
    norm of 1e-8 is a measurement), only its ratio to the terms the value is summed from does, and the run cannot
    say which those are; the trainer's definitions can (a policy loss with one update per batch is a mean of
    mean-centred advantages, ``trainers.grpo``). The name only picks the scale; the values decide: the same policy
    loss with several inner iterations or a token-weighted loss (bnpo, dapo) is far from 0 and is searched.
    Searching round-off finds "jumps" of 1e-8 that would count toward a phase transition.
    """
    out = {}
    for name in names:
        companions = [c for c in ROUND_OFF_SCALE.get(name, ()) if c in frame.columns]
        if not companions:
            continue
        scale = frame[companions].abs().max(axis=1, skipna=False).to_numpy()  # [steps] the step's largest |term|
        y = frame[name].to_numpy()
        ok = np.isfinite(y) & np.isfinite(scale)
        if ok.sum() < MIN_POINTS:
            continue
        ulps = np.abs(y[ok]) / (EPS32 * np.maximum(scale[ok], np.finfo(np.float64).tiny))  # [finite steps]
        if float(ulps.max()) <= ROUND_OFF_ULPS:
            out[name] = float(ulps.max())
    return out


def not_searched(names: list[str], *, timing_jumps: bool = False, schedule_jumps: bool = False) -> dict[str, str]:
    """{name: why} for the series that are plotted but not searched: timings (machine load), config schedules
    (set, not learned), ``X_ewma`` copies of a series X that is itself a column and the series computed from a
    smoothed one (``FROM_SMOOTHED``): smoothing turns a spike into a level change."""
    out = {name: "timing" for name in names if TIMING.search(name) and not timing_jumps}
    out |= {name: "schedule" for name in names if SCHEDULE.search(name) and not schedule_jumps and name not in out}
    out |= {name: "smoothed" for name in names
            if name not in out and (name in FROM_SMOOTHED
                                    or name.endswith(DERIVED_SUFFIX) and name[: -len(DERIVED_SUFFIX)] in names)}
    return out


def exclusion_notes(constant: dict[str, float], skipped: dict[str, str], bookkeeping: list[str] = (),
                    round_off: dict[str, float] | None = None) -> list[str]:
    """One note per reason a series is not searched (said once, with every name)."""
    notes = []
    if round_off:
        notes.append(f"{len(round_off)} series 0 by construction at one update per batch (a mean of mean-centred "
                     "advantages), recorded as float round-off, neither searched nor drawn: "
                     + ", ".join(f"{k} (|value| ≤ {v:.2g} float32 ulp of the step's largest |advantage|)"
                                 for k, v in round_off.items()))
    if bookkeeping:
        notes.append(f"{len(bookkeeping)} bookkeeping series of the post-step measurements ({', '.join(bookkeeping)}: "
                     "which rows they read) neither searched nor drawn; the run file keeps them")
    if constant:
        notes.append(f"{len(constant)} series constant over the whole run, neither searched nor drawn: "
                     + ", ".join(f"{k} ≡ {v:g}" for k, v in constant.items()))
    by = {why: [k for k, v in skipped.items() if v == why] for why in ("timing", "schedule", "smoothed")}
    if by["timing"]:
        notes.append(f"{len(by['timing'])} timing series ({', '.join(by['timing'])}) drawn in their own figure, not "
                     "searched: they follow machine load; --timing-jumps includes them")
    if by["schedule"]:
        notes.append(f"{len(by['schedule'])} config schedule(s) and trainer setting(s) ({', '.join(by['schedule'])}) "
                     "not searched: the config, the trainer's curriculum or its controllers set them")
    if by["smoothed"]:
        derived = [f"{k} from {FROM_SMOOTHED[k]}" for k in by["smoothed"] if k in FROM_SMOOTHED]
        notes.append(f"{len(by['smoothed'])} smoothed series ({', '.join(by['smoothed'])}) not searched: their raw "
                     "series are searched, and smoothing turns one spike into a level change"
                     + (f" (also in a series computed from a smoothed one: {', '.join(derived)})" if derived else ""))
    return notes
