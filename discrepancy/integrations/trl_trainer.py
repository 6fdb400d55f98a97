"""TRL's GRPOTrainer, recording every step into a discrepancy run file (docs/trl.md).

    from discrepancy.integrations.trl_trainer import InstrumentedGRPOTrainer   # instead of trl.GRPOTrainer
    trainer = InstrumentedGRPOTrainer(model=model, reward_funcs=[...], args=GRPOConfig(...), train_dataset=data,
                                      processing_class=tokenizer, peft_config=LoraConfig(...),
                                      discrepancy_run="runs/trl.h5")
    trainer.train()                                # then: discrepancy analyze runs/trl.h5

A subclass, not a callback: a callback sees neither the micro-batches TRL's loss runs on nor the gradient between
two of their backwards, and D_t, ρ_t and the gradient noise need both. The subclass only observes: it keeps
references to TRL's prepared inputs and training log-probs, reads `.grad` after each backward (the instruments'
`on_micro_backward`), and at the optimizer step calls the instruments of `discrepancy.instrumentation` with a
`StepContext` built from them. L_pre and L_post are TRL's own loss (`trl_measure`). What the update does is TRL's,
unchanged: the run it trains is the run a plain GRPOTrainer trains with the same seed (tested).
"""

from __future__ import annotations

from discrepancy.integrations.trl_version import require_trl

TRL_VERSION = require_trl()  # one line, with the fix, before any trl class is touched

import time  # noqa: E402 - after the version check on purpose
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from discrepancy.errors import DiscrepancyError  # noqa: E402
from discrepancy.instrumentation.config import InstrumentationConfig  # noqa: E402
from discrepancy.instrumentation.hooks import HookRunner, StepContext  # noqa: E402
from discrepancy.instrumentation.registry import build_instruments  # noqa: E402
from discrepancy.instrumentation.shared import SharedMeasurements  # noqa: E402
from discrepancy.integrations import trl_record  # noqa: E402
from discrepancy.integrations.trl_batch import (  # noqa: E402
    GEN_KEY, ROW_KEY, Generation, MicroBatch, StepRecord, decode_rows, layout_batch, step_batch)
from discrepancy.integrations.trl_measure import TRLSharedMeasurements, evaluate_trl_loss  # noqa: E402
from discrepancy.integrations.trl_recording import RunWriter, step_extras  # noqa: E402
from discrepancy.integrations.trl_series import safe_name  # noqa: E402
from discrepancy.modeling.modes import has_active_dropout  # noqa: E402

#: Generations kept for finding a row's text after TRL's shuffle (μ > 1 reuses one for μ optimizer steps).
KEEP_GENERATIONS = 8


class InstrumentedGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` that also writes ``discrepancy_run`` (a run file; module docstring).

    ``instruments``: which measurements (`InstrumentationConfig`, as `discrepancy train`'s ``[instruments]``; its
    ``correct_reward`` names the reward function that marks a correct completion). ``snapshot_every``: LoRA
    snapshot every K optimizer steps and at the end. ``samples_per_step``: completions recorded per generation.
    ``save_base``: save a model object's base weights next to the run (``<run>.base/``) so `discrepancy llc` and
    `probe` can rebuild it; a model named by a local folder is recorded by path instead.
    """

    _dc_capture: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None  # see capturing_logps
    _dc_saved_base = False

    def __init__(self, *args: Any, discrepancy_run: str | Path, instruments: InstrumentationConfig | None = None,
                 snapshot_every: int = 10, samples_per_step: int = 8, save_base: bool = True,
                 overwrite: bool = False, **kwargs: Any) -> None:
        run_path = Path(discrepancy_run)
        if run_path.exists() and not overwrite:
            raise DiscrepancyError(f"{run_path} already exists; choose another discrepancy_run or pass overwrite=True")
        if not run_path.parent.is_dir():
            raise DiscrepancyError(f"{run_path}: folder {run_path.parent} does not exist")
        if snapshot_every < 1 or samples_per_step < 0:
            raise DiscrepancyError(f"snapshot_every must be ≥ 1 and samples_per_step ≥ 0, got {snapshot_every} and "
                                   f"{samples_per_step}")
        if PartialState().num_processes > 1:
            raise DiscrepancyError("the TRL integration records single-process runs only; launch this run as one "
                                   "process (or record one with `discrepancy train`, which supports torchrun)")
        model = kwargs.get("model", args[0] if args else None)
        base = trl_record.local_folder(model)
        lora, why_not = trl_record.lora_rebuild(kwargs.get("peft_config"))
        if base is None and lora is not None and save_base and isinstance(model, torch.nn.Module):
            base = trl_record.save_base_model(model, run_path)  # before TRL injects the adapter into it
            self._dc_saved_base = True
        super().__init__(*args, **kwargs)
        if self._dc_saved_base:
            trl_record.save_base_tokenizer(self.processing_class, run_path)
        self._dc_meta = {**trl_record.model_meta(base, lora, why_not, self.model.dtype),
                         "trainer": "trl.GRPOTrainer", "trl_version": TRL_VERSION}
        self._dc_lora = lora
        self._dc_run_path, self._dc_overwrite = run_path, overwrite
        self._dc_snapshot_every, self._dc_samples = snapshot_every, samples_per_step
        self._dc_unmeasured, cfg = trl_record.unmeasured(instruments or InstrumentationConfig(), self.args)
        self._dc_runner = HookRunner(self._instruments(cfg))
        self._dc_step, self._dc_ctx, self._dc_metrics = StepRecord(), None, {}
        self._dc_generations: dict[int, Generation] = {}
        self._dc_new_generations: list[int] = []
        self._dc_gen_time = 0.0
        self._dc_writer: RunWriter | None = None
        self.add_callback(_StepHooks(self))

    def _instruments(self, cfg: InstrumentationConfig) -> list[Any]:
        """The project's instruments for this model, with the TRL provider of the shared measurements in front."""
        built = build_instruments(cfg, self.model, share_prompts=False)
        provider = TRLSharedMeasurements(lambda: self._dc_step, self._evaluate,
                                         dropout=has_active_dropout(self.model))
        out = []
        for inst in built:
            inner = getattr(inst, "inner", inst)
            if isinstance(inner, SharedMeasurements):
                if inst is inner:
                    inst = provider
                else:  # the timed wrapper keeps its key: time_shared is the provider's time
                    inst.inner, inst.provides = provider, provider.provides
            out.append(inst)
        return out

    def _evaluate(self, micro: list[MicroBatch], olds: list[torch.Tensor] | None) -> tuple[float, Any, Any]:
        return evaluate_trl_loss(self, micro, olds)

    # --- observing TRL's step -------------------------------------------------------------------------------
    def trl_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss on one micro-batch, exactly as training computes it (no capture of our own)."""
        return super().compute_loss(model, inputs)

    @contextmanager
    def capturing_logps(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor | None]]]:
        """Within the block, every (log-probs, entropies) TRL's forward computes is appended to the yielded list."""
        self._dc_capture = seen = []
        try:
            yield seen
        finally:
            self._dc_capture = None

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._dc_capture is not None:
            self._dc_capture.append((out[0].detach(), None if out[1] is None else out[1].detach()))
        return out

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        """TRL's loss; in training also keeps the micro-batch, its log-probs and the loss value backpropagated."""
        if not model.training or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.capturing_logps() as seen:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if seen:
            self._dc_step.micro.append(MicroBatch(inputs, seen[0][0], seen[0][1], float(loss.detach())))
        return loss

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """TRL's forward and backward of one micro-batch, then the instruments' micro-batch hook (`.grad` holds the
        gradient accumulated so far)."""
        k = len(self._dc_step.micro)
        out = super().training_step(model, inputs, num_items_in_batch)
        if len(self._dc_step.micro) == k + 1:
            batch = layout_batch(self._dc_step.micro[k], int(self.current_gradient_accumulation_steps))
            ctx = self._context(self.state.global_step + 1, batch, None, None)
            self._dc_metrics.update(self._dc_runner.on_micro_backward(ctx, k))
        return out

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        """TRL's generation and scoring, timed; each row is tagged so that its text survives TRL's shuffle."""
        start = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return out
        self._dc_gen_time += time.perf_counter() - start
        gid = max(self._dc_generations, default=-1) + 1
        n = int(out["completion_ids"].shape[0])
        device = out["completion_ids"].device
        out[GEN_KEY] = torch.full((n,), gid, dtype=torch.long, device=device)
        out[ROW_KEY] = torch.arange(n, dtype=torch.long, device=device)
        self._dc_generations[gid] = self._generation(out, n)
        self._dc_new_generations.append(gid)
        for old in sorted(self._dc_generations)[:-KEEP_GENERATIONS]:
            del self._dc_generations[old]
        return out

    def _generation(self, out: dict[str, Any], n: int) -> Generation:
        """The rows of a generation batch (one process: TRL's buffers end with them): completion texts as TRL
        decoded them, reward components, advantage, length; the prompt text, as the model saw it, of the rows
        recorded as samples."""
        tok = self.processing_class
        tok = getattr(tok, "tokenizer", tok)  # a multimodal processor holds its tokenizer
        texts = list(self._logs["completion"])[-n:]
        if len(texts) != n or not all(isinstance(t, str) for t in texts):  # conversational: decode the tokens
            texts = decode_rows(tok, out["completion_ids"], out["completion_mask"], skip_special=True)
        fields = {safe_name(name): np.asarray(list(self._logs["rewards"][name])[-n:], dtype=np.float64)
                  for name in self.reward_func_names}
        fields["advantage"] = out["advantages"].detach().float().reshape(n, -1).mean(1).cpu().numpy()
        fields["length"] = out["completion_mask"].sum(1).float().cpu().numpy()
        k = min(self._dc_samples, n)
        prompts = decode_rows(tok, out["prompt_ids"][:k], out["prompt_mask"][:k], skip_special=False)
        return Generation(prompts=prompts, completions=texts, fields=fields)

    def _context(self, step: int, batch: Any, logp: Any, entropy: Any) -> StepContext:
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        return StepContext(step=step, iteration=0, model=self.model, params=params, batch=batch, loss=_no_batch_loss,
                           share_prompts=False, logp=logp, entropy=entropy)

    # --- the optimizer step (called by _StepHooks) -----------------------------------------------------------
    def dc_before_optimizer(self) -> None:
        """Full batch known, `.grad` clipped, parameters θ_t: the instruments' before-optimizer hook."""
        if not self._dc_step.micro:
            return
        pad = getattr(getattr(self.processing_class, "tokenizer", self.processing_class), "pad_token_id", 0) or 0
        batch, logp, entropy = step_batch(self._dc_step, self._dc_generations, pad, int(self.num_generations))
        self._dc_ctx = self._context(self.state.global_step + 1, batch, logp, entropy)
        self._dc_metrics.update(self._dc_runner.on_before_optimizer(self._dc_ctx))
        self._dc_metrics.update(step_extras(batch, logp, self.args.temperature, self.beta))

    def dc_after_optimizer(self) -> None:
        """Parameters θ_{t+1}: the after-optimizer hook, and a snapshot when one is due."""
        if self._dc_ctx is not None:
            self._dc_metrics.update(self._dc_runner.on_after_optimizer(self._dc_ctx))
        step = self.state.global_step + 1
        if self._dc_writer is not None and step % self._dc_snapshot_every == 0:
            self._dc_writer.snapshot(step, self.model)

    def dc_step_end(self) -> None:
        """Hand the step's row and samples to the writer (TRL's logged values join it at its log call)."""
        step = self.state.global_step
        metrics, self._dc_metrics = self._dc_metrics, {}
        metrics["generation_time"], self._dc_gen_time = self._dc_gen_time, 0.0
        gens = [self._dc_generations[g] for g in self._dc_new_generations if g in self._dc_generations]
        self._dc_new_generations, self._dc_step, self._dc_ctx = [], StepRecord(), None
        if self._dc_writer is not None:
            self._dc_writer.step(step, metrics, gens, self._dc_samples)

    # --- the run file around TRL's training loop -------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's training, with the run file open for its whole length (a crash leaves a "failed" run)."""
        if kwargs.get("resume_from_checkpoint"):
            raise DiscrepancyError("resuming a TRL run is not supported by the discrepancy integration: train into a "
                                   "new discrepancy_run file")
        self._dc_writer = RunWriter.create(self, self._dc_run_path, self._dc_runner, self._dc_meta,
                                           trl_record.config_toml(self, self._dc_lora), self._dc_overwrite,
                                           self._dc_unmeasured)
        with self._dc_writer:
            out = super().train(*args, **kwargs)
            self._dc_writer.finish(self.state.global_step, self.model)
        return out


def _no_batch_loss(logp: torch.Tensor) -> float:
    """TRL's loss runs its own forward and cannot be evaluated from log-probs: L_pre and L_post come from the TRL
    provider (`trl_measure`), so no instrument of a TRL run calls this."""
    raise NotImplementedError("under TRL the batch loss is evaluated by TRLSharedMeasurements")


class _StepHooks(TrainerCallback):
    """The optimizer-step events of transformers' loop, forwarded to the trainer."""

    def __init__(self, trainer: InstrumentedGRPOTrainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.dc_before_optimizer()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.dc_after_optimizer()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.dc_step_end()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.trainer._dc_writer is not None and logs:
            self.trainer._dc_writer.trl_logs(state.global_step, logs)

