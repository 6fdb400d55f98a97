"""A whole training run: check the input, build the model, cold start, GRPO steps, record, checkpoint.

Everything a user can get wrong (model folder, dataset lines, reward names, config values) is checked by
`prepare` before any training starts. `train_run` then records every step through the run-file `Recorder`; the
schema (the trainer's series, every instrument's series and arrays, the LoRA tensor shapes) is declared before
step 1, as the run file requires.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from discrepancy.config import to_toml
from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import (
    LoraSettings, attach_lora, base_dir_for, build_char_tokenizer, build_tiny_model, check_local_model,
    check_target_modules,
    load_local_model, lora_state, run_model_meta, save_local_model,
)
from discrepancy.trainers.allocator import keep_freed_memory
from discrepancy.trainers.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.hooks import HookRunner
from discrepancy.trainers.recipe import STEP_SERIES, TrainState, grpo_step
from discrepancy.trainers.rewards import RewardSpec, check_rewards
from discrepancy.trainers.run_files import (
    RESUME_MAY_SET, check_new_run, resume_changes, commit_new_run, discard_staged, new_run_id, staged_base_dir,
)
from discrepancy.trainers.samplers import check_sampler
from discrepancy.trainers.stopping import all_ranks_agree, stop_requested_by_signal
from discrepancy.trainers.sft import cold_start
from discrepancy.trainers.tasks import Example, arithmetic_examples, gsm8k_sample_path, load_gsm8k

# progress(phase, done, total, metrics): phase is "sft" or "grpo".
ProgressFn = Callable[[str, int, int, dict[str, float]], None]


class ResumeError(DiscrepancyError):
    """A run cannot be resumed as asked."""


@dataclass
class Prepared:
    """Checked inputs of a run: examples and reward specs (built before any training)."""

    examples: list[Example]
    rewards: list[RewardSpec]


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports back."""

    path: Path
    status: str
    steps: int
    sft_losses: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0  # process rank under torchrun; only rank 0 wrote the run
    stop_signal: int | None = None  # SIGINT / SIGTERM when a signal stopped the run early


def prepare(cfg: TrainConfig) -> Prepared:
    """Resolve rewards, load the task and check the model folder; raises DiscrepancyError on bad input."""
    rewards = [RewardSpec.from_name(n, w) for n, w in zip(cfg.rewards.names, cfg.rewards.weights)]
    t = cfg.task
    if t.name == "arithmetic":
        examples = arithmetic_examples(t.num_examples, min_ops=t.min_ops, max_ops=t.max_ops,
                                       max_operand=t.max_operand, seed=cfg.run.seed)
    else:
        examples = load_gsm8k(t.path or gsm8k_sample_path(), limit=t.num_examples)
    if len(examples) < cfg.grpo.num_prompts:
        raise DiscrepancyError(f"the task has {len(examples)} examples but grpo.num_prompts is "
                               f"{cfg.grpo.num_prompts}; lower grpo.num_prompts or add examples")
    check_rewards(rewards, examples)  # a broken reward fails here, before the cold start or any file
    if cfg.model.path is not None:
        check_local_model(cfg.model.path)
    elif t.name == "gsm8k":
        warnings.warn("task gsm8k on the embedded tiny model (no --model / model.path): it will not learn GSM8K; "
                      "pass --model DIR for a real run", RuntimeWarning, stacklevel=2)
    return Prepared(examples, rewards)


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise DiscrepancyError("run.device is 'cuda' but no GPU is visible; use run.device=\"cpu\" or \"auto\"")
    return torch.device("cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu")


def _dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.model.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 on GPU, fp32 on CPU
    return torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32


def launch_state(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, number of processes, this process's device).

    A single process unless launched by ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1); then accelerate
    sets up the process group and picks this rank's device (gloo on CPU, NCCL on GPUs).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, _device(cfg)
    from accelerate import PartialState

    state = PartialState(cpu=cfg.run.device == "cpu")
    return state.process_index, state.num_processes, state.device


class _NullRecorder:
    """What ranks other than 0 record: nothing (one writer per run file; rank 0 holds the run)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None

    def __enter__(self) -> "_NullRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def seed_everything(seed: int) -> None:
    """Seed every RNG the run uses: same seed → identical numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_base(cfg: TrainConfig, prep: Prepared, out: Path, device: torch.device, progress: ProgressFn | None,
               save: bool = True) -> tuple[torch.nn.Module, Any, dict[str, Any], list[float]]:
    """Base model + tokenizer after the cold start; the base is saved next to the run when the cold start changed it
    (by rank 0 only: ``save``).

    Returns (model, tokenizer, model meta for the run file, SFT losses).
    """
    dtype = _dtype(cfg, device)
    m = cfg.model
    if m.path is None:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, seed=cfg.run.seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                                 num_heads=m.num_heads, intermediate_size=m.intermediate_size)
    else:
        model, tokenizer = load_local_model(m.path, dtype=torch.float32)
    check_target_modules(model, cfg.lora.target_modules)  # a typo must fail before the cold start, not after
    model.to(device)
    check_sampler(cfg.run.sampler, model)  # likewise: a sampler that cannot serve this model fails up front
    report = (lambda i, loss: progress("sft", i, cfg.sft.steps, {"loss": loss})) if progress else None
    losses = cold_start(model, tokenizer, prep.examples, steps=cfg.sft.steps, batch_size=cfg.sft.batch_size,
                        lr=cfg.sft.lr, seed=cfg.run.seed, on_step=report)
    model.to(dtype)
    lora = LoraSettings(cfg.lora.rank, cfg.lora.alpha, tuple(cfg.lora.target_modules), cfg.lora.dropout)
    if m.path is None or losses:
        base_dir = base_dir_for(out)
        if save:  # the warm-started base (model_from_run needs it), staged until the run file exists
            staged = staged_base_dir(out)
            shutil.rmtree(staged, ignore_errors=True)
            save_local_model(model, tokenizer, staged)
        meta = run_model_meta("tiny" if m.path is None else "local", base_dir.name, lora, dtype)
    else:
        meta = run_model_meta("local", Path(m.path).resolve(), lora, dtype)
    return model, tokenizer, meta, losses


def _schema(state: TrainState, prep: Prepared) -> Any:
    from discrepancy.runfile import RunSchema

    series = dict(STEP_SERIES)
    series.update({f"reward_{s.name}": f"mean of reward component {s.name} (unweighted)" for s in prep.rewards})
    series.update(state.hooks.declared_series())
    fields = ["reward", "advantage", "length", *[s.name for s in prep.rewards]]
    tensors = {k: tuple(v.shape) for k, v in lora_state(state.model).items()}
    return RunSchema(series=series, arrays=state.hooks.declared_arrays(), sample_fields=fields,
                     snapshot_tensors=tensors)


def _record_step(rec: Any, state: TrainState, result: Any, cfg: TrainConfig) -> None:
    rec.log_step(state.step, result.metrics, arrays=result.arrays or None)
    k = min(cfg.run.samples_per_step, len(result.completions))
    if k:
        rec.log_samples(state.step, prompt_ids=result.prompt_ids[:k], prompts=result.prompts[:k],
                        completions=result.completions[:k],
                        fields={name: np.asarray(v)[:k] for name, v in result.sample_fields.items()})


def train_run(cfg: TrainConfig, out: str | Path = "run.h5", *, resume: bool = False, stop_at: int | None = None,
              instruments: list[Any] | None = None, progress: ProgressFn | None = None,
              overwrite: bool = False, notify: Callable[[str], None] | None = None) -> RunSummary:
    """Train per ``cfg`` and write the run to ``out`` (plus ``<out>.base/`` and ``<out>.ckpt.pt``).

    ``resume`` continues ``out`` from its checkpoint with the same model, task and schedules (``cfg.run.steps`` may
    be larger than the original run's, to extend it). ``stop_at`` stops cleanly after that step with status
    "interrupted" and a checkpoint, as a killed job would leave it; so do SIGTERM and a first Ctrl-C, after the step
    in progress (``notify`` receives a line saying so). ``instruments`` attach to the step hooks (default: those
    ``cfg.instruments`` enables; ``[]`` for none).
    """
    out = Path(out)
    if resume and not checkpoint_path(out).is_file():
        raise ResumeError(f"{out}: nothing to resume ({checkpoint_path(out)} is missing)")
    if resume:
        _check_resume_config(cfg, out)
    else:
        check_new_run(out, overwrite)
    prep = prepare(cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    rank, world, device = launch_state(cfg)
    if device.type == "cpu":
        keep_freed_memory()  # freed activation memory is reused instead of faulted in again (glibc only)
    if cfg.run.compile and device.type != "cuda" and rank == 0:
        warnings.warn("run.compile applies to CUDA devices only (graph-captured sampling, compiled layers); on the CPU it is ignored",
                      RuntimeWarning, stacklevel=2)
    _barrier(world)  # every rank has checked `out` before rank 0 creates anything
    progress = progress if rank == 0 else None
    seed_everything(cfg.run.seed)  # same seed on every rank: identical base, cold start and LoRA init
    try:
        state, rec, run_id, sft_losses = _start(cfg, prep, out, resume, overwrite, rank, world, device, progress,
                                                instruments)
    except BaseException:
        if not resume and rank == 0:
            discard_staged(out)  # the previous run under this name stays whole
        raise
    return _loop(state, rec, out if rank == 0 else None, stop_at, progress, sft_losses, run_id,
                 notify if rank == 0 else None)


def _start(cfg: TrainConfig, prep: Prepared, out: Path, resume: bool, overwrite: bool, rank: int, world: int,
           device: torch.device, progress: ProgressFn | None,
           instruments: list[Any] | None) -> tuple[TrainState, Any, str, list[float]]:
    """Model, cold start, adapter, optimizer and the open run file: (state, recorder, run identity, SFT losses)."""
    from discrepancy.runfile import Recorder

    if resume:
        model, tokenizer, run_id, last_step = _load_resumed_base(cfg, out, device)
        meta: dict[str, Any] = {}
        sft_losses: list[float] = []
        check_sampler(cfg.run.sampler, model)
    else:
        model, tokenizer, meta, sft_losses = build_base(cfg, prep, out, device, progress, save=rank == 0)
    model = attach_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, cfg.lora.dropout)
    if world > 1:
        torch.manual_seed(cfg.run.seed + rank)  # ranks sample different completions from here on
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if instruments is None:
        from discrepancy.instrumentation import build_instruments

        instruments = build_instruments(cfg.instruments, model)
    state = TrainState(cfg, model, tokenizer, optimizer, prep.examples, prep.rewards,
                       hooks=HookRunner(list(instruments)),
                       prompt_rng=random.Random(cfg.run.seed + 1 + 7919 * rank),  # ranks draw different prompts
                       total_steps=cfg.run.steps)
    if resume:
        load_checkpoint(out, state, run_id=run_id, last_step=last_step)
    else:
        run_id = new_run_id()
    if rank != 0:
        rec: Any = _NullRecorder()  # only rank 0 records: one writer per run file
    elif resume:
        rec = Recorder.resume(out, state.step + 1, flush_every=cfg.run.flush_every, config_toml=to_toml(cfg))
    else:
        meta.update(task=cfg.task.name, sft_steps=cfg.sft.steps, run_id=run_id,
                    sft_final_loss=sft_losses[-1] if sft_losses else math.nan)
        rec = Recorder.create(out, _schema(state, prep), config_toml=to_toml(cfg), meta=meta,
                              flush_every=cfg.run.flush_every, overwrite=overwrite)
        commit_new_run(out)  # the new run file exists: its base replaces the old one, the old checkpoint goes
    return state, rec, run_id, sft_losses


def _loop(state: TrainState, rec: Any, out: Path | None, stop_at: int | None, progress: ProgressFn | None,
          sft_losses: list[float], run_id: str, notify: Callable[[str], None] | None = None) -> RunSummary:
    """The GRPO steps. ``out`` is None on ranks other than 0, which neither record nor checkpoint."""
    save = (lambda: save_checkpoint(out, state, run_id)) if out is not None else (lambda: None)
    rows: list[dict[str, float]] = []
    last = state.cfg.run.steps if stop_at is None else min(stop_at, state.cfg.run.steps)
    with rec, stop_requested_by_signal(notify) as stop_requested:
        if state.step == 0:
            # Baseline before the first update (B = 0: the warm-started base), so curves over snapshots start from
            # the model GRPO began with. A resumed run already holds it.
            _snapshot(rec, state)
        agreed: list[int] = []  # the signal that stopped the run, as every rank agreed on it

        def stop() -> bool:
            agreed[:] = [all_ranks_agree(stop_requested(), state.model)]
            return agreed[0] != 0

        status = _steps(state, rec, last, save, progress, rows, stop)
        status = _close(state, rec, status, save)
    rank = torch.distributed.get_rank() if out is None else 0
    return RunSummary(out or Path(), status, state.step, sft_losses, rows, rank, (agreed or [0])[0] or None)


def _snapshot(rec: Any, state: TrainState) -> None:
    rec.log_snapshot(state.step, {k: v.numpy() for k, v in lora_state(state.model).items()})


def _steps(state: TrainState, rec: Any, last: int, save: Callable[[], Any], progress: ProgressFn | None,
           rows: list[dict[str, float]], stop_requested: Callable[[], bool]) -> str:
    """Run steps up to ``last``, recording, snapshotting and checkpointing; "failed" after too many bad losses."""
    cfg = state.cfg
    while state.step < last and not stop_requested():
        result = grpo_step(state)
        _record_step(rec, state, result, cfg)
        rows.append(result.metrics)
        if state.step % cfg.run.snapshot_every == 0:
            _snapshot(rec, state)
        if cfg.run.checkpoint_every and state.step % cfg.run.checkpoint_every == 0:
            rec.flush()  # the run file must hold every step the checkpoint has seen
            save()
        if progress:
            progress("grpo", state.step, cfg.run.steps, result.metrics)
        if state.bad_steps >= cfg.grpo.max_bad_steps:
            return "failed"
    return "finished"


def _close(state: TrainState, rec: Any, status: str, save: Callable[[], Any]) -> str:
    """Final snapshot and checkpoint, then the run's status: finished, failed, or interrupted (stopped early)."""
    cfg = state.cfg
    if state.step % cfg.run.snapshot_every != 0:
        _snapshot(rec, state)
    rec.flush()
    save()
    if status == "failed":
        rec.fail(f"{state.bad_steps} consecutive steps with a non-finite loss (last step {state.step}); "
                 "lower optim.lr or check the rewards")
        return status
    if state.step < cfg.run.steps:
        rec.set_status("interrupted", f"stopped after step {state.step} of {cfg.run.steps}; continue with --resume")
        rec.close()
        return "interrupted"
    rec.finish()
    return "finished"


def _check_resume_config(cfg: TrainConfig, out: Path) -> None:
    """A resumed run trains what it recorded: only how long and where it runs may differ (`RESUME_MAY_SET`)."""
    import tomllib

    from discrepancy.runfile import open_run

    with open_run(out) as run:
        recorded = run.config
    changed = resume_changes(recorded, tomllib.loads(to_toml(cfg)))
    if changed:
        raise ResumeError(f"{out}: a resumed run keeps its recorded config, but {', '.join(changed[:4])} differ; "
                          f"only {', '.join(RESUME_MAY_SET)} may change (start a new run to change the rest)")


def _load_resumed_base(cfg: TrainConfig, out: Path, device: torch.device) -> tuple[torch.nn.Module, Any, str, int]:
    """The base model a run trained on (its saved warm-started base, or the local model it names), with the run's
    identity and last recorded step, which its checkpoint must match."""
    from discrepancy.runfile import open_run

    with open_run(out) as run:
        meta = run.meta
        identity = run.identity
        last_step = int(run.steps[-1]) if run.num_steps else 0
    base = Path(str(meta.get("base_model_path", "")))
    if not base.is_absolute():
        base = out.parent / base
    if not base.is_dir():
        raise ResumeError(f"{out}: base model folder {base} is missing; it must stay next to the run to resume")
    recorded = str(meta.get("base_model_dtype", ""))  # the precision it trained in, whatever the device now
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(recorded) or _dtype(cfg, device)
    model, tokenizer = load_local_model(base, dtype=dtype)
    return model.to(device), tokenizer, identity, last_step
