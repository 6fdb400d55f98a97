"""``discrepancy compare``: events planted in several runs recur, lineage on planted updates, and every bad input
as one line that names the file and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import Recorder, RunSchema

STEPS = 200
MODULES = ("m.l0.q_proj", "m.l0.v_proj")


def _lora(rng: np.random.Generator, rank: int = 2, like: dict | None = None, noise: float = 0.0) -> dict:
    """Snapshot tensors of two modules (A: r × 8, B: 6 × r); ``like``: the same update plus noise."""
    out = {}
    for mod in MODULES:
        a = like[f"{mod}.lora_A.weight"] if like else rng.normal(size=(rank, 8))
        b = like[f"{mod}.lora_B.weight"] if like else rng.normal(size=(6, rank))
        out[f"{mod}.lora_A.weight"] = (a + noise * rng.normal(size=a.shape)).astype(np.float32)
        out[f"{mod}.lora_B.weight"] = (b + noise * rng.normal(size=b.shape)).astype(np.float32)
    return out


def make_run(path: Path, seed: int, jump_at: int | None, *, fingerprint: str | None = "base-1",
             lora: dict | None = None, rank: int = 2) -> Path:
    """A finished run: reward with a 6σ step at ``jump_at``, a noise-only kl, and snapshots at steps 100 and 200."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    snap = lora if lora is not None else _lora(rng, rank)
    meta = {"lora_rank": rank, "lora_alpha": 4.0, "lora_target_modules": ["q_proj", "v_proj"],
            "base_model_path": "run.base"} | ({"base_fingerprint": fingerprint} if fingerprint else {})
    schema = RunSchema(series={"reward_mean": "mean reward", "kl": "KL"},
                       snapshot_tensors={k: v.shape for k, v in snap.items()})
    with Recorder.create(path, schema, meta=meta) as rec:
        for step in range(1, STEPS + 1):
            level = 0.6 if jump_at is not None and step >= jump_at else 0.0
            rec.log_step(step, {"reward_mean": level + 0.1 * rng.normal(), "kl": 0.1 * rng.normal()})
            if step in (100, 200):
                rec.log_snapshot(step, {k: v * step / 200 for k, v in snap.items()})
        rec.finish()
    return path


def test_an_event_planted_in_three_runs_recurs_in_three(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / f"s{i}" / "run.h5", seed=i, jump_at=at) for i, at in enumerate((120, 126, 117))]
    runs.append(make_run(tmp_path / "s3" / "run.h5", seed=3, jump_at=None))
    res = CliRunner().invoke(app, ["compare", *map(str, runs), "--out", str(tmp_path / "cmp"), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    jumps = [g for g in doc["recurrence"] if g["kind"] == "jump" and g["signal"] == "reward_mean"]
    assert jumps[0]["runs_with"] == 3 and jumps[0]["direction"] == "up"
    assert 117 <= jumps[0]["step_min"] and jumps[0]["step_max"] <= 127 and jumps[0]["p_chance"] < 0.05
    assert "s3" not in jumps[0]["members"]
    assert not any(g["signal"] == "kl" and g["runs_with"] >= 2 for g in doc["recurrence"])  # noise recurs nowhere
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "4 runs side by side" in html and "data:image/png;base64" in html and "lineage needs --control" in html


def test_lineage_with_a_control_shows_the_planted_inheritance(tmp_path: Path) -> None:
    """The student's update is the teacher's plus a little noise, the control's is independent: GI ≈ 1 − c(C, T)."""
    rng = np.random.default_rng(0)
    teacher_lora = _lora(rng)
    teacher = make_run(tmp_path / "t" / "run.h5", 0, 120, lora=teacher_lora)
    student = make_run(tmp_path / "s" / "run.h5", 1, 120, lora=_lora(rng, like=teacher_lora, noise=0.05))
    control = make_run(tmp_path / "c" / "run.h5", 2, 120)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--control", str(control), "--out", str(out),
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    whole = [r for r in json.loads(res.stdout)["lineage"] if r["module"] == "all"]
    assert [r["step"] for r in whole] == [100, 200]
    for r in whole:
        assert r["c_student_teacher"] > 0.98 and abs(r["gi"] - (r["c_student_teacher"] - r["c_control_teacher"])) < 1e-9
        assert r["gi"] > 0.5
    assert (out / "lineage.csv").exists() and (out / "lineage.png").exists()


def _refused(args: list[str], tmp_path: Path, *expected: str) -> None:
    out = tmp_path / "refused"
    res = CliRunner().invoke(app, ["compare", *args, "--out", str(out)])
    assert res.exit_code != 0
    assert len(res.output.strip().splitlines()) == 1, res.output
    for text in expected:
        assert text in res.output, res.output
    assert not out.exists()


def test_bad_inputs_are_one_line_naming_the_file(tmp_path: Path) -> None:
    t = make_run(tmp_path / "t" / "run.h5", 0, 120)
    s = make_run(tmp_path / "s" / "run.h5", 1, 120)
    c = make_run(tmp_path / "c" / "run.h5", 2, 120)
    other_base = make_run(tmp_path / "o" / "run.h5", 3, 120, fingerprint="base-2")
    other_rank = make_run(tmp_path / "r" / "run.h5", 4, 120, rank=3)
    no_print = make_run(tmp_path / "n" / "run.h5", 5, 120, fingerprint=None)
    _refused([str(t)], tmp_path, "at least two runs")
    _refused([str(t), str(s), str(t)], tmp_path, "t/run.h5", "the same run as")  # one run twice
    _refused([str(t), str(tmp_path / "missing.h5")], tmp_path, "missing.h5", "no such file")
    _refused([str(t), str(s), "--control", str(other_base)], tmp_path, "o/run.h5", "base model differs")
    _refused([str(t), str(other_rank), "--control", str(c)], tmp_path, "r/run.h5", "LoRA rank")
    _refused([str(t), str(s), "--control", str(no_print)], tmp_path, "n/run.h5", "fingerprint")
    v1 = tmp_path / "v1" / "run.h5"
    v1.parent.mkdir()
    shutil.copy(Path(__file__).parents[1] / "runfile" / "data" / "v1_run.h5", v1)
    _refused([str(t), str(v1)], tmp_path, "format v1", "recover")


def test_a_run_still_being_written_is_refused(tmp_path: Path) -> None:
    done = make_run(tmp_path / "a" / "run.h5", 0, 120)
    live = tmp_path / "b" / "run.h5"
    live.parent.mkdir()
    with Recorder.create(live, RunSchema(series={"reward_mean": ""}), flush_every=1) as rec:  # this process writes
        for step in range(1, 30):
            rec.log_step(step, {"reward_mean": 0.0})
        rec.flush()
        _refused([str(done), str(live)], tmp_path, "b/run.h5", "still being written")
        rec.finish()


@pytest.mark.parametrize("bad", [["--tolerance", "-1"]])
def test_bad_options_are_refused_by_the_parser(tmp_path: Path, bad: list[str]) -> None:
    t = make_run(tmp_path / "t" / "run.h5", 0, 120)
    res = CliRunner().invoke(app, ["compare", str(t), str(t), *bad])
    assert res.exit_code == 2
