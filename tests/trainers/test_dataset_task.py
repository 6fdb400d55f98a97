"""A local dataset as the task (``task.name = "dataset"``): its questions, through the column mapping, are what the
trainer prompts with and what the run records."""

from __future__ import annotations

import json

import pytest

from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers.run import train_run
from discrepancy.trainers.setup import prepare


@pytest.mark.slow
def test_a_dataset_file_is_the_task_the_trainer_prompts_with(fast_train_config, tmp_path):
    rows = [{"q": f"{a}*{b}", "a": str(a * b)} for a in range(1, 6) for b in range(1, 6)]
    data = tmp_path / "mult.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = apply_overrides(fast_train_config, ['task.name="dataset"', f'task.path="{data}"', 'task.question_field="q"',
                                              'task.answer_field="a"', "run.steps=2"])
    with pytest.warns(RuntimeWarning, match="will not learn the dataset's task"):
        examples = prepare(cfg).examples
    assert [(ex.question, ex.answer) for ex in examples] == [(r["q"], r["a"]) for r in rows]
    out = tmp_path / "run.h5"
    with pytest.warns(RuntimeWarning):
        train_run(cfg, out, instruments=[])
    with open_run(out) as run:
        prompts = set(run.samples()["prompt"])
    assert prompts and all(any(r["q"] in p for r in rows) for p in prompts)
