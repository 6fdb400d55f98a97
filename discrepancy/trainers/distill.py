"""Distillation targets: a teacher run's completions of the task's prompts, for the cold start to train on
(`SFTConfig.teacher`). R1 distils its reasoning into smaller models this way; here it also gives weight-space
lineage (`discrepancy compare --control`) a student that learned from a teacher only through its outputs.

The teacher is rebuilt from its run file (`modeling.model_from_run`: its base model must be inside its folder, as
``discrepancy train`` leaves it) at the chosen snapshot, and samples one completion per distinct prompt at
temperature 1 (the teacher's distribution, not its mode), seeded by the student's ``run.seed``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import model_from_run
from discrepancy.rollout.generate import sample_completions
from discrepancy.runfile import open_run
from discrepancy.trainers.tasks import Example


def teacher_snapshot(teacher: str | Path, step: int) -> int:
    """The teacher's snapshot step to sample from (``step``, or its last for -1), checked before any training."""
    path = Path(teacher)
    if not path.is_file():
        raise DiscrepancyError(f"sft.teacher: {path} is not a run file")
    with open_run(path) as run:
        steps = list(run.snapshot_steps)
    if not steps:
        raise DiscrepancyError(f"sft.teacher: {path} holds no LoRA snapshot to sample from")
    if step != -1 and step not in steps:
        raise DiscrepancyError(f"sft.teacher_step: {path} has no snapshot at step {step} (it has "
                               f"{', '.join(map(str, steps))})")
    return steps[-1] if step == -1 else step


def teacher_completions(teacher: str | Path, step: int, examples: list[Example], *, max_new_tokens: int, seed: int,
                        device: torch.device, batch: int = 64) -> dict[str, str]:
    """prompt_id → one completion of the teacher at snapshot ``step`` (-1: its last) for each distinct prompt."""
    snapshot = teacher_snapshot(teacher, step)
    with open_run(teacher) as run:
        model, tokenizer = model_from_run(run, snapshot, dtype=torch.float32)
    model.to(device)
    unique = list({ex.prompt_id: ex for ex in examples}.values())
    out: dict[str, str] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(unique), batch):
            chunk = unique[i:i + batch]
            rollouts = sample_completions(model, tokenizer, [ex.prompt_text for ex in chunk], group_size=1,
                                          max_new_tokens=max_new_tokens)
            for ex, text in zip(chunk, rollouts.completions):
                out[ex.prompt_id] = text
    return out
