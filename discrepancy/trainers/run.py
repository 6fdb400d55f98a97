"""A whole training run: check the input, build the model, cold start, GRPO steps, record, checkpoint.

`train_run` reads top to bottom: check the request (`_check_request`), set up (`_start`: model, adapter, optimizer,
speed plan, instruments, the open run file), then the steps (`_loop`), then close the run with its status. Every
step is recorded through the run-file `Recorder`; the schema (the trainer's series, every instrument's series and
arrays, the LoRA tensor shapes) is declared before step 1, as the run file requires.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from discrepancy.analysis.online.actions import LiveWatch
from discrepancy.analysis.online.events import EVENTS_ARRAY, Event, event_arrays
from discrepancy.analysis.online.monitor import check_names, frame_rows
from discrepancy.config import apply_overrides, to_toml
from discrepancy.instrumentation.hooks import HookRunner, Instrument
from discrepancy.instrumentation.registry import build_instruments
from discrepancy.modeling import attach_lora, load_local_model, lora_state
from discrepancy.runfile import Recorder, RunSchema, open_run
from discrepancy.trainers.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from discrepancy.trainers.config import TrainConfig, cold_start_trains_all
from discrepancy.trainers.control import Controller
from discrepancy.trainers.curriculum import unreachable_rules
from discrepancy.trainers.curriculum_step import Orchestration
from discrepancy.trainers.growth import LoraGrowth
from discrepancy.trainers.recipe import StepResult, TrainState, grpo_step, step_series
from discrepancy.trainers.run_files import (
    DeclaredOnly, ResumeError, check_new_run, check_resume, commit_new_run, discard_staged, new_run_id, refuse_untrusted,
    run_lock,
)
from discrepancy.trainers.setup import (
    Launch, Prepared, ProgressFn, build_base, describe_model, launch, prepare, run_cold_start, seed_everything, train_dtype,
)
from discrepancy.trainers.speed import plan_speed
from discrepancy.trainers.step_metrics import SAMPLE_BASE_FIELDS, sample_column
from discrepancy.trainers.stopping import all_ranks_agree, stop_requested_by_signal


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
    stop_reason: str | None = None  # the early-warning event that stopped the run (``stop_on``)


@dataclass(frozen=True)
class Request:
    """What the caller of `train_run` asked for, besides the config."""

    out: Path
    resume: bool = False
    overwrite: bool = False
    stop_at: int | None = None
    instruments: list[Instrument] | None = None
    progress: ProgressFn | None = None
    notify: Callable[[str], None] | None = None
    trust_run: bool = False  # a resumed run may import the code and read the paths its recorded config names
    stop_on: str = "never"  # stop cleanly on the first early-warning event this severe: warning, critical
    events: Callable[[Event], None] | None = None  # receives each early-warning event (the CLI prints its line)


@dataclass
class Session:
    """A started run: the training state, where the run is recorded, and what the run reports at the end."""

    state: TrainState
    recorder: Any  # a Recorder on rank 0, a NullRecorder elsewhere
    run_id: str
    sft_losses: list[float]
    snapshot_steps: list[int] = field(default_factory=list)  # already in the run file (a resumed run has some)
    watch: LiveWatch | None = None  # early warning (rank 0 only)

    def snapshot(self) -> None:
        """Record the adapter at the current step, once: a resumed run that stopped at a snapshot step has it."""
        step = self.state.step
        if step in self.snapshot_steps:
            return
        self.recorder.log_snapshot(step, {k: v.numpy() for k, v in lora_state(self.state.model).items()})
        self.snapshot_steps.append(step)


class NullRecorder:
    """What ranks other than 0 record: nothing (one writer per run file; rank 0 holds the run)."""

    def log_step(self, *args: Any, **kwargs: Any) -> None: ...
    def log_samples(self, *args: Any, **kwargs: Any) -> None: ...
    def log_snapshot(self, *args: Any, **kwargs: Any) -> None: ...
    def flush(self) -> None: ...
    def set_status(self, *args: Any, **kwargs: Any) -> None: ...
    def fail(self, *args: Any, **kwargs: Any) -> None: ...
    def finish(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> NullRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def train_run(cfg: TrainConfig, out: str | Path = "run.h5", *, resume: bool = False, stop_at: int | None = None,
              instruments: list[Instrument] | None = None, progress: ProgressFn | None = None,
              overwrite: bool = False, notify: Callable[[str], None] | None = None,
              trust_run: bool = False, stop_on: str = "never",
              events: Callable[[Event], None] | None = None) -> RunSummary:
    """Train per ``cfg`` and write the run to ``out`` (plus ``<out>.base/`` and ``<out>.ckpt.pt``).

    ``resume`` continues ``out`` from its checkpoint with the same model, task and schedules (``cfg.run.steps`` may
    be larger than the original run's, to extend it). ``stop_at`` stops cleanly after that step with status
    "interrupted" and a checkpoint, as a killed job would leave it; so do SIGTERM and a first Ctrl-C, after the step
    in progress (``notify`` receives a line saying so). ``instruments`` attach to the step hooks (default: those
    ``cfg.instruments`` enables; ``[]`` for none). A resumed run's recorded config is data from a file: its reward
    code (``module:function``) is imported and its dataset and model paths outside the run's folder are read only
    with ``trust_run`` (``--trust-run``); otherwise the resume is refused, naming them, before anything is loaded.
    ``stop_on`` ("warning", "critical") stops the run like ``stop_at`` on the first early-warning event that severe
    (docs/early-warning.md); the status message and ``RunSummary.stop_reason`` name it. ``events`` receives every
    early-warning event as it fires (they are also recorded in the run file's ``early_warning`` array).
    """
    req = Request(Path(out), resume, overwrite, stop_at, instruments, progress, notify, trust_run, stop_on, events)
    if os.environ.get("RANK", "0") != "0" or req.out.is_dir() or not req.out.parent.is_dir():
        return _train(cfg, req)  # rank 0 alone holds the run and its lock; a bad --out is refused by the checks
    with run_lock(req.out):
        return _train(cfg, req)


def _train(cfg: TrainConfig, req: Request) -> RunSummary:
    """`train_run` once the request is made (and, on the writer, its run file locked)."""
    if req.resume:
        if not req.trust_run:
            refuse_untrusted(cfg, req.out)
        cfg = _pin_schedules(cfg, req)
    config_toml = to_toml(cfg)  # what the run records, and what a resume is compared with
    _check_request(cfg, req, config_toml)
    prep = prepare(cfg)
    for line in unreachable_rules(cfg.curriculum) if req.notify is not None else []:  # said before training
        req.notify(f"warning: {line}")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    where = launch(cfg)
    _barrier(where)  # every rank has checked `out` before rank 0 creates anything
    if not where.writer:
        req = Request(req.out, req.resume, req.overwrite, req.stop_at, req.instruments,  # no progress, no notices
                      trust_run=req.trust_run, stop_on=req.stop_on)
    seed_everything(cfg.run.seed)  # same seed on every rank: identical base, cold start and LoRA init
    try:
        session = _start(cfg, prep, req, where, config_toml)
    except BaseException:
        if not req.resume and where.writer:
            discard_staged(req.out)  # the previous run under this name stays whole
        raise
    return _loop(session, req, where)


def _check_request(cfg: TrainConfig, req: Request, config_toml: str) -> None:
    """Refuse, before anything is built or written, a resume without a checkpoint or with another config, and a new
    run that would take another run's files."""
    if not req.resume:
        check_new_run(req.out, req.overwrite)
        return
    check_resume(req.out, config_toml)


def _pin_schedules(cfg: TrainConfig, req: Request) -> TrainConfig:
    """A resumed run's schedules keep the horizon the run started with (its recorded ``schedule.horizon``, else its
    recorded ``run.steps``): changing ``run.steps`` on resume then extends or shortens the run without moving the
    learning rate, temperature or β of any step. Says so when ``run.steps`` changes."""
    if cfg.schedule.horizon is not None or not checkpoint_path(req.out).is_file():
        return cfg  # a horizon given explicitly is compared with the recorded one by _check_request
    with open_run(req.out) as run:
        recorded = run.config
    horizon = int(recorded.get("schedule", {}).get("horizon") or recorded.get("run", {}).get("steps", cfg.run.steps))
    if cfg.run.steps != horizon and req.notify is not None:
        after = "hold their final values after it" if cfg.run.steps > horizon else "are not rescaled"
        req.notify(f"run.steps {horizon} → {cfg.run.steps}: the lr, temperature and β schedules keep their "
                   f"{horizon}-step horizon and {after} (schedule.horizon = {horizon})")
    return apply_overrides(cfg, {"schedule.horizon": horizon})


def _barrier(where: Launch) -> None:
    if where.world > 1:
        torch.distributed.barrier()


def _start(cfg: TrainConfig, prep: Prepared, req: Request, where: Launch, config_toml: str) -> Session:
    """Model, cold start, adapter, optimizer, speed plan, instruments and the open run file."""
    if req.resume:
        model, tokenizer, run_id, last_step, snapshots = _load_resumed_base(cfg, req.out, where.device)
        meta: dict[str, Any] = {}
        sft_losses: list[float] = []
        said = False
    else:  # a cold start of every weight runs in build_base: what is trained is said before it
        base = build_base(cfg, prep, req.out, where, req.progress, req.notify if where.writer else None)
        model, tokenizer, meta, sft_losses = base.model, base.tokenizer, base.meta, base.sft_losses
        said = base.described
        run_id, last_step, snapshots = new_run_id(), 0, []
    model = attach_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, cfg.lora.dropout)
    growth = LoraGrowth.from_config(cfg)  # dynamic LoRA: allocated at lora.rank, masked to the rank of step 0
    if growth is not None:
        growth.attach(model)  # before the cold start, which trains the adapter at that rank
    if where.writer and req.notify is not None and not said:
        req.notify(describe_model(model, cfg, where.device, resumed=req.resume))
    if not req.resume and not cold_start_trains_all(cfg):  # the adapter alone learns the format: a model of the
        sft_losses = run_cold_start(model, tokenizer, cfg, prep, req.progress)  # user's is never changed
    if where.world > 1:
        torch.manual_seed(cfg.run.seed + where.rank)  # ranks sample different completions from here on
    plan = plan_speed(cfg.run, cfg.instruments, model, warn=where.writer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    instruments = req.instruments
    if instruments is None:
        instruments = build_instruments(cfg.instruments, model, share_prompts=plan.measure_share_prompts)
    state = TrainState(cfg, model, tokenizer, optimizer, prep.examples, prep.rewards, plan,
                       hooks=HookRunner(list(instruments)),
                       prompt_rng=random.Random(cfg.run.seed + 1 + 7919 * where.rank),  # ranks draw other prompts
                       total_steps=cfg.schedule.horizon or cfg.run.steps, control=_controller(cfg), growth=growth,
                       orchestration=Orchestration(cfg, prep.examples, prep.rewards) if Orchestration.wanted(cfg)
                       else None)
    if req.resume:
        load_checkpoint(req.out, state, run_id=run_id, last_step=last_step)
    meta.update(run_id=run_id, sft_final_loss=sft_losses[-1] if sft_losses else math.nan)
    meta.update(growth.meta() if growth is not None else {})  # each snapshot's rank and scale, for its readers
    watch = _live_watch(cfg, req, where, state.step)  # before the recorder reopens a resumed run: it replays its steps
    session = Session(state, _open_recorder(state, prep, req, where, config_toml, meta), run_id, sft_losses,
                      snapshots, watch)
    if watch is not None:  # runs created before the events arrays existed get the console lines and actions only
        watch.record = EVENTS_ARRAY in getattr(getattr(session.recorder, "schema", None), "arrays", {})
    return session


def _live_watch(cfg: TrainConfig, req: Request, where: Launch, last_step: int) -> LiveWatch | None:
    """The early-warning monitor of the writer (docs/early-warning.md); a resumed run's steps are replayed into it."""
    if not where.writer or not cfg.early_warning.enabled:
        return None
    watch = LiveWatch(cfg.early_warning, stop_on=req.stop_on, notify=req.notify, show=req.events)
    if req.resume:
        with open_run(req.out) as run:
            watch.replay(frame_rows(run.series().loc[:last_step]))  # the steps its checkpoint has seen
    return watch


def _open_recorder(state: TrainState, prep: Prepared, req: Request, where: Launch, config_toml: str,
                   meta: dict[str, Any]) -> Any:
    """The run file, reopened after its last step or created with its full schema (rank 0 only)."""
    cfg = state.cfg
    if not where.writer:
        return NullRecorder()  # only rank 0 records: one writer per run file
    if req.resume:  # a file an older version made declares less than this version measures: DeclaredOnly
        rec = DeclaredOnly(Recorder.resume(req.out, state.step + 1, flush_every=cfg.run.flush_every,
                                           config_toml=config_toml), req.notify)
    else:
        meta.update(task=cfg.task.name, sft_steps=cfg.sft.steps)
        rec = Recorder.create(req.out, _schema(state, prep), config_toml=config_toml, meta=meta,
                              flush_every=cfg.run.flush_every, overwrite=req.overwrite)
        commit_new_run(req.out)  # the new run file exists: its base replaces the old one, the old checkpoint goes
    if cfg.run.tensorboard:  # a live view in the user's dashboard; the run file stays the record
        from discrepancy.analysis.pipeline import family_of  # lazily: tensorboard only when asked for
        from discrepancy.interop.live import MirroredRecorder, TensorBoardMirror

        rec = MirroredRecorder(rec, TensorBoardMirror(cfg.run.tensorboard, rec.schema, family=family_of))
    return rec


def _controller(cfg: TrainConfig) -> Controller | None:
    """The closed-loop controllers of ``cfg.control``, or None when every one is off (nothing is recorded)."""
    ctl = Controller(cfg.control, cfg.grpo.beta, num_prompts=cfg.grpo.num_prompts)
    return ctl if ctl.active else None


def _schema(state: TrainState, prep: Prepared) -> RunSchema:
    series = step_series(state) | state.hooks.declared_series()
    fields = [*SAMPLE_BASE_FIELDS, *[sample_column(s.name) for s in prep.rewards]]
    tensors = {k: tuple(v.shape) for k, v in lora_state(state.model).items()}
    arrays = state.hooks.declared_arrays()
    if state.orchestration is not None:  # the ledger's per-prompt counts
        arrays.update(state.orchestration.arrays())
    if state.cfg.early_warning.enabled:
        arrays.update(event_arrays(check_names(state.cfg.early_warning)))
    return RunSchema(series=series, arrays=arrays, sample_fields=fields, snapshot_tensors=tensors)


def _loop(session: Session, req: Request, where: Launch) -> RunSummary:
    """The GRPO steps, then the run's closing status. Ranks other than 0 neither record nor checkpoint."""
    state, rec = session.state, session.recorder
    save = (lambda: save_checkpoint(req.out, state, session.run_id)) if where.writer else (lambda: None)
    rows: list[dict[str, float]] = []
    last = state.cfg.run.steps if req.stop_at is None else min(req.stop_at, state.cfg.run.steps)
    with rec, stop_requested_by_signal(req.notify) as stop_requested:
        if state.step == 0:
            # Baseline before the first update (B = 0: the warm-started base), so curves over snapshots start from
            # the model GRPO began with. A resumed run already holds it.
            session.snapshot()
        agreed: list[int] = []  # the signal that stopped the run, as every rank agreed on it

        def stop() -> bool:
            warned = EARLY_STOP if session.watch is not None and session.watch.stop_reason else None
            agreed[:] = [all_ranks_agree(stop_requested() or warned, state.model)]
            return agreed[0] != 0

        status = _steps(session, last, save, req.progress, rows, stop)
        status = _close(session, status, save)
    signum = (agreed or [0])[0]
    reason = session.watch.stop_reason if session.watch is not None and signum == EARLY_STOP else None
    return RunSummary(req.out if where.writer else Path(), status, state.step, session.sft_losses, rows, where.rank,
                      None if signum in (0, EARLY_STOP) else signum, reason)


EARLY_STOP = 1 << 16  # the stop code of an early-warning stop: above every signal number, so every rank stops too


def _record_step(rec: Any, state: TrainState, result: StepResult, every: bool = False) -> None:
    """The step's row and its samples (``every``: all its completions, an early-warning event's evidence)."""
    rec.log_step(state.step, result.metrics, arrays=result.arrays or None)
    k = len(result.completions) if every else min(state.cfg.run.samples_per_step, len(result.completions))
    if k:
        rec.log_samples(state.step, prompt_ids=result.prompt_ids[:k], prompts=result.prompts[:k],
                        completions=result.completions[:k],
                        fields={name: np.asarray(v)[:k] for name, v in result.sample_fields.items()})


def _steps(session: Session, last: int, save: Callable[[], Any], progress: ProgressFn | None,
           rows: list[dict[str, float]], stop_requested: Callable[[], bool]) -> str:
    """Run steps up to ``last``, recording, snapshotting and checkpointing; "failed" after too many bad losses."""
    state, rec = session.state, session.recorder
    cfg = state.cfg
    while state.step < last and not stop_requested():
        # dynamic LoRA between steps: grow (the function unchanged) and set the scale of the coming step
        grown = state.growth.before_step(state.model, state.optimizer, state.step + 1) if state.growth else {}
        result = grpo_step(state)
        result.metrics.update(grown)
        watch = session.watch
        if watch is not None:  # early warning: judge the step before its row is written (events array)
            result.arrays.update(watch.step(state.step, result.metrics))
        _record_step(rec, state, result, watch is not None and watch.in_dossier(state.step))
        rows.append(result.metrics)
        if state.step % cfg.run.snapshot_every == 0 or (watch is not None and watch.snapshot_due(state.step)):
            session.snapshot()
        if cfg.run.checkpoint_every and state.step % cfg.run.checkpoint_every == 0:
            rec.flush()  # the run file must hold every step the checkpoint has seen
            save()
        if progress:
            progress("grpo", state.step, cfg.run.steps, result.metrics)
        if state.bad_steps >= cfg.grpo.max_bad_steps:
            return "failed"
    return "finished"


def _close(session: Session, status: str, save: Callable[[], Any]) -> str:
    """Final snapshot and checkpoint, then the run's status: finished, failed, or interrupted (stopped early)."""
    state, rec = session.state, session.recorder
    cfg = state.cfg
    session.snapshot()
    rec.flush()
    save()
    if session.watch is not None:
        session.watch.close()
    if status == "failed":
        rec.fail(f"{state.bad_steps} consecutive steps skipped, the last ({state.step}) because {state.bad_reason}")
        return status
    if state.step < cfg.run.steps:
        why = session.watch.stop_reason if session.watch is not None else None
        rec.set_status("interrupted", f"{why or 'stopped'} after step {state.step} of {cfg.run.steps}; continue "
                       "with --resume")
        rec.close()
        return "interrupted"
    rec.finish()
    return "finished"


def _load_resumed_base(cfg: TrainConfig, out: Path,
                       device: torch.device) -> tuple[torch.nn.Module, Any, str, int, list[int]]:
    """The base model a run trained on (its saved warm-started base, or the local model it names), with the run's
    identity and last recorded step, which its checkpoint must match, and its snapshot steps."""
    with open_run(out) as run:
        meta = run.meta
        identity = run.identity
        last_step = int(run.steps[-1]) if run.num_steps else 0
        snapshots = [int(s) for s in run.snapshot_steps]
    base = Path(str(meta.get("base_model_path", "")))
    if not base.is_absolute():
        base = out.parent / base
    if not base.is_dir():
        raise ResumeError(f"{out}: base model folder {base} is missing; it must stay next to the run to resume")
    recorded = str(meta.get("base_model_dtype", ""))  # the precision it trained in, whatever the device now
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(recorded) or train_dtype(cfg, device)
    model, tokenizer = load_local_model(base, dtype=dtype)
    return model.to(device), tokenizer, identity, last_step, snapshots
