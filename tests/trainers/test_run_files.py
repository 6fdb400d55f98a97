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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.h5.lock", "run.base", "run.ckpt.pt", "run.h5"]
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


def test_force_refuses_a_run_that_is_being_written(short, tmp_path):
    """A live trainer's run is never replaced: --force from a second trainer refuses in one line, and the first run
    finishes whole. Two trainers started together cannot both write: the run-file lock refuses the second."""
    import subprocess
    import sys
    import time

    out = tmp_path / "live.h5"
    script = (f"from discrepancy.config import apply_overrides; from discrepancy.trainers.run import train_run; "
              f"from discrepancy.trainers.config import TrainConfig; import tomllib; "
              f"cfg = apply_overrides(TrainConfig(), {_as_overrides(short) + ['run.steps=400']!r}); "
              f"train_run(cfg, {str(out)!r}, instruments=[])")
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not out.exists():
            time.sleep(0.2)
        time.sleep(1.0)  # past the run file's creation
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        with pytest.raises(RunFilesError, match="is being written by"):
            train_run(apply_overrides(short, ["run.seed=5"]), out, overwrite=True, instruments=[])
    finally:
        first.terminate()  # SIGTERM: it stops after its step, as an interrupted run
        first.wait(timeout=120)
    with open_run(out) as run:
        assert run.status == "interrupted" and run.num_steps >= 1 and run.config["run"]["seed"] == short.run.seed


def test_a_held_run_lock_refuses_a_second_trainer(short, tmp_path):
    from discrepancy.trainers.run_files import lock_path, run_lock

    out = tmp_path / "run.h5"
    with run_lock(out):
        with pytest.raises(RunFilesError, match="being written by another discrepancy train"):
            train_run(short, out, instruments=[])
    assert not out.exists() and not lock_path(out).exists()  # refused: nothing left behind
    train_run(short, out, instruments=[])
    assert lock_path(out).exists()  # kept next to the run


def _as_overrides(cfg) -> list[str]:
    """``cfg`` as --set overrides (every key of its TOML)."""
    import tomllib

    from discrepancy.config import to_toml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}={_toml(v)}"

    return list(flat(tomllib.loads(to_toml(cfg))))


def _toml(v) -> str:
    from discrepancy.config import _toml_value

    return _toml_value(v)


def planted_reward(prompts, completions, answers):
    return [0.0] * len(completions)


def test_resume_refuses_code_and_paths_the_run_file_names_unless_trusted(short, tmp_path, tiny_model,
                                                                          tiny_tokenizer):
    """A received run folder must not make a resume import code or read files elsewhere: reward import paths and
    dataset/model paths outside the run's folder are refused, naming them, unless --trust-run says so."""
    from discrepancy.modeling import save_local_model
    from discrepancy.trainers.run import ResumeError
    from discrepancy.trainers.tasks import gsm8k_sample_path

    elsewhere = tmp_path / "elsewhere"
    model_dir = save_local_model(tiny_model, tiny_tokenizer, elsewhere / "model")
    data = elsewhere / "data.jsonl"
    shutil.copy(gsm8k_sample_path(), data)
    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "run.h5"
    cfg = apply_overrides(short, ['rewards.names=["test_run_files:planted_reward", "format"]',
                                  "rewards.weights=[1.0, 1.0]", 'task.name="gsm8k"', f'task.path="{data}"',
                                  f'model.path="{model_dir}"', "run.steps=1"])
    train_run(cfg, out, instruments=[])
    longer = apply_overrides(cfg, ["run.steps=2"])
    with pytest.raises(ResumeError, match="reward code test_run_files:planted_reward; task.path .*; model.path"):
        train_run(longer, out, instruments=[], resume=True)
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume", "--steps", "2"])
    assert result.exit_code == 1 and "--trust-run" in result.output and len(result.output.strip().splitlines()) == 1
    summary = train_run(longer, out, instruments=[], resume=True, trust_run=True)
    assert summary.status == "finished" and summary.steps == 2


def test_resume_runs_the_event_command_a_run_file_names_only_when_trusted(short, tmp_path):
    """early_warning.on_event is a command: recorded in a received run's config, a resume refuses to run it unless
    --trust-run says so; one the user gives on the command line is theirs, and may change on resume."""
    from discrepancy.trainers.run import ResumeError

    out = tmp_path / "run.h5"
    marker = tmp_path / "ran"
    cfg = apply_overrides(short, [f'early_warning.on_event="touch {marker}"', "run.steps=1"])
    train_run(cfg, out, instruments=[])
    longer = apply_overrides(cfg, ["run.steps=2"])
    with pytest.raises(ResumeError, match="early_warning.on_event 'touch "):
        train_run(longer, out, instruments=[], resume=True)
    other = apply_overrides(longer, ['early_warning.on_event="true"'])  # the user's own command: no refusal
    assert train_run(other, out, instruments=[], resume=True).steps == 2


def test_a_full_disk_while_checkpointing_is_one_line_and_resumable(short, tmp_path, monkeypatch):
    """ENOSPC while the checkpoint is written: one line saying what is safe, no partial checkpoint left, the previous
    checkpoint and the run's flushed steps intact, and --resume continues once there is space again."""
    import errno

    from discrepancy.trainers import checkpoint as checkpoint_module

    out = tmp_path / "run.h5"
    cfg = apply_overrides(short, ["run.steps=4", "run.checkpoint_every=1", "run.flush_every=1", "sft.steps=0"])
    real_save, calls = checkpoint_module.torch.save, []

    def save_until_full(obj, path):
        calls.append(path)
        if len(calls) == 3:  # the checkpoint of step 3: half written, then the disk is full
            open(path, "wb").write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_until_full)
    with pytest.raises(CheckpointError, match="No space left on device.*intact: free space and continue with"):
        train_run(cfg, out, instruments=[])
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert torch.load(tmp_path / "run.ckpt.pt", weights_only=True)["step"] == 2
    summary = train_run(cfg, out, instruments=[], resume=True)
    assert summary.status == "finished"
    with open_run(out) as run:
        assert list(run.series().index) == [1, 2, 3, 4]


def test_a_run_an_older_version_recorded_resumes_as_it_ran(short, tmp_path, monkeypatch):
    """A run file from a version without some config keys and series: keys whose absence meant another value get
    that value (D_t on the whole batch, no diversity), other absent keys their default; what this version measures
    and the file does not declare is left out with one notice, not a crash."""
    import tomllib

    import h5py

    from discrepancy.config import _toml_value
    from discrepancy.trainers.run_files import LEGACY

    out = tmp_path / "run.h5"
    train_run(short, out)
    with h5py.File(out, "r+") as f:  # what an older version recorded: none of these keys
        raw = f["meta"].attrs["config_toml"]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        old = tomllib.loads(text)
        for key in ("discrepancy_groups", "diversity"):
            old["instruments"].pop(key, None)
        for section in ("curriculum", "sampling", "fusion"):
            old.pop(section, None)
        old["lora"].pop("growth", None)
        old["control"].pop("batch", None)
        text = "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in table.items())
                         for name, table in old.items())  # nested tables inline: the same config
        f["meta"].attrs["config_toml"] = text.encode() if isinstance(raw, bytes) else text
    step = run_module.grpo_step

    def newer(state):  # this version measures one series more than the file declares
        result = step(state)
        result.metrics["a_newer_measure"] = 1.0
        return result

    monkeypatch.setattr(run_module, "grpo_step", newer)
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--resume", "--steps", "4"])
    assert res.exit_code == 0, res.output
    assert res.output.count("not in the resumed run file") == 1 and "a_newer_measure" in res.output
    with open_run(out) as run:
        assert run.num_steps == 4
        assert run.config["instruments"]["discrepancy_groups"] == LEGACY["instruments.discrepancy_groups"] == "all"
        assert run.config["instruments"]["diversity"] is False
        assert "a_newer_measure" not in run.series().columns

