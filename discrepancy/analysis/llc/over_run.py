"""LLC over a training run: the weight-refined LLC of the LoRA adapter at every snapshot (docs/llc.md).

For each snapshot w* the model is rebuilt (base + adapter at that step) and the LLC of the adapter parameters is
estimated on a fixed evaluation set of contexts, the first recorded (prompt, completion) pairs, with the loss
K(w) = token-mean KL(p_{w*} ‖ p_w) at the completion positions (``evalset``: w* is then an exact minimum of the loss,
which the NLL of the recorded completions is not, and every estimate on that loss came out negative).

Settings are frozen across snapshots, as LLCs are only comparable at equal (ε, γ, nβ, chains, draws): they are
calibrated once, at the LAST snapshot (the trained adapter; the first one, B = 0, is a singular point with little
curvature to calibrate on), by ``calibrate.resolution_settings`` (the top Hessian eigenvalue h_max, a few seconds),
stored in ``llc_settings.json`` with the run's identity, a fingerprint of the evaluation set and the calibration's
cost, and reused on resume. Where a snapshot's chains diverge at the frozen ε, the estimator halves it and says so in
that row's ``warnings``. Results go to ``llc.csv`` (one row per snapshot, appended as each finishes, so an
interrupted job resumes where it stopped), ``llc.png`` and ``llc_stages.csv`` (stage boundaries, ``stages``, in the
layout of the analysis event table); the folder's contract is ``discrepancy.runfile.results``. A resume asked for
other chains, draws, burn-in, seed, evaluation set or loss is refused; results of an earlier run under the same name
(``train --force``) are discarded (``results.check_run_identity``).

The estimate is the plain one (loss at the SGLD iterates, ``corrected=False``) at c = ε·nβ·h_max = ½: with n in the
hundreds of tokens the chains roam where the KL is far from quadratic, and the midpoint correction, exact on
quadratic losses, then over-corrects (last demo snapshot, 4 × 400 draws: corrected 53 / 70 / 85 at c = 1, ½, ¼ against
plain 101 / 98 / 95, both heading for ≈ 92 as c → 0). The plain estimate at c = ½ sits ≈ 7 % above that limit, the
same bias at every snapshot since ε is frozen. γ = ``RESOLUTION_GAMMA``·nβ·h_max localises the chains enough that they
settle within the default burn-in of 20 draws (the slowest direction relaxes in 1/(ε·γ) = 40 steps, the ones that
carry loss much faster; with 10 burn-in draws the drift check fired at the demo's first snapshot in 4 of 4 seeds,
with 20 in none): the estimate counts the directions whose curvature is within a factor ≈ 20 of the top one, and
longer chains do not change it (last demo snapshot: 99 ± 1 with 20 + 20 draws, 98.3 with 100 + 400).

Every row carries a health verdict (``health``): a negative mean, diverged chains (left out of the mean) or chains
that disagree mean the number is not an LLC, and such rows yield no stage boundary.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from discrepancy.analysis.llc.calibrate import resolution_settings
from discrepancy.analysis.llc.estimator import LLCResult, estimate_llc
from discrepancy.analysis.llc.evalset import (
    EvalBatch, completion_tokens, eval_pairs_from_run, pairs_fingerprint, self_kl, snapshot_targets, tokenize_pairs,
)
from discrepancy.analysis.llc.health import health_of, healthy_mask, with_health
from discrepancy.analysis.llc.sgld import Target
from discrepancy.analysis.llc.stages import healthy_stage_boundaries, llc_stage_events
from discrepancy.analysis.phases import PHASE, PHASE_TRIGGER, SWITCH_COLUMNS, phase_switches
from discrepancy.analysis.step_axis import switch_handle, switch_lines
from discrepancy.errors import DiscrepancyError
from discrepancy.runfile import open_run
from discrepancy.runfile.results import (
    LLC, LLC_COLUMNS, LLC_CSV, LLC_PNG, LLC_STAGES_CSV, Notice, append_table, atomic_path, check_run_identity,
    differing, identity_record, output_dir, write_table,
)

OnSnapshot = Callable[[int, int, int], None]  # (done, total, step)
LOSS = "self_kl"  # recorded with the settings: results on another evaluation loss are not resumed
FROZEN = ("step_size", "localization", "nbeta", "init_spread", "num_chains", "num_draws", "num_burnin", "seed",
          "steps_per_draw", "corrected")


class LLCSettingsError(DiscrepancyError):
    """The output folder holds LLC results computed with other settings; mixing them would make the curve a lie."""


def llc_over_run(
    run_path: str | Path,
    out: str | Path | None = None,
    *,
    eval_pairs: Sequence[tuple[str, str]] | None = None,
    eval_size: int = 16,
    num_chains: int = 4,
    num_draws: int = 20,
    num_burnin: int = 20,
    seed: int = 0,
    on_snapshot: OnSnapshot | None = None,
    notice: Notice | None = None,
    on_message: Callable[[str], None] | None = None,
    trust_paths: bool = False,
) -> pd.DataFrame:
    """Estimate the adapter's LLC at every snapshot of a run; returns the LLC-vs-step table (also in ``llc.csv``).

    ``eval_pairs``: the evaluation contexts (default: the first ``eval_size`` recorded samples of the run).
    ``on_snapshot(done, total, step)`` is called after each snapshot (the CLI hangs a progress bar on it);
    ``on_message(line)`` receives one line per phase (calibration and its cost, each snapshot's estimate and time);
    ``notice(line)`` receives the notice that results of a re-created run were discarded (default: a warning).
    ``trust_paths``: read the base model where the run file records it even outside the run's folder (the user said
    so, ``--trust-run``); otherwise a received run file never sends the reader elsewhere.
    The run and its model are checked before anything is written, so a failed call leaves no folder behind.
    Resuming with settings that change the results (evaluation set, loss, chains, draws, burn-in, seed) raises
    ``LLCSettingsError``; results of another run are discarded or refused (``results.check_run_identity``).
    """
    from discrepancy.modeling import model_from_run  # lazily: loads transformers

    say = on_message or (lambda line: None)
    run_path = Path(run_path)
    if not run_path.is_file():
        raise DiscrepancyError(f"{run_path} is not a run file: pass the path of a run (.h5)")
    out = output_dir(run_path, out)
    with open_run(run_path) as run:
        steps = list(run.snapshot_steps)
        if not steps:
            raise DiscrepancyError(f"{run_path} holds no LoRA snapshot: train with snapshots enabled")
        pairs = list(eval_pairs) if eval_pairs is not None else eval_pairs_from_run(run, eval_size)
        budget = dict(num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, seed=seed)
        identity = identity_record(run.identity, run_path)
        # refuse other sampler settings before the (slow) model load; the evaluation set is compared once tokenized
        _stored_settings(out, run_path, identity["run_id"], budget, notice)
        model, tokenizer = model_from_run(run, steps[-1], dtype=torch.float32, trust_paths=trust_paths)
        batches = tokenize_pairs(pairs, tokenizer, batch_size=max(len(pairs), 1))  # one batch: no minibatch noise
        n_tokens = completion_tokens(batches)
        if n_tokens < 3:
            raise DiscrepancyError("the LLC evaluation set has fewer than 3 completion tokens: use a larger "
                                   "evaluation set (--probe-size)")
        # stored under the historical "probe" keys: older settings files keep resuming
        eval_id = {"probe_pairs": len(pairs), "probe_tokens": n_tokens, "probe_sha256": pairs_fingerprint(pairs),
                   "loss": LOSS}
        stored = _stored_settings(out, run_path, identity["run_id"], budget | eval_id, notice)
        out.mkdir(parents=True, exist_ok=True)
        if stored is None:
            say(f"calibrating the sampler on the last snapshot (step {steps[-1]}, {n_tokens} evaluation tokens)")
            stored = _calibrate(out, model, batches, n_tokens, budget, identity | eval_id | {"calibrated_at": steps[-1]})
            say(f"calibrated in {stored['calibration_seconds']:.1f} s: {_describe(stored)}; reused for every snapshot")
        else:
            say(f"reusing the calibration in {LLC.settings_path(out)} (made in "
                f"{stored.get('calibration_seconds', math.nan):.1f} s): {_describe(stored)}")
        _estimate_missing(run, model, batches, _frozen(stored), out / LLC_CSV, on_snapshot, say)
        dim = stored.get("num_params")
        switches = run_switches(run)
    return _finish(out, steps, int(dim) if dim is not None else None, switches)


def _describe(settings: dict[str, Any]) -> str:
    return (f"ε = {settings['step_size']:.3g}, γ = {settings['localization']:.3g}, nβ = {settings['nbeta']:.3g}, "
            f"{settings['num_chains']} chains × ({settings['num_burnin']} + {settings['num_draws']}) draws")


def _estimate_missing(run: Any, model: torch.nn.Module, batches: list[EvalBatch], frozen: dict[str, Any],
                      csv: Path, on_snapshot: OnSnapshot | None, say: Callable[[str], None]) -> None:
    """Estimate the snapshots not yet in ``csv`` with the frozen settings, appending one row as each finishes (an
    interrupted job resumes where it stopped)."""
    from discrepancy.modeling.from_run import load_snapshot  # lazily: loads transformers

    steps = list(run.snapshot_steps)
    done = set(_read_done(csv)["step"].astype(int))
    todo = [s for s in steps if s not in done]
    if done and todo:
        say(f"resuming: {len(done)} of {len(steps)} snapshots already in {csv.name}")
    for k, step in enumerate(todo):
        t0 = time.perf_counter()
        load_snapshot(model, run, step)  # with the scale of its step (a run whose LoRA α followed a schedule)
        res = _estimate(model, batches, frozen)
        row = _row(step, res)
        append_table(pd.DataFrame([row], columns=LLC_COLUMNS), csv)
        i = len(steps) - len(todo) + k + 1
        say(f"[{i}/{len(steps)}] step {step}: LLC {res.llc_mean:.4g} (s.e. {row['llc_se']:.2g}), {row['health']} "
            f"({time.perf_counter() - t0:.1f} s)")
        if on_snapshot is not None:
            on_snapshot(i, len(steps), step)


def _estimate(model: torch.nn.Module, batches: list[EvalBatch], frozen: dict[str, Any]) -> LLCResult:
    """The LLC at the model's current adapter, on K = KL(current ‖ ·) at the evaluation contexts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kept in the CSV's warnings column instead
        return estimate_llc(model, self_kl, snapshot_targets(model, batches), backoff=True, **frozen)


def _row(step: int, res: LLCResult) -> dict[str, Any]:
    """One row of ``llc.csv``; a step size halved after a divergence is said in ``warnings`` (the row stays
    comparable: only ε changed, and the plain estimate moves by a few per cent between c = ½ and ¼)."""
    notes = list(res.warnings)
    if len(res.backoff) > 1:
        notes.append(f"chains diverged at the frozen step size: halved {len(res.backoff) - 1}× to "
                     f"ε = {res.settings['step_size']:.3g}")
    warn = " | ".join(notes)
    return {"step": step, "llc_mean": res.llc_mean, "llc_std": res.llc_std,
            "llc_per_chain": json.dumps(res.llc_per_chain), "init_loss": res.init_loss, "warnings": warn,
            **health_of(res.llc_per_chain, res.settings["num_params"], " | ".join(res.warnings))}


def run_switches(run: Any) -> pd.DataFrame:
    """The curriculum phase switches of an open run (``phases.phase_switches``; empty without a ``phase`` series),
    drawn on the LLC curve as on the analysis' figures."""
    names = [n for n in (PHASE, PHASE_TRIGGER) if n in run.schema.series]
    if PHASE not in names or not run.num_steps:
        return pd.DataFrame(columns=SWITCH_COLUMNS)
    return phase_switches(run.series(names), run.config_toml)


def _finish(out: Path, steps: list[int], dim: int | None, switches: pd.DataFrame) -> pd.DataFrame:
    """The table of this run's snapshots (health filled in for rows written before it existed), its figure and its
    stage boundaries."""
    table = with_health(_read_done(out / LLC_CSV), dim)
    table = table[table["step"].astype(int).isin(steps)].sort_values("step").reset_index(drop=True)
    plot_llc(table, out / LLC_PNG, switches)
    write_table(llc_stage_events(table), out / LLC_STAGES_CSV)
    return table


def _read_done(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=LLC_COLUMNS)


def _stored_settings(out: Path, run_path: Path, identity: str, current: dict[str, Any],
                     notice: Notice | None) -> dict[str, Any] | None:
    """The settings stored in ``out`` when its results may be resumed; None when there are none (left) to resume.

    Results of a re-created run are discarded (with a notice); other settings are refused, naming the differences.
    Settings files written before the evaluation loss was recorded used the token NLL of the recorded completions.
    """
    stored = LLC.read_settings(out)
    if stored is None or not check_run_identity(stored, identity, run_path, out, LLC.owned(out), LLC.what, notice):
        return None
    diff = differing(stored, current)
    if "loss" in current and stored.get("loss", "token_nll") != current["loss"]:
        diff.append(f"loss {stored.get('loss', 'token_nll')}→{current['loss']}")
    if diff:
        raise LLCSettingsError(f"{out} holds LLC results computed with other settings ({', '.join(dict.fromkeys(diff))}):"
                               f" pass a fresh --out folder, or delete {out / LLC_CSV} and {LLC.settings_path(out)} "
                               "to recompute")
    return stored


def _frozen(stored: dict[str, Any]) -> dict[str, Any]:
    """The estimator's keyword arguments from a stored settings file."""
    return {k: stored[k] for k in FROZEN}


def _calibrate(out: Path, model: torch.nn.Module, batches: list[EvalBatch], n_tokens: int, budget: dict[str, int],
               record: dict[str, Any]) -> dict[str, Any]:
    """Calibrate the settings shared by every snapshot on the model as loaded (the last snapshot) and store them
    with ``record`` (run identity, evaluation set, loss) and the calibration's cost in seconds."""
    t0 = time.perf_counter()
    nbeta = n_tokens / math.log(n_tokens)
    names = [k for k, _ in model.named_parameters() if "lora_" in k]
    target = Target(model, self_kl, snapshot_targets(model, batches), names)
    calib = resolution_settings(target, nbeta)
    stored = {"step_size": calib.step_size, "localization": calib.localization, "nbeta": nbeta, "init_spread": 0.0,
              "steps_per_draw": 1, "corrected": False, **budget, **record, "num_params": target.dim,
              "h_max": calib.h_max, "calibration_seconds": time.perf_counter() - t0}
    LLC.write_settings(out, stored)
    return stored


def evenly_spaced(steps: np.ndarray) -> bool:
    """Whether snapshot steps are about evenly spaced (largest gap at most twice the smallest; ≥ 3 steps): drawn on
    a linear axis, since a log one would crowd the late snapshots and leave half the width to the first gap."""
    gaps = np.diff(np.sort(np.asarray(steps, dtype=float)))
    return len(gaps) >= 2 and gaps.min() > 0 and gaps.max() <= 2 * gaps.min()


def plot_llc(table: pd.DataFrame, path: Path, switches: pd.DataFrame | None = None) -> Path:
    """Draw `llc_figure` into ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = llc_figure(table, switches)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def llc_figure(table: pd.DataFrame, switches: pd.DataFrame | None = None):  # noqa: ANN201 - a matplotlib Figure
    """LLC ± standard error against step, from the first snapshot's step on (never a negative step): a linear axis
    for evenly spaced snapshots, else a log axis (symlog from 0, so step 0 shows); unhealthy estimates are hollow
    grey markers, stage boundaries (from healthy rows) dashed lines, and a curriculum run's phase switches
    (``switches``, ``phases.SWITCH_COLUMNS``) green dash-dot lines as on the analysis' figures."""
    import matplotlib  # lazily: matplotlib costs about a second to import

    matplotlib.use("Agg")  # files only, no display: the CLI also runs on headless machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = healthy_mask(table).to_numpy()
    steps, y = table["step"].to_numpy(), table["llc_mean"].to_numpy(float)
    se = table["llc_se"].to_numpy(float) if "llc_se" in table else np.zeros(len(table))
    ax.plot(steps, y, color="C0", lw=0.8, alpha=0.5, clip_on=False)
    # unclipped: the axis starts at the first snapshot, whose marker sits on the left edge
    ax.errorbar(steps[ok], y[ok], yerr=se[ok], fmt="o", ms=4, capsize=2, color="C0", label="LLC ± s.e. (healthy)",
                clip_on=False, zorder=3)
    if (~ok).any():
        ax.errorbar(steps[~ok], y[~ok], yerr=se[~ok], fmt="o", ms=5, capsize=2, color="grey", mfc="none",
                    label="unhealthy: not an LLC (see llc.csv health)", clip_on=False, zorder=3)
    for b in healthy_stage_boundaries(table):
        ax.axvline(b, ls="--", color="grey", lw=0.8)
    _step_axis(ax, steps.astype(float))
    shown = switches[(switches["step"] >= ax.get_xlim()[0]) & (switches["step"] <= ax.get_xlim()[1])] \
        if switches is not None and len(switches) else pd.DataFrame(columns=SWITCH_COLUMNS)
    switch_lines(ax, shown)
    ax.set_xlabel("step")
    ax.set_ylabel("LLC (LoRA, weight-refined)")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + ([switch_handle()] if len(shown) else []), fontsize=8)
    fig.tight_layout()
    return fig


def _step_axis(ax, steps: np.ndarray) -> None:  # noqa: ANN001 - a matplotlib Axes
    """The x range: from the first snapshot's step to the last (a linear axis, no margin that would show negative
    steps before step 0), or symlog from 0 for snapshots spread over decades."""
    if not len(steps):
        return
    if evenly_spaced(steps):
        ax.set_xlim(float(steps.min()), float(steps.max()))
    else:  # spread over decades (a log schedule of snapshots): a log axis from 0
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0, right=max(float(steps.max()) * 1.3, 1.0))
