"""LLC over a training run: the weight-refined LLC of the LoRA adapter at every snapshot (SPEC §5).

For each snapshot the model is rebuilt (base + adapter at that step) and the LLC of the adapter parameters is
estimated on a fixed evaluation set of recorded (prompt, completion) pairs with the token-mean NLL of the completions
as the loss (``evalset``: the GRPO objective is not a likelihood).

Settings are frozen across snapshots, as LLCs are only comparable at equal (ε, γ, nβ, chains, draws, steps per
draw): they are calibrated once, at the LAST snapshot (the trained adapter; the first one, B = 0, is a singular point
with little curvature to calibrate on), stored in ``llc_settings.json`` with the run's identity and a fingerprint of
the evaluation set, and reused on resume. Results go to ``llc.csv`` (one row per snapshot, appended as each
finishes, so an interrupted job resumes where it stopped), ``llc.png`` and ``llc_stages.csv`` (stage boundaries,
``stages``, in the layout of the analysis event table); the folder's contract is ``discrepancy.runfile.results``.
A resume asked for other chains, draws, burn-in, seed or evaluation set is refused; results of an earlier run under
the same name (``train --force``) are discarded (``results.check_run_identity``).

Every row carries a health verdict (``health``): a negative mean, diverged chains (left out of the mean) or chains
that disagree mean the number is not an LLC, and such rows yield no stage boundary.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from discrepancy.analysis.llc.estimator import LLCResult, estimate_llc
from discrepancy.analysis.llc.evalset import (
    EvalBatch, completion_tokens, eval_pairs_from_run, pairs_fingerprint, token_nll, tokenize_pairs,
)
from discrepancy.analysis.llc.health import health_of, healthy_mask, with_health
from discrepancy.analysis.llc.stages import healthy_stage_boundaries, llc_stage_events
from discrepancy.errors import DiscrepancyError
from discrepancy.runfile import open_run
from discrepancy.runfile.results import (
    LLC, LLC_COLUMNS, LLC_CSV, LLC_PNG, LLC_STAGES_CSV, Notice, append_table, atomic_path, check_run_identity,
    differing, identity_record, output_dir, write_table,
)

OnSnapshot = Callable[[int, int, int], None]  # (done, total, step)


class LLCSettingsError(DiscrepancyError):
    """The output folder holds LLC results computed with other settings; mixing them would make the curve a lie."""


def llc_over_run(
    run_path: str | Path,
    out: str | Path | None = None,
    *,
    eval_pairs: Sequence[tuple[str, str]] | None = None,
    eval_size: int = 32,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 100,
    seed: int = 0,
    on_snapshot: OnSnapshot | None = None,
    notice: Notice | None = None,
) -> pd.DataFrame:
    """Estimate the adapter's LLC at every snapshot of a run; returns the LLC-vs-step table (also in ``llc.csv``).

    ``eval_pairs``: the evaluation set (default: the first ``eval_size`` recorded samples of the run).
    ``on_snapshot(done, total, step)`` is called after each snapshot (the CLI hangs a progress bar on it);
    ``notice(line)`` receives the notice that results of a re-created run were discarded (default: a warning).
    The run and its model are checked before anything is written, so a failed call leaves no folder behind.
    Resuming with settings that change the results (evaluation set, chains, draws, burn-in, seed) raises
    ``LLCSettingsError``; results of another run are discarded or refused (``results.check_run_identity``).
    """
    from discrepancy.modeling import model_from_run  # lazily: loads transformers

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
        model, tokenizer = model_from_run(run, steps[-1], dtype=torch.float32)
        batches = tokenize_pairs(pairs, tokenizer)
        n_tokens = completion_tokens(batches)
        if n_tokens < 3:
            raise DiscrepancyError("the LLC evaluation set has fewer than 3 completion tokens: use a larger "
                                   "evaluation set (--probe-size)")
        # stored under the historical "probe" keys: older settings files keep resuming
        eval_id = {"probe_pairs": len(pairs), "probe_tokens": n_tokens, "probe_sha256": pairs_fingerprint(pairs)}
        stored = _stored_settings(out, run_path, identity["run_id"], budget | eval_id, notice)
        out.mkdir(parents=True, exist_ok=True)
        if stored is None:
            frozen, last = _calibrate(out, model, batches, n_tokens, budget, identity | eval_id)
            dim = last.settings["num_params"]
        else:
            frozen, last, dim = _frozen(stored), None, stored.get("num_params")
        _estimate_missing(run, model, batches, frozen, last, out / LLC_CSV, on_snapshot)
    return _finish(out, steps, int(dim) if dim is not None else None)


def _estimate_missing(run: Any, model: torch.nn.Module, batches: list[EvalBatch], frozen: dict[str, Any],
                      last: LLCResult | None, csv: Path, on_snapshot: OnSnapshot | None) -> None:
    """Estimate the snapshots not yet in ``csv`` with the frozen settings, appending one row as each finishes (an
    interrupted job resumes where it stopped). ``last``: the calibration's estimate of the last snapshot, reused."""
    from discrepancy.modeling.lora import load_lora_state  # lazily: loads transformers

    steps = list(run.snapshot_steps)
    done = set(_read_done(csv)["step"].astype(int))
    todo = [s for s in steps if s not in done]
    for k, step in enumerate(todo):
        if step == steps[-1] and last is not None:
            res = last  # the calibration's final run used exactly the frozen settings on this snapshot
        else:
            load_lora_state(model, run.snapshot(step))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # kept in the CSV's warnings column instead
                res = estimate_llc(model, token_nll, batches, **frozen)
        warn = " | ".join(res.warnings) or ""
        row = {"step": step, "llc_mean": res.llc_mean, "llc_std": res.llc_std,
               "llc_per_chain": json.dumps(res.llc_per_chain), "init_loss": res.init_loss, "warnings": warn,
               **health_of(res.llc_per_chain, res.settings["num_params"], warn)}
        append_table(pd.DataFrame([row], columns=LLC_COLUMNS), csv)
        if on_snapshot is not None:
            on_snapshot(len(steps) - len(todo) + k + 1, len(steps), step)


def _finish(out: Path, steps: list[int], dim: int | None) -> pd.DataFrame:
    """The table of this run's snapshots (health filled in for rows written before it existed), its figure and its
    stage boundaries."""
    table = with_health(_read_done(out / LLC_CSV), dim)
    table = table[table["step"].astype(int).isin(steps)].sort_values("step").reset_index(drop=True)
    plot_llc(table, out / LLC_PNG)
    write_table(llc_stage_events(table), out / LLC_STAGES_CSV)
    return table


def _read_done(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=LLC_COLUMNS)


def _stored_settings(out: Path, run_path: Path, identity: str, current: dict[str, Any],
                     notice: Notice | None) -> dict[str, Any] | None:
    """The settings stored in ``out`` when its results may be resumed; None when there are none (left) to resume.

    Results of a re-created run are discarded (with a notice); other settings are refused, naming the differences.
    """
    stored = LLC.read_settings(out)
    if stored is None or not check_run_identity(stored, identity, run_path, out, LLC.owned(out), LLC.what, notice):
        return None
    diff = differing(stored, current)
    if diff:
        raise LLCSettingsError(f"{out} holds LLC results computed with other settings ({', '.join(diff)}): pass a "
                               f"fresh --out folder, or delete {out / LLC_CSV} and {LLC.settings_path(out)} to "
                               "recompute")
    return stored


def _frozen(stored: dict[str, Any]) -> dict[str, Any]:
    """The sampler settings of a stored settings file (files written before steps per draw was calibrated ran one
    SGLD step per draw)."""
    keys = ("step_size", "localization", "nbeta", "init_spread", "num_chains", "num_draws", "num_burnin", "seed")
    return {k: stored[k] for k in keys} | {"steps_per_draw": stored.get("steps_per_draw", 1)}


def _calibrate(out: Path, model: torch.nn.Module, batches: list[EvalBatch], n_tokens: int, budget: dict[str, int],
               record: dict[str, Any]) -> tuple[dict[str, Any], LLCResult]:
    """Calibrate the settings shared by every snapshot on the model as loaded (the last snapshot) and store them with
    ``record`` (run identity, evaluation set); the calibration's own estimate is returned for reuse."""
    nbeta = n_tokens / math.log(n_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = estimate_llc(model, token_nll, batches, nbeta=nbeta, **budget)
    calibrated = ("step_size", "localization", "nbeta", "init_spread", "steps_per_draw")
    frozen = {k: res.settings[k] for k in calibrated} | budget
    LLC.write_settings(out, {**frozen, **record, "calibrated_at": "last snapshot",
                             "num_params": res.settings["num_params"]})
    return frozen, res


def plot_llc(table: pd.DataFrame, path: Path) -> Path:
    """LLC ± standard error against step on a log axis (symlog from 0, so step 0 shows and no negative steps do);
    unhealthy estimates are hollow grey markers, stage boundaries (from healthy rows) dashed lines."""
    import matplotlib  # lazily: matplotlib costs about a second to import

    matplotlib.use("Agg")  # files only, no display: the CLI also runs on headless machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = healthy_mask(table).to_numpy()
    steps, y = table["step"].to_numpy(), table["llc_mean"].to_numpy(float)
    se = table["llc_se"].to_numpy(float) if "llc_se" in table else np.zeros(len(table))
    ax.plot(steps, y, color="C0", lw=0.8, alpha=0.5)
    ax.errorbar(steps[ok], y[ok], yerr=se[ok], fmt="o", ms=4, capsize=2, color="C0", label="LLC ± s.e. (healthy)")
    if (~ok).any():
        ax.errorbar(steps[~ok], y[~ok], yerr=se[~ok], fmt="o", ms=5, capsize=2, color="grey", mfc="none",
                    label="unhealthy: not an LLC (see llc.csv health)")
    for b in healthy_stage_boundaries(table):
        ax.axvline(b, ls="--", color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0, right=max(float(steps.max()) * 1.3, 1.0) if len(steps) else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("LLC (LoRA, weight-refined)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
