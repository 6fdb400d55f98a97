"""Distillation through the cold start (`sft.teacher`): the student trains on exactly the teacher's completions,
shares its base model, and `compare --control` measures lineage over the three runs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides
from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import model_from_run
from discrepancy.rollout.generate import sample_completions
from discrepancy.runfile import open_run
from discrepancy.trainers import sft as sft_module
from discrepancy.trainers.run import train_run
from discrepancy.trainers.setup import prepare


@pytest.mark.slow
def test_a_student_learns_from_the_teacher_completions_and_compare_measures_lineage(fast_train_config, tmp_path,
                                                                                     monkeypatch):
    teacher = tmp_path / "teacher" / "run.h5"
    teacher.parent.mkdir()
    train_run(fast_train_config, teacher, instruments=[])
    seen: dict = {}
    real = sft_module.sft_batch

    def spy(tokenizer, examples, device="cpu", completions=None):  # noqa: ANN001, ANN202
        seen["completions"] = completions
        return real(tokenizer, examples, device, completions)

    monkeypatch.setattr(sft_module, "sft_batch", spy)
    base = teacher.with_name("run.base")
    common = [f'model.path="{base}"', "sft.weights=\"adapter\"", "sft.steps=5"]
    student_cfg = apply_overrides(fast_train_config, [*common, f'sft.teacher="{teacher}"'])
    student = tmp_path / "student" / "run.h5"
    student.parent.mkdir()
    train_run(student_cfg, student, instruments=[])
    targets = seen["completions"]
    # the targets are the teacher's own samples: sampled again here from its last snapshot with the same seed
    examples = prepare(student_cfg).examples
    with open_run(teacher) as run:
        model, tok = model_from_run(run, run.snapshot_steps[-1], dtype=torch.float32)
    unique = list({ex.prompt_id: ex for ex in examples}.values())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(student_cfg.run.seed)
        again = sample_completions(model, tok, [ex.prompt_text for ex in unique[:64]], group_size=1,
                                   max_new_tokens=student_cfg.grpo.max_completion_length).completions
    assert [targets[ex.prompt_id] for ex in unique[:64]] == again
    control = tmp_path / "control" / "run.h5"
    control.parent.mkdir()
    train_run(apply_overrides(fast_train_config, common), control, instruments=[])
    with open_run(teacher) as t, open_run(student) as s, open_run(control) as c:
        assert t.meta["base_fingerprint"] == s.meta["base_fingerprint"] == c.meta["base_fingerprint"]
    res = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--control", str(control), "--out",
                                   str(tmp_path / "cmp"), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    whole = [r for r in doc["lineage"] if r["module"] == "all"]
    with open_run(student) as s:
        assert [r["step"] for r in whole] == list(s.snapshot_steps)
    assert all(r["norm_student"] > 0 for r in whole)  # the distilled adapter moved
    # A 10-step teacher on the tiny model sees tied rewards: its adapter never moves, and compare says so.
    if whole[0]["norm_teacher"] == 0:
        assert any("teacher's LoRA update is zero" in n for n in doc["notes"])
    else:
        assert all(-1 <= r["c_student_teacher"] <= 1 for r in whole)


def test_a_bad_teacher_fails_before_training(fast_train_config, tmp_path):
    with pytest.raises(DiscrepancyError, match="sft.teacher: .* is not a run file"):
        prepare(apply_overrides(fast_train_config, [f'sft.teacher="{tmp_path / "nope.h5"}"']))
    with pytest.raises(Exception, match="sft.teacher_step"):
        apply_overrides(fast_train_config, ["sft.teacher_step=-2"])
