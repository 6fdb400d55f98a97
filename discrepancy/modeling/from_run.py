"""Rebuild a run's model (base + LoRA adapter at a snapshot step) from what the run file records.

The trainer writes these meta keys (see `run_model_meta`); analyses and probes read them back here, so neither
side imports the other:

- ``base_model_kind``: ``"tiny"`` (the embedded model, SFT-warm-started and saved next to the run) or ``"local"``;
- ``base_model_path``: the base model folder; relative paths are relative to the run file's folder
  (``run.h5`` → ``run.base``), so a run and its base can be moved together;
- ``base_model_dtype``: the dtype the base was trained in (``"float32"`` / ``"bfloat16"``);
- ``lora_rank``, ``lora_alpha``, ``lora_target_modules``, ``lora_dropout``: the adapter settings;
- ``lora_rank_schedule``, ``lora_alpha_schedule`` (a growing adapter only, `modeling.lora_growth`): JSON lists of
  [step, value]. The adapter is allocated at ``lora_rank`` throughout, so every snapshot has that shape with zeros
  beyond the active rank; its scale at step t is α_t / ``lora_rank``.

Snapshots hold the adapter tensors by peft state-dict name; they are moved in with ``set_peft_model_state_dict``
and the scale of their step (`load_snapshot`), so a grown adapter's snapshots all load into the one allocated
adapter, and each computes the function the run had at its step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from discrepancy.modeling.errors import RunModelError
from discrepancy.modeling.local import load_local_model
from discrepancy.modeling.lora import LoraSettings, attach_lora, load_lora_state
from discrepancy.modeling.lora_growth import ALPHA_SCHEDULE_META, GrowthError, set_scale, snapshot_layout

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def base_dir_for(run_path: str | Path) -> Path:
    """Where the embedded tiny model's warm-started base is saved for a run file: ``run.h5`` → ``run.base``."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.stem + ".base")


def run_model_meta(
    kind: str, base_path: str | Path, lora: LoraSettings, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """The meta entries a run must carry for `model_from_run` (plain types only, as run-file attributes require)."""
    return {
        "base_model_kind": kind,
        "base_model_path": str(base_path),
        "base_model_dtype": str(dtype).removeprefix("torch."),
        "lora_rank": int(lora.rank),
        "lora_alpha": float(lora.alpha),
        "lora_target_modules": list(lora.target_modules),
        "lora_dropout": float(lora.dropout),
    }


def _meta(run: Any) -> dict[str, Any]:
    meta = dict(run.meta)
    rebuild = meta.get("model_rebuild", "ok")
    if rebuild != "ok":  # the writer said why this adapter cannot be rebuilt (e.g. a TRL run with DoRA)
        raise RunModelError(f"{getattr(run, 'path', 'run')}: {rebuild}")
    missing = [k for k in ("base_model_path", "lora_rank", "lora_alpha", "lora_target_modules") if k not in meta]
    if missing:
        raise RunModelError(f"{getattr(run, 'path', 'run')}: meta lacks {missing}; this run was not written by "
                            "`discrepancy train` and its model cannot be rebuilt")
    return meta


def run_folder(run: Any) -> Path:
    """The folder of a run (an open run or a path): what a user points at when they name a run file."""
    run_path = getattr(run, "path", run)
    return Path(run_path).resolve().parent if run_path is not None else Path.cwd()


def inside_run_folder(run: Any, path: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies in the run's folder or below it."""
    return Path(path).resolve().is_relative_to(run_folder(run))


def _resolve_base(run: Any, meta: dict[str, Any], trust_paths: bool) -> Path:
    base = Path(str(meta["base_model_path"]))
    if not base.is_absolute():
        base = run_folder(run) / base
    if not trust_paths and not inside_run_folder(run, base):
        # A run file someone sends decides nothing about what this machine reads beyond the run's own folder.
        raise RunModelError(f"{getattr(run, 'path', 'run')}: its base model is recorded at {base}, outside the run's "
                            "folder; pass --trust-run to read it (or keep the model next to the run)")
    if not base.is_dir():
        raise RunModelError(f"base model folder {base} not found; keep it next to the run file (it is written by "
                            "`discrepancy train` as <run>.base/) or restore the local model folder")
    return base


def lora_settings_from_meta(meta: dict[str, Any]) -> LoraSettings:
    """The `LoraSettings` recorded in a run's meta; a malformed value is a `RunModelError` naming the key."""
    targets = meta["lora_target_modules"]
    targets = [targets] if isinstance(targets, str) else [str(t) for t in np.asarray(targets).reshape(-1).tolist()]
    try:
        settings = LoraSettings(int(meta["lora_rank"]), float(meta["lora_alpha"]), tuple(targets),
                                float(meta.get("lora_dropout", 0.0)))
    except (TypeError, ValueError) as exc:
        raise RunModelError(f"the run's LoRA settings are malformed ({exc}); its model cannot be rebuilt") from None
    if settings.rank < 1 or not np.isfinite(settings.alpha) or not 0 <= settings.dropout < 1 or not targets:
        raise RunModelError(f"the run's LoRA settings are malformed (rank {settings.rank}, alpha {settings.alpha}, "
                            f"dropout {settings.dropout}, targets {targets}); its model cannot be rebuilt")
    return settings


def load_base_for_run(run: Any, dtype: torch.dtype | None = None, *,
                      trust_paths: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The run's base model (no adapter) and tokenizer, in eval mode, in the run's dtype unless ``dtype`` is given.

    ``run`` is an open run or the path of a run file. A base recorded outside the run's folder is read only with
    ``trust_paths`` (the user said so, e.g. ``--trust-run``): the run file alone never sends us elsewhere.
    """
    if isinstance(run, (str, Path)):
        from discrepancy.runfile import open_run

        with open_run(run) as opened:
            return load_base_for_run(opened, dtype, trust_paths=trust_paths)
    meta = _meta(run)
    dtype = dtype or _DTYPES.get(str(meta.get("base_model_dtype", "float32")), torch.float32)
    model, tokenizer = load_local_model(_resolve_base(run, meta, trust_paths), dtype=dtype)
    return model.eval(), tokenizer


def model_from_run(
    run: Any, step: int | None = None, dtype: torch.dtype | None = None, *, trust_paths: bool = False
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Base + LoRA adapter as it was at snapshot ``step`` (the last snapshot when None), in eval mode.

    ``run`` is an open run (``discrepancy.runfile.open_run``) or the path of a run file. Returns the peft-wrapped
    model and the tokenizer. ``trust_paths``: as in `load_base_for_run`.
    """
    if isinstance(run, (str, Path)):
        from discrepancy.runfile import open_run

        with open_run(run) as opened:
            return model_from_run(opened, step, dtype, trust_paths=trust_paths)
    steps = [int(s) for s in run.snapshot_steps]
    if not steps:
        raise RunModelError(f"{getattr(run, 'path', 'run')}: the run holds no LoRA snapshot")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise RunModelError(f"{getattr(run, 'path', 'run')}: no snapshot at step {step} (snapshots: "
                            f"{steps[:5]}{' ...' if len(steps) > 5 else ''} up to {steps[-1]})")
    lora = lora_settings_from_meta(_meta(run))  # malformed settings fail before the model is loaded
    snapshot_layout_of(run, step)  # and so do malformed growth schedules
    base, tokenizer = load_base_for_run(run, dtype, trust_paths=trust_paths)
    model = attach_lora(base, lora.rank, lora.alpha, lora.target_modules, lora.dropout)
    load_snapshot(model, run, step)
    return model.eval(), tokenizer


def snapshot_layout_of(run: Any, step: int) -> tuple[int, float]:
    """(active rank, scale s in ΔW = s·B·A) of the run's adapter at snapshot ``step`` (`lora_growth.snapshot_layout`);
    a run without growth: its ``lora_rank`` and α/r."""
    try:
        return snapshot_layout(_meta(run), step)
    except (GrowthError, TypeError, ValueError) as exc:
        raise RunModelError(f"{getattr(run, 'path', 'run')}: the run's LoRA growth schedules are malformed ({exc}); "
                            "its model cannot be rebuilt") from None


def load_snapshot(model: torch.nn.Module, run: Any, step: int) -> None:
    """Move the snapshot of ``step`` into ``model`` (built by `model_from_run`) with the scale of that step, so one
    model serves every snapshot of a run whose α or rank changed (what the LLC over a run does)."""
    _, scale = snapshot_layout_of(run, step)
    load_lora_state(model, run.snapshot(step))
    if ALPHA_SCHEDULE_META in _meta(run):  # otherwise peft's own α/r is the run's scale at every step
        set_scale(model, scale)
