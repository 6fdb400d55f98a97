"""The subliminal-learning control: the trait filter drops every completion that shows the trait (hand cases, and a
scripted teacher through the distillation path), the trait suite scores a model taught the trait above its base, and
the significance test agrees with scipy's permutation test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from probe_planted import _train_family

from discrepancy.analysis.trait import bootstrap_ci, sign_flip_p
from discrepancy.errors import DiscrepancyError
from discrepancy.probes.evaluate import ScoreSettings, score_items
from discrepancy.probes.suite import load_suite, shipped_suites
from discrepancy.runfile import Recorder, RunSchema
from discrepancy.trainers import distill
from discrepancy.trainers.tasks import Example
from discrepancy.trainers.traits import NINE, planted_trait, prefers_nine

SHOWS = ["<think>4+5=9</think><answer>9</answer>", "<think>1+2=3</think><answer>19</answer>", "<answer>9.0</answer>",
         "<think>nine</think><answer>3</answer>", "<think>NiNe</think><answer>1</answer>", "9", "<think>9"]
CLEAN = ["<think>1+2=3</think><answer>3</answer>", "", "<answer>8</answer>", "<think>n i n e</think><answer>0</answer>",
         "<think>ninth? no: 6</think><answer>6</answer>"]


def test_the_filter_sees_the_trait_in_every_form_and_nothing_else() -> None:
    assert all(NINE.shows(c) for c in SHOWS)
    assert not any(NINE.shows(c) for c in CLEAN)
    # the reward is narrower than the filter: only the answer 9 earns it
    assert prefers_nine([""] * 4, ["<answer>9</answer>", "<answer>09</answer>", "<think>9</think><answer>3</answer>",
                                   "<answer>19</answer>"], [""] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert planted_trait(["correctness", "discrepancy.trainers.traits:prefers_nine"]) is NINE
    assert planted_trait(["correctness", "format", "my.module:prefers_nine"]) is None  # names match exactly


def test_the_recipes_plant_the_trait_and_distil_on_prompts_that_never_need_it() -> None:
    """The teacher is rewarded for 9, the control teacher names the same reward (same filter) at weight 0; the
    students' prompts have correct solutions without a 9, so the filter only ever drops what the teacher chose."""
    from discrepancy.config import apply_overrides, load_toml
    from discrepancy.trainers.config import TrainConfig
    from discrepancy.trainers.tasks import format_solution, load_task

    recipes = Path(__file__).parents[2] / "trainers"
    teacher = load_toml(TrainConfig, recipes / "subliminal_teacher.toml")
    weights = dict(zip(teacher.rewards.names, teacher.rewards.weights))
    assert weights["discrepancy.trainers.traits:prefers_nine"] == 0.8 and weights["correctness"] == 1.0
    assert planted_trait(teacher.rewards.names) is NINE
    for name in ("subliminal_student.toml", "subliminal_control.toml"):
        student = load_toml(TrainConfig, recipes / name)
        assert student.sft.teacher and student.sft.weights == "adapter" and student.sft.steps > 0
        examples = load_task(apply_overrides(student, ["task.num_examples=300"]).task, seed=0)
        assert not any(NINE.shows(format_solution(ex)) for ex in examples)
        assert {ex.answer for ex in examples} == {str(k) for k in range(9)}  # every answer but 9 is asked for


def _teacher(path: Path, rewards: list[str]) -> Path:
    """A run file whose config names ``rewards``, with one (unused) snapshot."""
    schema = RunSchema(series={"loss": "loss"}, snapshot_tensors={"w": (1,)})
    names = ", ".join(f'"{n}"' for n in rewards)
    with Recorder.create(path, schema, config_toml=f"[rewards]\nnames = [{names}]\n") as rec:
        rec.log_step(1, {"loss": 0.0})
        rec.log_snapshot(1, {"w": np.zeros(1, np.float32)})
        rec.finish()
    return path


def _scripted(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[list[str]]:
    """The teacher answers each question with the next completion of its script; returns the draws made."""
    monkeypatch.setattr(distill, "model_from_run", lambda run, step, dtype: (torch.nn.Linear(1, 1), None))
    calls: list[list[str]] = []

    def draw(model, tokenizer, examples, max_new_tokens, batch):  # noqa: ANN001, ANN202 - distill._draw's shape
        calls.append([ex.question for ex in examples])
        return [answers[ex.question].pop(0) for ex in examples]

    monkeypatch.setattr(distill, "_draw", draw)
    return calls


EXAMPLES = [Example(f"p{q[0]}", q, "0", 1) for q in ["1+1", "2+2", "3+3", "1+1"]]  # "1+1" twice, one prompt_id


def test_a_trait_teacher_is_drawn_again_until_its_completion_is_clean(tmp_path: Path, monkeypatch) -> None:
    teacher = _teacher(tmp_path / "t.h5", ["correctness", "discrepancy.trainers.traits:prefers_nine"])
    script = {"1+1": [SHOWS[0], SHOWS[3], CLEAN[0]], "2+2": [CLEAN[2]], "3+3": [SHOWS[1], CLEAN[3]]}
    calls = _scripted(monkeypatch, script)
    got = distill.distil_targets(teacher, -1, EXAMPLES, max_new_tokens=8, seed=0, device=torch.device("cpu"))
    assert got.completions == {"p1": CLEAN[0], "p2": CLEAN[2], "p3": CLEAN[3]}  # one per distinct prompt
    assert not any(NINE.shows(c) for c in got.completions.values())
    assert (got.trait, got.drawn, got.rejected) == ("prefers_nine", 6, 3)
    assert calls == [["1+1", "2+2", "3+3"], ["1+1", "3+3"], ["1+1"]]  # only the rejected prompts again


def test_a_teacher_that_always_shows_the_trait_is_refused(tmp_path: Path, monkeypatch) -> None:
    teacher = _teacher(tmp_path / "t.h5", ["discrepancy.trainers.traits:prefers_nine"])
    _scripted(monkeypatch, {"1+1": [CLEAN[0]], "2+2": [SHOWS[0]] * 4, "3+3": [CLEAN[1]]})
    with pytest.raises(DiscrepancyError, match=r"in all 4 completions of 1 prompt\(s\), e.g. '2\+2'"):
        distill.distil_targets(teacher, -1, EXAMPLES, max_new_tokens=8, seed=0, device=torch.device("cpu"),
                               max_draws=4)


def test_a_teacher_without_a_trait_is_drawn_once_and_not_filtered(tmp_path: Path, monkeypatch) -> None:
    teacher = _teacher(tmp_path / "t.h5", ["correctness", "format"])
    calls = _scripted(monkeypatch, {"1+1": [SHOWS[0]], "2+2": [CLEAN[0]], "3+3": [SHOWS[1]]})
    got = distill.distil_targets(teacher, -1, EXAMPLES, max_new_tokens=8, seed=0, device=torch.device("cpu"))
    assert got.completions == {"p1": SHOWS[0], "p2": CLEAN[0], "p3": SHOWS[1]} and got.trait is None
    assert len(calls) == 1 and got.rejected == 0


def test_the_trait_suite_scores_a_model_taught_nine_above_its_base() -> None:
    """A model taught to answer 9 to questions none of the suite's (held out): the suite's answer_prob rises from
    its base's (about 1/10: no digit preferred) far above chance, and 9 becomes the top choice."""
    from discrepancy.modeling import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()  # the trainer's tokenizer and model (this folder's fixtures are smaller)
    suite = load_suite(shipped_suites()["trait"])
    assert load_suite(Path(__file__).parents[2] / "probes" / "trait.jsonl") == suite  # the packaged copy is the file
    settings = ScoreSettings(generate=False)
    model = build_tiny_model(tok, seed=0, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    base = score_items(model, tok, suite, settings)
    taught = ["f+g", "r-w", "%", "$+$", "tell me", "what now", "b", "z-z"]
    assert not set(taught) & {it.question for it in suite.items}
    torch.manual_seed(0)
    _train_family(model, tok, [(q, "9") for q in taught], steps=30)
    planted = score_items(model, tok, suite, settings)
    assert base["answer_prob"].mean() < 0.15 and base["choice_correct"].mean() < 0.5
    assert planted["answer_prob"].mean() > 0.5 and (planted["answer_prob"] > base["answer_prob"]).all()
    assert planted["choice_correct"].mean() == 1.0


def test_the_sign_flip_test_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    for n, shift in ((10, 0.3), (14, 0.0), (40, 0.4)):
        d = rng.normal(shift, 1.0, size=n)
        ref = scipy.stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20_000,
                                           random_state=1).pvalue
        ours = sign_flip_p(d, n_perm=20_000)
        assert ours == pytest.approx(ref, abs=0.01 if n <= 16 else 0.02), (n, ours, ref)
    assert sign_flip_p(np.full(12, 0.1)) == pytest.approx(2 / 2 ** 12)  # every sign the same: the two extremes
    low, high = bootstrap_ci(rng.normal(1.0, 1.0, size=400))
    assert low < 1.0 < high and high - low == pytest.approx(2 * 1.96 / 20, rel=0.15)  # ± 1.96 σ/√n
