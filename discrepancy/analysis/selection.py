"""Which series of a run are searched for events, and why the others are not.

Searched: every series that learning moves. Drawn but not searched: per-step timings (they follow machine load),
config schedules (set, not learned) and smoothed copies of a searched series. Neither searched nor drawn: series
with one value over the whole run. Each reason is said once, in a note, with every name it covers.
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


def not_searched(names: list[str], *, timing_jumps: bool = False, schedule_jumps: bool = False) -> dict[str, str]:
    """{name: why} for the series that are plotted but not searched: timings (machine load), config schedules
    (set, not learned) and ``X_ewma`` copies of a series X that is itself a column (smoothing turns a spike into a
    level change)."""
    out = {name: "timing" for name in names if TIMING.search(name) and not timing_jumps}
    out |= {name: "schedule" for name in names if SCHEDULE.search(name) and not schedule_jumps and name not in out}
    out |= {name: "smoothed" for name in names
            if name.endswith(DERIVED_SUFFIX) and name[: -len(DERIVED_SUFFIX)] in names and name not in out}
    return out


def exclusion_notes(constant: dict[str, float], skipped: dict[str, str], bookkeeping: list[str] = ()) -> list[str]:
    """One note per reason a series is not searched (said once, with every name)."""
    notes = []
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
        notes.append(f"{len(by['smoothed'])} smoothed series ({', '.join(by['smoothed'])}) not searched: their raw "
                     "series are searched, and smoothing turns one spike into a level change")
    return notes
