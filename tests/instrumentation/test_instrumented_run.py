"""A 10-step instrumented run of the real trainer on the tiny model, read back through the run file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import discrepancy.trainers.run as run_mod
from discrepancy.config import apply_overrides
from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.instrumentation.registry import build_instruments
from discrepancy.modeling import model_from_run
from discrepancy.runfile import open_run
from discrepancy.trainers.config import TrainConfig

import instr_models  # noqa: F401  (one torch thread; the digit reward is resolved from it by name)

SNAPSHOT_STEP = 5
PROBE = torch.tensor([[1, 20, 30, 40, 50, 60, 70, 80]])


class LogitsAt(Instrument):
    """Test-only instrument: logits of a fixed input from the live model right after step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.logits: torch.Tensor | None = None

    def series(self) -> dict[str, str]:
        return {}

    def on_after_optimizer(self, ctx: Any) -> None:
        if ctx.step == self.step:
            was_training = ctx.model.training
            ctx.model.eval()
            with torch.no_grad():
                self.logits = ctx.model(input_ids=PROBE).logits.clone()
            ctx.model.train(was_training)


@pytest.mark.slow
def test_ten_step_run_writes_every_series_and_a_rebuildable_snapshot(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = apply_overrides(TrainConfig(), [
        "run.steps=10", "sft.steps=2", "grpo.num_prompts=4", "grpo.group_size=2", "grpo.micro_batch_groups=2",
        "grpo.max_completion_length=8", "model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2",
        f"run.snapshot_every={SNAPSHOT_STEP}", "run.device=cpu", "run.checkpoint_every=0", "grpo.beta=0.0",
        "optim.warmup_steps=0",
    ])
    cfg.rewards.names = ["correctness", "instr_models:digit_reward"]
    cfg.rewards.weights = [1.0, 1.0]
    icfg = InstrumentationConfig(linearisation_every=5, linearisation_probe=4, discrepancy_every=1)
    instruments: list[Any] = []
    probe = LogitsAt(SNAPSHOT_STEP)
    attach = run_mod.attach_lora

    def attach_and_instrument(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = attach(*args, **kwargs)
        instruments.extend([*build_instruments(icfg, model), probe])
        return model

    # The trainer builds the model inside train_run; the instruments need it for their LoRA module columns.
    monkeypatch.setattr(run_mod, "attach_lora", attach_and_instrument)
    out = tmp_path / "run.h5"
    summary = run_mod.train_run(cfg, out, instruments=instruments)
    assert summary.status == "finished"

    declared = {n for inst in instruments for n in inst.series()}
    with open_run(out) as run:
        series = run.series()
        assert list(series.index) == list(range(1, 11))
        assert declared <= set(series.columns)
        for name in ("loss_pre", "loss_post", "disc", "step_norm", "kl_realised", "kl_start", "adv_std",
                     "noise_trace", "instrument_time"):
            assert series[name].notna().all(), name
        assert (series["step_norm"] > 0).all()
        assert series["kl_start"].iloc[0] > 0  # measured after the update: not trivially zero at step 1
        assert series["lin_error"].notna().tolist() == [s % 5 == 0 for s in range(1, 11)]
        norms = run.array("lora_delta_norm")
        assert norms.shape[0] == 10 and norms.notna().all().all()

        # ‖(α/r)BA‖_F recorded at the snapshot step equals the norm formed from the stored tensors.
        snap = run.snapshot(SNAPSHOT_STEP)
        scale = cfg.lora.alpha / cfg.lora.rank
        a_names = sorted(n for n in snap if "lora_A" in n)
        explicit = [np.linalg.norm(scale * snap[n.replace("lora_A", "lora_B")].astype(np.float64)
                                   @ snap[n].astype(np.float64)) for n in a_names]
        np.testing.assert_allclose(sorted(norms.loc[SNAPSHOT_STEP].to_numpy()), sorted(explicit), rtol=1e-4)

        # The snapshot rebuilt into a model gives the live model's logits at that step.
        rebuilt, _ = model_from_run(run, step=SNAPSHOT_STEP, dtype=torch.float32)
        with torch.no_grad():
            logits = rebuilt(input_ids=PROBE).logits
    assert probe.logits is not None
    torch.testing.assert_close(logits, probe.logits, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(series["rho"].dropna().abs().max())) or series["rho"].isna().all()
