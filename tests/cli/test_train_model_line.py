"""``discrepancy train`` says what it trains before any training: its ``model:`` line comes before the cold start's
progress, whether the cold start trains every weight (the embedded tiny model) or the adapter only."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.setup import describe_model, planned_model

FAST = ["--set", "model.hidden_size=32", "--set", "model.num_heads=2", "--set", "model.intermediate_size=64",
        "--set", "sft.steps=10", "--set", "grpo.num_prompts=2", "--set", "grpo.group_size=2",
        "--set", "grpo.max_completion_length=4", "--set", "task.num_examples=20", "--set", "run.device=\"cpu\"",
        "--steps", "1"]


@pytest.mark.parametrize("weights", ["auto", "adapter"])  # auto: every weight of the tiny model
def test_the_model_line_comes_before_the_cold_start(tmp_path, weights: str) -> None:
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run.h5"), *FAST,
                                      "--set", f"sft.weights=\"{weights}\""])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("model: ")]
    sft = [i for i, line in enumerate(lines) if line.startswith("sft ")]
    assert len(said) == 1 and sft and said[0] < sft[0], lines  # once, and first
    what = "every weight" if weights == "auto" else "the adapter only"
    assert f"cold start 10 steps ({what})" in lines[said[0]] and "LoRA r8" in lines[said[0]]


def test_the_planned_model_is_described_as_the_trained_one_and_draws_nothing(tiny_model) -> None:
    """Built on the meta device from the model's config: the same line as the model with its adapter attached, no
    memory for weights, and the random generator where it was (the cold start draws what it drew before)."""
    from discrepancy.modeling import attach_lora

    cfg = TrainConfig()
    state = torch.get_rng_state()
    planned = planned_model(tiny_model, cfg)
    assert planned is not None and torch.equal(torch.get_rng_state(), state)
    assert all(p.device.type == "meta" for p in planned.parameters())
    real = attach_lora(tiny_model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, cfg.lora.dropout)
    assert describe_model(planned, cfg, "cpu") == describe_model(real, cfg, "cpu")
    assert planned_model(torch.nn.Linear(2, 2), cfg) is None  # no config to rebuild it from: said after attaching
