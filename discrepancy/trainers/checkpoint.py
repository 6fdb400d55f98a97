"""Resumable checkpoints: adapter, optimizer, random-number states and step, next to the run file.

``run.h5`` → ``run.ckpt.pt``. Written to a temporary file and renamed, so a crash while saving leaves the previous
checkpoint intact. Loaded with ``weights_only=True``: a checkpoint holds tensors and plain Python values only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling.lora import load_lora_state, lora_state
from discrepancy.trainers.control import ControlState
from discrepancy.trainers.recipe import TrainState


class CheckpointError(DiscrepancyError):
    """No usable checkpoint to resume from."""


def checkpoint_path(run_path: str | Path) -> Path:
    """Where the checkpoint of ``run_path`` lives: ``run.h5`` → ``run.ckpt.pt``."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.stem + ".ckpt.pt")


def save_checkpoint(run_path: str | Path, state: TrainState, run_id: str = "") -> Path:
    """Save everything needed to continue ``state`` after its last completed step; ``run_id`` is the identity of
    the run file it belongs to (checked on resume)."""
    path = checkpoint_path(run_path)
    payload = {
        "run_id": run_id,
        "step": state.step,
        "bad_steps": state.bad_steps,
        "bad_reason": state.bad_reason,
        "adapter": lora_state(state.model),
        "optimizer": state.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "prompt_rng": state.prompt_rng.getstate(),
        "python_rng": random.getstate(),
        "instruments": state.hooks.state_dict(),  # running averages, start policy, probe batch
        "control": state.control.state.to_dict() if state.control is not None else None,
        "growth": state.growth.state_dict() if state.growth is not None else None,
        "orchestration": state.orchestration.state_dict() if state.orchestration is not None else None,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk above all: the previous checkpoint stays whole, the partial copy goes
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: could not write the checkpoint of step {state.step} "
                              f"({exc.strerror or exc}); the previous checkpoint and every flushed step of the run "
                              "are intact: free space and continue with --resume") from None
    return path


def load_checkpoint(run_path: str | Path, state: TrainState, *, run_id: str | None = None,
                    last_step: int | None = None) -> None:
    """Restore adapter, optimizer, RNG states and step into ``state`` (built the same way as the original run).

    Refuses a checkpoint of another run: one whose recorded run identity differs from ``run_id``, or one ahead of
    the run file's ``last_step`` (resuming from it would leave a gap of unrecorded steps).
    """
    path = checkpoint_path(run_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (a run writes one every run.checkpoint_every "
                              "steps and at the end); start a new run instead")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same actionable message
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}); start a new run") from None
    own = payload.get("run_id") or None  # absent in checkpoints of older versions
    if run_id is not None and own is not None and own != run_id:
        raise CheckpointError(f"{path} belongs to another run than {Path(run_path).name} (a run file with the same "
                              "stem, or an earlier run under this name); start a new run")
    if last_step is not None and int(payload["step"]) > last_step:
        raise CheckpointError(f"{path} is at step {int(payload['step'])} but {Path(run_path).name} ends at step "
                              f"{last_step}: the checkpoint is not this run's; start a new run")
    try:
        load_lora_state(state.model, payload["adapter"])
        state.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:  # shapes or names differ: another model or adapter
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} does not fit the run's model and adapter ({first}); resume with the run's "
                              "own config, or start a new run") from None
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    state.prompt_rng.setstate(_as_rng_state(payload["prompt_rng"]))
    random.setstate(_as_rng_state(payload["python_rng"]))
    state.hooks.load_state_dict(payload.get("instruments", []))  # absent in checkpoints of older versions
    if state.control is not None and payload.get("control"):  # the controllers continue where they were
        state.control.state = ControlState.from_dict(payload["control"])
    if state.growth is not None and payload.get("growth"):  # the active rank: growths already made stay made
        state.growth.load_state_dict(payload["growth"])
    if state.orchestration is not None and payload.get("orchestration"):  # phase, ledger and reward weights
        state.orchestration.load_state_dict(payload["orchestration"])
    state.step = int(payload["step"])
    state.bad_steps = int(payload["bad_steps"])
    state.bad_reason = str(payload.get("bad_reason", ""))  # absent in checkpoints of older versions


def _as_rng_state(value: object) -> tuple:
    """``random.Random`` states must be nested tuples; serialisation may return lists."""
    version, internal, gauss = value  # type: ignore[misc]
    return (version, tuple(internal), gauss)
