"""``discrepancy train`` through typer's CliRunner: bad input fails before training, a short run succeeds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import open_run

FAST_SETTINGS = ["--set", "model.hidden_size=32", "--set", "model.num_heads=2", "--set", "model.intermediate_size=64",
                 "--set", "sft.steps=2", "--set", "grpo.num_prompts=2", "--set", "grpo.group_size=2",
                 "--set", "grpo.max_completion_length=4", "--set", "task.num_examples=20",
                 "--set", "run.device=\"cpu\""]
FAST = [*FAST_SETTINGS, "--steps", "2"]


def _run(args: list[str]):
    return CliRunner().invoke(app, ["train", *args])


def _console_script() -> str:
    """The installed ``discrepancy`` command (subprocess tests need a real process: signals, torchrun)."""
    exe = shutil.which("discrepancy", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the discrepancy console script is not installed next to this Python")
    return exe


def _assert_nothing_written(tmp_path):
    assert not (tmp_path / "run.h5").exists() and not (tmp_path / "run.base").exists()


def test_config_typo_fails_before_training(tmp_path):
    result = _run(["--out", str(tmp_path / "run.h5"), "--set", "grpo.bta=0.1"])
    assert result.exit_code == 2
    assert "grpo.bta" in result.output and "did you mean 'grpo.beta'" in result.output
    _assert_nothing_written(tmp_path)


def test_unknown_reward_fails_before_training(tmp_path):
    result = _run(["--out", str(tmp_path / "run.h5"), "--set", "rewards.names=[\"corectness\", \"format\"]"])
    assert result.exit_code == 2 and "unknown reward 'corectness'" in result.output
    _assert_nothing_written(tmp_path)


def test_graphs_sampler_on_the_cpu_fails_before_training(tmp_path):
    result = _run(["--out", str(tmp_path / "run.h5"), *FAST, "--set", "run.sampler=\"graphs\""])
    assert result.exit_code == 1 and "needs the model on a GPU" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    _assert_nothing_written(tmp_path)
    result = _run(["--out", str(tmp_path / "run.h5"), *FAST, "--set", "run.sampler=\"fast\""])
    assert result.exit_code == 2 and "run.sampler" in result.output
    _assert_nothing_written(tmp_path)


def test_model_dir_that_is_not_a_causal_lm(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2, hidden_dim=8).save_pretrained(tmp_path / "enc")
    result = _run(["--out", str(tmp_path / "run.h5"), "--model", str(tmp_path / "enc")])
    assert result.exit_code == 1 and "not a causal language model" in result.output
    result = _run(["--out", str(tmp_path / "run.h5"), "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not found" in result.output
    _assert_nothing_written(tmp_path)


def test_malformed_dataset_line_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2 #### 2"}\n{"question": "oops"\n')
    result = _run(["--out", str(tmp_path / "run.h5"), "--set", "task.name=\"gsm8k\"",
                   "--set", f"task.path=\"{data}\"", "--set", "grpo.num_prompts=1"])
    assert result.exit_code == 1 and f"{data}:2" in result.output
    _assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_short_run_and_resume_through_the_cli(tmp_path):
    out = tmp_path / "run.h5"
    result = _run(["--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert f"run: {out}" in result.stdout and "status: finished after step 2" in result.stdout
    said = next(line for line in result.stderr.splitlines() if line.startswith("model: "))  # what is trained, once
    assert "from the embedded tiny config" in said and "LoRA r" in said and "M trainable; task arithmetic" in said
    again = _run(["--out", str(out), *FAST])
    assert again.exit_code == 1 and "--resume" in again.output  # never overwrite a run silently
    more = _run(["--out", str(out), "--resume", "--steps", "3"])
    assert more.exit_code == 0, more.output
    assert "status: finished after step 3" in more.stdout and "resumed: no cold start" in more.stderr


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "auto"])  # auto: the README's command on a machine without a GPU
def test_two_processes_under_torchrun_write_one_run(tmp_path, device):
    # Two CPU ranks (gloo): each samples its own prompts, gradients are averaged, only rank 0 records.
    out = tmp_path / "run.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", _console_script(),
           "train", "--out", str(out), *FAST, "--set", f'run.device="{device}"']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("status: finished after step 2") == 1
    with open_run(out) as run:
        assert run.status == "finished" and run.num_steps == 2 and run.snapshot_steps == [0, 2]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_then_resume_continues(tmp_path, sig):
    # A job stopped politely (SIGTERM from a scheduler, or one Ctrl-C) finishes the step in progress, checkpoints
    # it, leaves an "interrupted" run and exits with 128 + the signal; --resume continues with no step lost.
    out = tmp_path / "run.h5"
    cmd = [_console_script(), "train", "--out", str(out), *FAST_SETTINGS, "--steps", "500",
           "--set", "run.checkpoint_every=2",
           "--set", "run.flush_every=1", "--set", "run.threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run.ckpt.pt").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig and "status: interrupted" in stdout, stderr[-2000:]
    assert "stopping after the step in progress" in stderr and "Traceback" not in stderr
    with open_run(out) as run:
        assert run.status == "interrupted"
        stopped_at = run.num_steps
    assert 2 <= stopped_at < 500
    assert torch.load(tmp_path / "run.ckpt.pt", weights_only=True)["step"] == stopped_at  # the very last step
    more = _run(["--out", str(out), "--resume", "--steps", str(stopped_at + 2)])
    assert more.exit_code == 0, more.output
    with open_run(out) as run:
        assert run.status == "finished" and list(run.series().index) == list(range(1, stopped_at + 3))


def _assert_one_error_line(result, code: int, message: str) -> None:
    """Exit ``code``, exactly one ``error:`` line holding ``message``, no traceback (CliRunner mixes the streams)."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # the guard's exit, not a crash
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--set", "model.num_heads=0"], "config key 'model.num_heads' must be a positive multiple of 2"),
    (["--set", "model.num_heads=-4"], "'model.num_heads'"),
    (["--set", "model.intermediate_size=0"], "'model.intermediate_size' must be ≥ 1"),
    (["--set", "model.hidden_size=34"], "'model.hidden_size' must be a positive multiple of 2 × model.num_heads"),
    (["--seed", "-1"], "'run.seed' must be in [0, 4294967295], got -1"),
    (["--seed", "99999999999"], "'run.seed' must be in [0, 4294967295]"),
    (["--set", 'rewards.names=["correctness","correctness"]'], "repeated: correctness"),
    (["--set", "run.steps=true"], "'run.steps' must be a number (int), got true"),
])
def test_bad_config_values_fail_in_one_line_before_training(tmp_path, args, message):
    result = _run(["--out", str(tmp_path / "run.h5"), *FAST, *args])
    _assert_one_error_line(result, 2, message)
    _assert_nothing_written(tmp_path)


def test_damaged_model_weights_fail_in_one_line(tmp_path, tiny_model, tiny_tokenizer):
    from discrepancy.modeling import save_local_model

    folder = save_local_model(tiny_model, tiny_tokenizer, tmp_path / "model")
    weights = folder / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    result = _run(["--out", str(tmp_path / "run.h5"), *FAST, "--model", str(folder)])
    _assert_one_error_line(result, 1, f"{folder}: could not load the model weights (SafetensorError")
    _assert_nothing_written(tmp_path)


def test_dataset_that_is_not_utf8_fails_in_one_line(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_bytes(b"\xff\xfe\n")
    result = _run(["--out", str(tmp_path / "run.h5"), *FAST, "--set", "task.name=\"gsm8k\"",
                   "--set", f"task.path=\"{data}\""])
    _assert_one_error_line(result, 1, f"{data}:1: not UTF-8 text")
    _assert_nothing_written(tmp_path)


def test_reward_that_raises_fails_in_one_line(tmp_path):
    # len(prompts, completions, answers) is a TypeError on the first scoring: `prepare` tries every reward on gold
    # solutions, so the user sees one line naming the reward before anything is trained or written.
    out = tmp_path / "run.h5"
    result = _run(["--out", str(out), *FAST, "--set", 'rewards.names=["builtins:len","format"]'])
    _assert_one_error_line(result, 1, "reward 'builtins:len' raised TypeError: len() takes exactly one argument")
    _assert_nothing_written(tmp_path)  # each reward is tried on gold solutions before the cold start


@pytest.mark.parametrize("quiet", [False, True])
def test_the_command_line_silences_library_progress_bars(tmp_path, tiny_model, tiny_tokenizer, quiet):
    """Every snapshot a probe or llc loads printed a "Loading weights" bar; the command line turns them off."""
    from discrepancy.modeling import save_local_model

    folder = save_local_model(tiny_model, tiny_tokenizer, tmp_path / "model")
    code = ("from discrepancy.cli import quiet_libraries; quiet_libraries()\n" if quiet else "") + (
        f"from discrepancy.modeling import load_local_model; load_local_model({str(folder)!r})")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert ("Loading weights" in proc.stderr) is not quiet


def test_a_missing_config_file_or_run_is_one_line_not_a_usage_box(tmp_path) -> None:
    for args, code in ((["train", "--config", str(tmp_path / "nope.toml")], 2),
                       (["probe", str(tmp_path / "nope.h5")], 1), (["watch", str(tmp_path / "nope.h5")], 3)):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0], (args, result.output)


def test_curriculum_phase_switches_are_announced_while_training():
    """The first step of each new phase gets one line with the phase's name and why the previous one ended."""
    from discrepancy.cli.train import _phase_line

    names = ["structure", "reasoning"]
    assert _phase_line(4, {"phase": 1.0, "phase_trigger": 1.0}, names) == (
        "curriculum: step 4 starts phase 'reasoning' (the previous phase ended: its max_steps ran out)")
    assert "its end_when rule held" in _phase_line(9, {"phase": 1.0, "phase_trigger": 2.0}, names)
    assert _phase_line(5, {"phase": 1.0, "phase_trigger": 0.0}, names) is None
    assert _phase_line(5, {"reward_mean": 0.5}, names) is None
