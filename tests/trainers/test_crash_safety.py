"""kill -9 of the trainer at each phase of a run, and what the user can do next: every phase leaves either nothing
(train again) or a readable run that --resume completes, with every step recorded once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from discrepancy.config import apply_overrides, to_toml
from discrepancy.runfile import open_run
from discrepancy.trainers.run import ResumeError, train_run
from discrepancy.trainers.run_files import staged_base_dir

pytestmark = pytest.mark.slow

# The child trains with one function wrapped to kill its own process (SIGKILL: no handler, no flush, no cleanup) on
# the n-th call, before or after the real call: a crash at that exact point of the run.
CHILD = r"""
import importlib, json, os, signal, sys
from pathlib import Path
from discrepancy.config import load_toml
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.run import ResumeError, train_run
spec = json.loads(sys.argv[1])
owner = importlib.import_module(spec["module"])
target = owner
for part in spec["attr"].split(".")[:-1]:
    target = getattr(target, part)
name = spec["attr"].split(".")[-1]
real, calls = getattr(target, name), []
def wrapped(*args, **kwargs):
    calls.append(1)
    if len(calls) == spec["call"] and not spec["after"]:
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(*args, **kwargs)
    if len(calls) == spec["call"] and spec["after"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(target, name, wrapped)
cfg = load_toml(TrainConfig, Path(spec["config"]))
train_run(cfg, spec["out"], resume=spec["resume"], instruments=[])
"""

PHASES = {  # phase: (module, attribute, n-th call, kill after the call)
    "cold start": ("discrepancy.trainers.sft", "sft_loss", 2, False),
    "staging the base": ("discrepancy.trainers.setup", "save_local_model", 1, True),
    "mid-flush": ("discrepancy.runfile.recorder", "Recorder.flush", 2, False),
    "mid-snapshot": ("discrepancy.runfile.recorder", "Recorder.log_snapshot", 2, False),
    "mid-checkpoint": ("discrepancy.trainers.checkpoint", "os.replace", 2, False),
}


def _crash(tmp_path: Path, cfg, phase: tuple, resume: bool = False) -> None:
    config = tmp_path / "config.toml"
    config.write_text(to_toml(cfg))
    module, attr, call, after = phase
    spec = {"module": module, "attr": attr, "call": call, "after": after, "config": str(config),
            "out": str(tmp_path / "run.h5"), "resume": resume}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]  # it died where it was told to


@pytest.fixture()
def cfg(fast_train_config):
    return apply_overrides(fast_train_config, ["run.steps=4", "run.checkpoint_every=1", "run.flush_every=1",
                                               "run.snapshot_every=2", "sft.steps=3"])


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_crash_at_each_phase_leaves_a_run_the_user_can_finish(cfg, tmp_path, phase):
    _crash(tmp_path, cfg, PHASES[phase])
    out = tmp_path / "run.h5"
    if not out.exists():  # died before the run file existed: nothing to resume, and nothing blocks a new run
        assert phase in ("cold start", "staging the base")
        summary = train_run(cfg, out, instruments=[])
        assert not staged_base_dir(out).exists()
    else:
        with open_run(out) as run:  # readable as it was left
            assert run.status == "incomplete"
        if (tmp_path / "run.ckpt.pt").exists():
            summary = train_run(cfg, out, instruments=[], resume=True)
        else:  # died before the first checkpoint: the resume says to start again, and --force does
            with pytest.raises(ResumeError, match="before its first checkpoint.*--force"):
                train_run(cfg, out, instruments=[], resume=True)
            summary = train_run(cfg, out, instruments=[], overwrite=True)
    assert summary.status == "finished"
    with open_run(out) as run:
        assert list(run.series().index) == [1, 2, 3, 4] and run.snapshot_steps == [0, 2, 4]


def test_a_crash_during_a_resume_leaves_a_run_a_second_resume_finishes(cfg, tmp_path):
    out = tmp_path / "run.h5"
    train_run(cfg, out, instruments=[], stop_at=2)
    _crash(tmp_path, cfg, ("discrepancy.runfile.recorder", "Recorder.log_step", 1, True), resume=True)
    summary = train_run(cfg, out, instruments=[], resume=True)
    assert summary.status == "finished"
    with open_run(out) as run:
        assert list(run.series().index) == [1, 2, 3, 4] and run.snapshot_steps == [0, 2, 4]
