"""``discrepancy train --config F.toml``: every config error names the file first, in one line, whichever check found
it: reading the file (unknown key, type, range), the checks that need the task (a phase's rule on a series the run
does not record, a difficulty no prompt has, an unknown reward) or the model (a phase's LoRA modules). Errors of
``--set`` values over the file name the file and those keys; without --config nothing is prefixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from discrepancy.cli import app

SMALL = """
[model]
hidden_size = 32
num_heads = 2
intermediate_size = 64

[sft]
steps = 1

[task]
num_examples = 20

[grpo]
num_prompts = 2
group_size = 2
max_completion_length = 4
"""
TWO_PHASES = '\n[[curriculum.phases]]\nname = "a"\nmax_steps = 5\n{rule}\n\n[[curriculum.phases]]\nname = "b"\n'

BAD = {  # file text → what its one error line says after the file's path
    "unknown_key": ("[optim]\nlrr = 0.1\n", "unknown config key 'optim.lrr'"),
    "bad_type": ('[optim]\nlr = "x"\n', "config key 'optim.lr' must be float"),
    "bad_value": ("[optim]\nlr = -1.0\n", "config key 'optim.lr' must be > 0"),
    "rule_grammar": (TWO_PHASES.format(rule='end_when = "reward_format >= over"'), "phases[a].end_when': cannot read"),
    # the checks below ran after the file was read, and their errors did not name it
    "rule_series": (TWO_PHASES.format(rule='end_when = "nonsense >= 1 over 3"'), "records no series nonsense"),
    "difficulty": (TWO_PHASES.format(rule="difficulty = [7, 9]"), "no prompt of the task has a difficulty"),
    "reward": (SMALL + '\n[rewards]\nnames = ["nosuch"]\nweights = [1.0]\n', "unknown reward 'nosuch'"),
    "modules": (SMALL + TWO_PHASES.format(rule='train_modules = ["nosuchmodule"]'), "names no LoRA module"),
}


def _train(tmp_path: Path, *args: str):
    return CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run.h5"), "--steps", "1", *args])


def _error_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("name", list(BAD))
def test_every_config_error_of_a_file_starts_with_its_path(tmp_path: Path, name: str) -> None:
    text, message = BAD[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text if text.startswith(SMALL) else SMALL + text)
    line = _error_line(_train(tmp_path, "--config", str(path)))
    assert line.startswith(f"error: {path}: ") and message in line
    assert line.count(str(path)) == 1  # named once, also where the reading names it itself
    assert not (tmp_path / "run.h5").exists()


def test_set_values_over_a_file_name_the_file_and_the_keys_and_without_a_file_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(SMALL)
    over = _error_line(_train(tmp_path, "--config", str(path), "--set", "grpo.beta=-1"))
    assert over.startswith(f"error: {path} with --set grpo.beta: config key 'grpo.beta' must be ≥ 0")
    alone = _error_line(_train(tmp_path, "--set", "grpo.beta=-1"))
    assert alone.startswith("error: config key 'grpo.beta' must be ≥ 0")
