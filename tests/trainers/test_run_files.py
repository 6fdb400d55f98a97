"""A run's side files (base folder, checkpoint) and resuming: one run never takes or damages another's files."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers import run as run_module
from discrepancy.trainers.checkpoint import CheckpointError
from discrepancy.trainers.run import train_run
from discrepancy.trainers.run_files import RunFilesError

pytestmark = pytest.mark.slow


def _digest(path) -> str:
    return hashlib.md5((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture()
def short(fast_train_config):
    return apply_overrides(fast_train_config, ["run.steps=2", "run.snapshot_every=2", "sft.steps=2"])


def test_a_run_with_the_same_stem_refuses_the_others_files(short, tmp_path):
    train_run(short, tmp_path / "a.h5")
    before = _digest(tmp_path / "a.base")
    with pytest.raises(RunFilesError, match="belong to a.h5, which shares the stem 'a'"):
        train_run(apply_overrides(short, ["run.seed=3"]), tmp_path / "a.hdf5")
    assert not (tmp_path / "a.hdf5").exists() and _digest(tmp_path / "a.base") == before
    (tmp_path / "a.h5").unlink()  # a deleted run's leftovers: refused without --force, and the message says so
    with pytest.raises(RunFilesError, match="a.base already exists .* or to a deleted run"):
        train_run(apply_overrides(short, ["run.seed=3"]), tmp_path / "a.hdf5")
    with pytest.raises(RunFilesError, match="is a folder"):
        train_run(short, tmp_path, overwrite=True)


def test_force_never_takes_the_files_of_another_existing_run(short, tmp_path):
    train_run(short, tmp_path / "a.h5")
    base, ckpt = _digest(tmp_path / "a.base"), (tmp_path / "a.ckpt.pt").read_bytes()
    with pytest.raises(RunFilesError, match="belong to a.h5"):
        train_run(apply_overrides(short, ["run.seed=3"]), tmp_path / "a.hdf5", overwrite=True)
    assert _digest(tmp_path / "a.base") == base and (tmp_path / "a.ckpt.pt").read_bytes() == ckpt
    assert not (tmp_path / "a.hdf5").exists()
    (tmp_path / "a.h5").unlink()  # once the owner is gone, --force may take the name's side files
    train_run(apply_overrides(short, ["run.seed=3"]), tmp_path / "a.hdf5", overwrite=True)
    assert _digest(tmp_path / "a.base") != base


def test_resume_through_python_refuses_a_changed_config(short, tmp_path):
    out = tmp_path / "run.h5"
    train_run(short, out)
    with pytest.raises(run_module.ResumeError, match="optim.lr, grpo.beta differ|grpo.beta, optim.lr differ"):
        train_run(apply_overrides(short, ["run.steps=4", "optim.lr=0.5", "grpo.beta=0.9"]), out, resume=True)
    with open_run(out) as run:
        assert run.config["optim"]["lr"] == short.optim.lr and run.num_steps == 2


def test_a_forced_run_that_fails_early_leaves_the_old_run_whole(short, tmp_path, monkeypatch):
    out = tmp_path / "run.h5"
    train_run(short, out)
    base, ckpt = _digest(tmp_path / "run.base"), (tmp_path / "run.ckpt.pt").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("schema could not be built")

    monkeypatch.setattr(run_module, "_schema", broken)  # fails after the cold start has saved a new base
    with pytest.raises(RuntimeError, match="schema"):
        train_run(apply_overrides(short, ["run.seed=5"]), out, overwrite=True)
    assert _digest(tmp_path / "run.base") == base and (tmp_path / "run.ckpt.pt").read_bytes() == ckpt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.base", "run.ckpt.pt", "run.h5"]
    with open_run(out) as run:
        assert run.status == "finished" and run.num_steps == 2


def test_a_forced_run_replaces_base_and_checkpoint_and_resume_checks_the_checkpoint(short, tmp_path):
    out = tmp_path / "run.h5"
    train_run(short, out)
    old_ckpt = tmp_path / "old.ckpt.pt"
    shutil.copy(tmp_path / "run.ckpt.pt", old_ckpt)
    old_base = _digest(tmp_path / "run.base")
    train_run(apply_overrides(short, ["run.seed=7"]), out, overwrite=True)
    assert _digest(tmp_path / "run.base") != old_base  # another seed, another cold start: the new run's base
    longer = apply_overrides(short, ["run.seed=7", "run.steps=4"])
    shutil.copy(old_ckpt, tmp_path / "run.ckpt.pt")  # the old run's checkpoint where the new run's belongs
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train_run(longer, out, resume=True)
    with open_run(out) as run:  # refused before anything was written
        assert run.status == "finished" and run.num_steps == 2


def test_resume_refuses_a_checkpoint_ahead_of_the_run_file(short, tmp_path):
    out = tmp_path / "run.h5"
    train_run(short, out)
    payload = torch.load(tmp_path / "run.ckpt.pt", weights_only=True)
    payload["step"] = 9
    torch.save(payload, tmp_path / "run.ckpt.pt")
    with pytest.raises(CheckpointError, match="at step 9 but run.h5 ends at step 2"):
        train_run(apply_overrides(short, ["run.steps=12"]), out, resume=True)


def test_resume_changes_only_how_long_and_where_and_records_it(short, tmp_path):
    out = tmp_path / "run.h5"
    train_run(short, out)
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "4", "--set", "grpo.beta=0.5"])
    assert bad.exit_code == 1 and "--set grpo.beta cannot change on resume" in bad.output
    bad = runner.invoke(app, ["train", "--out", str(out), "--resume", "--seed", "3"])
    assert bad.exit_code == 1 and "drop --config/--model/--seed" in bad.output
    good = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "4", "--set", "run.threads=1"])
    assert good.exit_code == 0, good.output
    with open_run(out) as run:
        assert run.num_steps == 4 and run.config["run"]["steps"] == 4
        assert run.config["grpo"]["beta"] == short.grpo.beta
