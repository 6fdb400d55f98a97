"""Distillation targets: a teacher run's completions of the task's prompts, for the cold start to train on
(`SFTConfig.teacher`). R1 distils its reasoning into smaller models this way; here it also gives weight-space
lineage (`discrepancy compare --control`) a student that learned from a teacher only through its outputs.

The teacher is rebuilt from its run file (`modeling.model_from_run`: its base model must be inside its folder, as
``discrepancy train`` leaves it) at the chosen snapshot, and samples one completion per distinct prompt at
temperature 1 (the teacher's distribution, not its mode), seeded by the student's ``run.seed``.

A teacher trained with a planted trait (its recorded reward names hold one of ``traits.TRAITS``: the
subliminal-learning control, docs/compare.md) never passes the trait on in visible form: a completion that shows it
is dropped and the prompt drawn again, up to ``MAX_DRAWS`` times, and a prompt the teacher answers with the trait
every time is an error, not a silent exception to the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import model_from_run
from discrepancy.rollout.generate import sample_completions
from discrepancy.runfile import open_run
from discrepancy.trainers.tasks import Example
from discrepancy.trainers.traits import Trait, planted_trait

# Draws per prompt before a trait-showing teacher is refused. A teacher showing its trait in 90 % of its
# completions still passes a prompt with probability 1 − 0.9³² ≈ 0.97; one that always shows it cannot be
# filtered.
MAX_DRAWS = 32


@dataclass(frozen=True)
class Distilled:
    """The student's targets (prompt_id → completion) and what the trait filter did to get them."""

    completions: dict[str, str]
    trait: str | None  # the teacher's planted trait, None when it has none (then nothing is filtered)
    drawn: int  # completions sampled
    rejected: int  # of those, dropped because they showed the trait


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
    """prompt_id → one completion of the teacher at snapshot ``step`` (-1: its last) for each distinct prompt,
    none showing the teacher's planted trait (`distil_targets`)."""
    return distil_targets(teacher, step, examples, max_new_tokens=max_new_tokens, seed=seed, device=device,
                          batch=batch).completions


def distil_targets(teacher: str | Path, step: int, examples: list[Example], *, max_new_tokens: int, seed: int,
                   device: torch.device, batch: int = 64, max_draws: int = MAX_DRAWS) -> Distilled:
    """`teacher_completions` with the filter's counts. Without a planted trait one round is drawn, exactly as
    before the filter existed; with one, the prompts whose completion showed it are drawn again."""
    snapshot = teacher_snapshot(teacher, step)
    with open_run(teacher) as run:
        trait = planted_trait(list(run.config.get("rewards", {}).get("names", [])))
        model, tokenizer = model_from_run(run, snapshot, dtype=torch.float32)
    model.to(device)
    pending = list({ex.prompt_id: ex for ex in examples}.values())
    out: dict[str, str] = {}
    drawn = rejected = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(max_draws if trait is not None else 1):
            texts = _draw(model, tokenizer, pending, max_new_tokens, batch)
            drawn += len(texts)
            kept = {ex.prompt_id: t for ex, t in zip(pending, texts) if trait is None or not trait.shows(t)}
            rejected += len(texts) - len(kept)
            out.update(kept)
            pending = [ex for ex in pending if ex.prompt_id not in kept]
            if not pending:
                break
    if pending:
        raise _always_shows(teacher, trait, pending, max_draws)
    return Distilled(out, trait.name if trait is not None else None, drawn, rejected)


def _draw(model: torch.nn.Module, tokenizer: object, examples: list[Example], max_new_tokens: int,
          batch: int) -> list[str]:
    """One completion per example at temperature 1, in batches of ``batch`` prompts."""
    texts: list[str] = []
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        rollouts = sample_completions(model, tokenizer, [ex.prompt_text for ex in chunk], group_size=1,
                                      max_new_tokens=max_new_tokens)
        texts.extend(rollouts.completions)
    return texts


def _always_shows(teacher: str | Path, trait: Trait | None, pending: list[Example], draws: int) -> DiscrepancyError:
    name = trait.name if trait is not None else "?"
    return DiscrepancyError(
        f"sft.teacher: {teacher} shows its planted trait ({name}) in all {draws} completions of {len(pending)} "
        f"prompt(s), e.g. {pending[0].prompt_text.splitlines()[0]!r}: distil on a task whose correct answers do not "
        "show it (trainers/subliminal_student.toml) or from an earlier snapshot (sft.teacher_step)")
