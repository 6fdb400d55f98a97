"""LLC over a training run: the weight-refined LLC of the LoRA adapter at every snapshot (SPEC §5).

For each snapshot the model is rebuilt (base + adapter at that step) and the LLC of the adapter parameters is
estimated on a fixed probe set of (prompt, completion) pairs with the token-mean NLL of the completions as the loss
(the GRPO objective is not a likelihood). n is the number of completion tokens, so nβ = n/log n.

Settings are frozen across snapshots, as LLCs are only comparable at equal (ε, γ, nβ, chains, draws, steps per
draw): they are calibrated once, at the LAST snapshot (the trained adapter; the first one, B = 0, is a singular point
with little curvature to calibrate on), stored in ``llc_settings.json`` with the run's identity and a fingerprint of
the probe set, and reused on resume. Results go to ``llc.csv`` (one row per snapshot, appended as each finishes, so an
interrupted job resumes where it stopped), ``llc.png`` and ``llc_stages.csv`` (stage boundaries in the column layout
of the analysis event table). A resume asked for other chains, draws, burn-in, seed or probe set is refused; results
of an earlier run under the same name (``train --force``) are discarded (``llc_resume``).

Every row carries a health verdict (``llc_health``): a negative mean, diverged chains (left out of the mean) or
chains that disagree mean the number is not an LLC. Stage boundaries (Hoogland et al. 2024) are the critical points
of the LLC curve against log step after Gaussian smoothing, snapshots where the smoothed slope changes sign, and are
computed from the healthy rows only.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from discrepancy.analysis.llc import LLCResult, estimate_llc
from discrepancy.analysis.llc_health import HEALTH_COLUMNS, health_of, healthy_mask, with_health
from discrepancy.analysis.llc_resume import Notice, check_run_identity, differing
from discrepancy.errors import DiscrepancyError

CSV_NAME, SETTINGS_NAME, PNG_NAME, STAGES_NAME = "llc.csv", "llc_settings.json", "llc.png", "llc_stages.csv"
# llc_std: spread across chains; llc_se: standard error of the mean (std/√chains kept); health: see llc_health
COLUMNS = ["step", "llc_mean", "llc_std", "llc_per_chain", "init_loss", "warnings", *HEALTH_COLUMNS]


@dataclass(frozen=True)
class ProbeBatch:
    """Padded token tensors of a slice of the probe set; labels are -100 outside the completions."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]


def probe_pairs_from_run(run: Any, size: int) -> list[tuple[str, str]]:
    """The first ``size`` recorded (prompt, completion) samples of the run, in recording order (a fixed choice)."""
    df = run.samples()
    if df.empty:
        raise DiscrepancyError(f"{getattr(run, 'path', 'run')} has no recorded samples to build the LLC probe set "
                               "from (it was trained with samples_per_step = 0): retrain with samples_per_step ≥ 1 "
                               "to estimate its LLC")
    df = df[df["completion"].str.len() > 0].head(size)
    return list(zip(df["prompt"], df["completion"]))


def tokenize_probe(pairs: Sequence[tuple[str, str]], tokenizer: Any, batch_size: int = 8) -> list[dict[str, Any]]:
    """Token batches of the probe pairs; the loss covers the completion tokens and the EOS after them."""
    rows = []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p, c))
    batches = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), pad)  # [B, T]
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for j, (p, c) in enumerate(chunk):
            ids[j, : len(p) + len(c)] = torch.tensor(p + c)
            labels[j, len(p) : len(p) + len(c)] = torch.tensor(c)
            mask[j, : len(p) + len(c)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL per completion token (transformers' causal-LM loss ignores the -100 labels)."""
    return model(**batch).loss


def stage_boundaries(steps: Sequence[int], llc: Sequence[float], sigma: float = 1.0) -> list[int]:
    """Snapshot steps where the Gaussian-smoothed LLC curve, against log(step + 1), has a critical point."""
    from scipy.ndimage import gaussian_filter1d

    x = np.log1p(np.asarray(steps, dtype=float))
    y = np.asarray(llc, dtype=float)
    if len(x) < 4 or not np.isfinite(y).all():
        return []
    ys = gaussian_filter1d(y, sigma=sigma, mode="nearest")
    slope = np.gradient(ys, x)  # per unit log-step
    out = []
    for i in range(len(slope) - 1):
        if slope[i] * slope[i + 1] < 0:  # the smoothed slope changes sign between snapshots i and i+1
            pick = max if slope[i] > 0 else min  # a maximum or a minimum: report the more extreme snapshot
            out.append(int(steps[pick((i, i + 1), key=lambda j: ys[j])]))
    return out


EVENT_COLUMNS = ["event", "kind", "signal", "step", "end_step", "size", "score", "axis", "signals"]


def healthy_stage_boundaries(table: pd.DataFrame, sigma: float = 1.0) -> list[int]:
    """Stage boundaries of the LLC curve drawn through the healthy rows only (an unhealthy estimate is no LLC)."""
    ok = table[healthy_mask(table)]
    return stage_boundaries(list(ok["step"]), list(ok["llc_mean"]), sigma)


def llc_stage_events(table: pd.DataFrame) -> pd.DataFrame:
    """Stage boundaries (from healthy rows) as rows of the analysis event table (kind "llc_stage"; score: the LLC
    there), so they can be listed with the jumps and plateaus of ``discrepancy analyze``."""
    bounds = healthy_stage_boundaries(table)
    at = table.set_index("step")["llc_mean"]
    rows = [{"event": "", "kind": "llc_stage", "signal": "llc", "step": b, "end_step": b, "size": np.nan,
             "score": float(at.loc[b]), "axis": "log", "signals": ""} for b in bounds]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def _read_done(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=COLUMNS)


def llc_over_run(
    run_path: str | Path,
    out: str | Path | None = None,
    *,
    probe: Sequence[tuple[str, str]] | None = None,
    probe_size: int = 32,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 100,
    seed: int = 0,
    on_snapshot: Callable[[int, int, int], None] | None = None,
    notice: Notice | None = None,
) -> pd.DataFrame:
    """Estimate the adapter's LLC at every snapshot of a run; returns the LLC-vs-step table (also in ``llc.csv``).

    ``on_snapshot(done, total, step)`` is called after each snapshot (the CLI hangs a progress bar on it);
    ``notice(line)`` receives the notice that results of a re-created run were discarded (default: a warning).
    The run and its model are checked before anything is written, so a failed call leaves no folder behind.
    Resuming with settings that change the results (probe set, chains, draws, burn-in, seed) raises
    ``LLCSettingsError``; results of another run are discarded or refused (``llc_resume``).
    """
    from discrepancy.modeling import model_from_run
    from discrepancy.modeling.lora import load_lora_state
    from discrepancy.runfile import open_run

    run_path = Path(run_path)
    if not run_path.is_file():
        raise DiscrepancyError(f"{run_path} is not a run file: pass the path of a run (.h5)")
    out = Path(out) if out is not None else run_path.with_name(run_path.name + ".analysis")
    if out.exists() and not out.is_dir():
        raise DiscrepancyError(f"--out {out} is a file: pass a folder")
    csv, settings_path = out / CSV_NAME, out / SETTINGS_NAME
    with open_run(run_path) as run:
        steps = list(run.snapshot_steps)
        if not steps:
            raise DiscrepancyError(f"{run_path} holds no LoRA snapshot: train with snapshots enabled")
        pairs = list(probe) if probe is not None else probe_pairs_from_run(run, probe_size)
        budget = dict(num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, seed=seed)
        identity = {"run_id": run.identity, "run_path": str(run_path.resolve())}
        # refuse other sampler settings before the (slow) model load; the probe set is compared once tokenized
        _stored_settings(settings_path, out, run_path, identity["run_id"], budget, notice)
        model, tokenizer = model_from_run(run, steps[-1], dtype=torch.float32)
        batches = tokenize_probe(pairs, tokenizer)
        n_tokens = int(sum(int((b["labels"] != -100).sum()) for b in batches))
        if n_tokens < 3:
            raise DiscrepancyError("the LLC probe set has fewer than 3 completion tokens: use a larger probe set")
        probe_id = {"probe_pairs": len(pairs), "probe_tokens": n_tokens, "probe_sha256": _probe_hash(pairs)}
        stored = _stored_settings(settings_path, out, run_path, identity["run_id"], budget | probe_id, notice)
        out.mkdir(parents=True, exist_ok=True)
        if stored is None:
            frozen, last = _calibrate(settings_path, model, batches, n_tokens, budget, identity | probe_id)
        else:
            frozen, last = _frozen(stored), None
        dim = int(stored["num_params"]) if stored and "num_params" in stored else (last.settings["num_params"]
                                                                                   if last else None)
        done = _read_done(csv)
        todo = [s for s in steps if s not in set(done["step"].astype(int))]
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
            pd.DataFrame([row], columns=COLUMNS).to_csv(csv, mode="a", header=not csv.exists(), index=False)
            if on_snapshot is not None:
                on_snapshot(len(steps) - len(todo) + k + 1, len(steps), step)
    table = with_health(_read_done(csv), dim)
    table = table[table["step"].astype(int).isin(steps)].sort_values("step").reset_index(drop=True)
    plot_llc(table, out / PNG_NAME)
    llc_stage_events(table).to_csv(out / STAGES_NAME, index=False)
    return table


class LLCSettingsError(DiscrepancyError):
    """The output folder holds LLC results computed with other settings; mixing them would make the curve a lie."""


def _probe_hash(pairs: Sequence[tuple[str, str]]) -> str:
    """Fingerprint of the probe set: a different set of pairs gives different LLCs."""
    return hashlib.sha256(json.dumps([list(p) for p in pairs]).encode()).hexdigest()[:16]


def _stored_settings(path: Path, out: Path, run_path: Path, identity: str, current: dict[str, Any],
                     notice: Notice | None) -> dict[str, Any] | None:
    """The settings stored in ``out`` when its results may be resumed; None when there are none (left) to resume.

    Results of a re-created run are discarded (with a notice); other settings are refused, naming the differences.
    """
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    files = [out / n for n in (CSV_NAME, SETTINGS_NAME, PNG_NAME, STAGES_NAME)]
    if not check_run_identity(stored, identity, run_path, out, files, "LLC", notice):
        return None
    diff = differing(stored, current)
    if diff:
        raise LLCSettingsError(f"{out} holds LLC results computed with other settings ({', '.join(diff)}): pass a "
                               f"fresh --out folder, or delete {out / CSV_NAME} and {out / SETTINGS_NAME} to recompute")
    return stored


def _frozen(stored: dict[str, Any]) -> dict[str, Any]:
    """The sampler settings of a stored settings file (files written before steps per draw was calibrated ran one
    SGLD step per draw)."""
    keys = ("step_size", "localization", "nbeta", "init_spread", "num_chains", "num_draws", "num_burnin", "seed")
    return {k: stored[k] for k in keys} | {"steps_per_draw": stored.get("steps_per_draw", 1)}


def _calibrate(path: Path, model: torch.nn.Module, batches: list, n_tokens: int, budget: dict[str, int],
               record: dict[str, Any]) -> tuple[dict[str, Any], LLCResult]:
    """Calibrate the settings shared by every snapshot on the model as loaded (the last snapshot) and store them with
    ``record`` (run identity, probe set); the calibration's own estimate is returned for reuse."""
    nbeta = n_tokens / math.log(n_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = estimate_llc(model, token_nll, batches, nbeta=nbeta, **budget)
    calibrated = ("step_size", "localization", "nbeta", "init_spread", "steps_per_draw")
    frozen = {k: res.settings[k] for k in calibrated} | budget
    path.write_text(json.dumps({**frozen, **record, "calibrated_at": "last snapshot",
                                "num_params": res.settings["num_params"]}, indent=2))
    return frozen, res


def plot_llc(table: pd.DataFrame, path: Path) -> Path:
    """LLC ± standard error against step on a log axis (symlog from 0, so step 0 shows and no negative steps do);
    unhealthy estimates are hollow grey markers, stage boundaries (from healthy rows) dashed lines."""
    import matplotlib

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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
