"""Everything a run sets up before its first GRPO step: checked inputs, where it runs, and the base model.

Everything a user can get wrong (model folder, dataset lines, reward names, config values) is checked by `prepare`
before any training starts; `build_base` then makes the model GRPO starts from (the cold start included).
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import (
    LoraSettings, attach_lora, base_dir_for, build_char_tokenizer, build_tiny_model, check_local_model,
    check_target_modules, load_local_model, run_model_meta, save_local_model,
)
from discrepancy.modeling.devices import default_dtype
from discrepancy.modeling.fingerprint import weights_fingerprint
from discrepancy.rollout.samplers import check_sampler
from discrepancy.trainers.config import TrainConfig, cold_start_trains_all
from discrepancy.trainers.curriculum import check_curriculum
from discrepancy.trainers.curriculum_step import orchestration_series
from discrepancy.trainers.distill import teacher_completions, teacher_snapshot
from discrepancy.trainers.locking import check_train_modules
from discrepancy.trainers.rewards import RewardSpec, check_rewards, resolve_rewards
from discrepancy.trainers.run_files import staged_base_dir
from discrepancy.trainers.sft import cold_start
from discrepancy.trainers.tasks import Example, load_task, with_chat_prompts

# progress(phase, done, total, metrics): phase is "sft" or "grpo".
ProgressFn = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class Prepared:
    """Checked inputs of a run: examples and reward specs (built before any training)."""

    examples: list[Example]
    rewards: list[RewardSpec]


@dataclass(frozen=True)
class Launch:
    """Where this process runs: its rank among ``world`` processes (one without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def writer(self) -> bool:
        """Rank 0 holds the run: it alone records, checkpoints and reports."""
        return self.rank == 0


@dataclass
class Base:
    """The model GRPO starts from, with the meta the run file records about it and the cold start's losses."""

    model: torch.nn.Module
    tokenizer: Any
    meta: dict[str, Any]
    sft_losses: list[float]
    described: bool = False  # what is trained was said before the cold start (``announce``)


def prepare(cfg: TrainConfig) -> Prepared:
    """Resolve rewards, load the task and check the model folder; raises DiscrepancyError on bad input."""
    if cfg.model.require_path and cfg.model.path is None:
        raise DiscrepancyError("this recipe needs a real model (model.require_path): pass --model DIR, a local Hugging "
                               "Face causal LM folder; the embedded tiny model cannot learn its task")
    rewards = resolve_rewards(cfg.rewards.names, cfg.rewards.weights)  # the format rewards' critique choice, bound once
    t = cfg.task
    examples = load_task(t, cfg.run.seed)
    if len(examples) < cfg.grpo.num_prompts:
        raise DiscrepancyError(f"the task has {len(examples)} examples but grpo.num_prompts is "
                               f"{cfg.grpo.num_prompts}; lower grpo.num_prompts or add examples")
    check_rewards(rewards, examples, config=cfg, total_steps=cfg.schedule.horizon or cfg.run.steps)  # a broken
    # reward fails here, before the cold start or any file; so does a bad curriculum phase
    check_curriculum(cfg.curriculum, rewards=cfg.rewards.names, series=recorded_series(cfg, rewards),
                     difficulties=[ex.difficulty for ex in examples])
    if cfg.model.path is not None:
        check_local_model(cfg.model.path)
    elif t.name != "arithmetic":
        what = "GSM8K" if t.name == "gsm8k" else "the dataset's task"
        warnings.warn(f"task {t.name} on the embedded tiny model (no --model / model.path): it will not learn {what}; "
                      "pass --model DIR for a real run", RuntimeWarning, stacklevel=2)
    if cfg.sft.teacher and cfg.sft.steps > 0:
        teacher_snapshot(cfg.sft.teacher, cfg.sft.teacher_step)  # a bad teacher fails before any training
    return Prepared(examples, rewards)


def recorded_series(cfg: TrainConfig, rewards: list[RewardSpec]) -> set[str]:
    """Names of the series a run with ``cfg`` records (what a phase's end_when may read), known before any model:
    the step's, the rewards', the instruments' (built on an empty module; the LoRA norms' total added by name), the
    controllers', the critique calibration's and the curriculum's own."""
    from discrepancy.instrumentation.hooks import HookRunner
    from discrepancy.instrumentation.registry import build_instruments
    from discrepancy.trainers.control import CONTROL_SERIES
    from discrepancy.trainers.recipe import STEP_SERIES, has_critique
    from discrepancy.trainers.step_metrics import CRITIQUE_SERIES

    names = set(STEP_SERIES) | {f"reward_{n}" for n in cfg.rewards.names} | set(CONTROL_SERIES)
    names |= set(HookRunner(build_instruments(cfg.instruments, torch.nn.Module())).declared_series())
    names |= set(orchestration_series(cfg, cfg.rewards.names))
    names |= set(CRITIQUE_SERIES) if has_critique(rewards) else set()
    return names | ({"lora_delta_norm_total"} if cfg.instruments.lora_norms else set())


def resolve_device(name: str) -> torch.device:
    """``run.device``: cuda, cpu, or auto (cuda when a GPU is visible)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DiscrepancyError("run.device is 'cuda' but no GPU is visible; use run.device=\"cpu\" or \"auto\"")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def train_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """``model.dtype`` on ``device`` (auto: the device policy's default)."""
    if cfg.model.dtype == "auto":
        return default_dtype(device)
    return torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32


def launch(cfg: TrainConfig) -> Launch:
    """This process's rank, the number of processes and its device.

    A single process unless launched by ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1); then accelerate
    sets up the process group and picks this rank's device (gloo on CPU, NCCL on GPUs).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.run.device)
    if world <= 1:
        return Launch(0, 1, device)
    from accelerate import PartialState

    # cpu=True whenever the run will be on the CPU (run.device "auto" on a machine without a GPU included): without
    # it accelerate does not join the gloo process group and every process believes it is rank 0 of 1.
    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes != world:
        raise DiscrepancyError(f"launched as {world} processes but the process group has {state.num_processes}; "
                               "launch with torchrun or accelerate launch and a matching run.device")
    return Launch(state.process_index, state.num_processes, state.device)


def seed_everything(seed: int) -> None:
    """Seed every RNG the run uses: same seed → identical numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_base(cfg: TrainConfig, prep: Prepared, out: Path, where: Launch, progress: ProgressFn | None,
               announce: Callable[[str], None] | None = None) -> Base:
    """Base model + tokenizer after the cold start; the base is saved next to the run (staged until the run file
    exists) when the cold start changed it, by the writer rank only. ``announce`` receives what is trained
    (``describe_model``) before a cold start of every weight, which runs here, before the adapter exists."""
    dtype = train_dtype(cfg, where.device)
    m = cfg.model
    if m.path is None:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, seed=cfg.run.seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                                 num_heads=m.num_heads, intermediate_size=m.intermediate_size)
    else:
        model, tokenizer = load_local_model(m.path, dtype=torch.float32)
    check_target_modules(model, cfg.lora.target_modules)  # a typo must fail before the cold start, not after
    check_train_modules(model, cfg.lora.target_modules, cfg.curriculum.phases)  # so must a phase's modules
    prep.examples = with_chat_prompts(prep.examples, tokenizer, cfg.task)  # as an instruct model was trained
    model.to(where.device)
    check_sampler(cfg.run.sampler, model)  # likewise: a sampler that cannot serve this model fails up front
    planned = planned_model(model, cfg) if announce is not None and cold_start_trains_all(cfg) else None
    if planned is not None:
        announce(describe_model(planned, cfg, where.device))
    losses = run_cold_start(model, tokenizer, cfg, prep, progress) if cold_start_trains_all(cfg) else []
    model.to(dtype)
    lora = LoraSettings(cfg.lora.rank, cfg.lora.alpha, tuple(cfg.lora.target_modules), cfg.lora.dropout)
    if m.path is None or losses:
        if where.writer:  # the warm-started base (model_from_run needs it), staged until the run file exists
            staged = staged_base_dir(out)
            shutil.rmtree(staged, ignore_errors=True)
            save_local_model(model, tokenizer, staged)
        meta = run_model_meta("tiny" if m.path is None else "local", base_dir_for(out).name, lora, dtype)
    else:
        meta = run_model_meta("local", Path(m.path).resolve(), lora, dtype)
    meta["base_fingerprint"] = weights_fingerprint(model)  # what `compare` checks before weight-space lineage
    return Base(model, tokenizer, meta, losses, described=planned is not None)


def planned_model(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module | None:
    """``model`` with the LoRA adapter GRPO will train, rebuilt from its config on the meta device: shapes without
    memory, so what is trained can be said before a cold start of every weight (the real adapter is attached after
    it). The generator's state is restored, so the cold start draws what it would have drawn. None when the model's
    class cannot be rebuilt from its config (what is trained is then said once the adapter exists)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            twin = type(model)(config)
            return attach_lora(twin, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, cfg.lora.dropout)
    except Exception:  # noqa: BLE001 - a description must never stop a run
        return None


def describe_model(model: torch.nn.Module, cfg: TrainConfig, device: Any, *, resumed: bool = False) -> str:
    """One line of what is trained, said before the first step: the model class and where it came from, its size,
    the adapter (rank, α, how many modules of which names, trainable parameters), task, device and cold start."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    names = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules() if hasattr(mod, "lora_A")})
    count = sum(1 for _, mod in model.named_modules() if hasattr(mod, "lora_A"))
    base = getattr(model, "get_base_model", lambda: model)()
    where = "the embedded tiny config" if cfg.model.path is None else str(cfg.model.path)
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    what = "every weight" if cold_start_trains_all(cfg) else "the adapter only"
    steps = f"{cfg.sft.steps} step{'s' if cfg.sft.steps > 1 else ''}"
    sft = "resumed: no cold start" if resumed else "no cold start" if cfg.sft.steps <= 0 else \
        f"cold start {steps} ({what})"
    return (f"model: {type(base).__name__} from {where}, {total / 1e6:.3g} M parameters on {device}; LoRA r"
            f"{cfg.lora.rank} α {cfg.lora.alpha:g} on {count} modules ({shown}), {trainable / 1e6:.3g} M trainable; "
            f"task {cfg.task.name}; {sft}")


def run_cold_start(model: torch.nn.Module, tokenizer: Any, cfg: TrainConfig, prep: Prepared,
                   progress: ProgressFn | None) -> list[float]:
    """The cold start on whatever of ``model`` is trainable: every weight of the base, or (called with the adapter
    attached) the LoRA adapter only (`SFTConfig.weights`)."""
    report = (lambda i, loss: progress("sft", i, cfg.sft.steps, {"loss": loss})) if progress else None
    completions = None
    if cfg.sft.teacher and cfg.sft.steps > 0:  # distillation: the teacher's completions are the targets
        completions = teacher_completions(cfg.sft.teacher, cfg.sft.teacher_step, prep.examples,
                                          max_new_tokens=cfg.grpo.max_completion_length, seed=cfg.run.seed,
                                          device=next(model.parameters()).device)
    return cold_start(model, tokenizer, prep.examples, steps=cfg.sft.steps, batch_size=cfg.sft.batch_size,
                      lr=cfg.sft.lr, seed=cfg.run.seed, on_step=report, completions=completions)
