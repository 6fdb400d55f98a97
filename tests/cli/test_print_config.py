"""``discrepancy train --print-config``: every --set key with its value and help, as TOML a recipe can hold."""

from __future__ import annotations

from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides, field_help, load_toml
from discrepancy.trainers.config import TrainConfig


def test_print_config_lists_every_key_and_loads_back_as_the_same_config(tmp_path):
    result = CliRunner().invoke(app, ["train", "--print-config", "--set", "grpo.beta=0.02", "--steps", "7",
                                      "--out", str(tmp_path / "run.h5")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run.h5").exists()  # printing trains nothing
    text = result.output
    for key, help_text in field_help(TrainConfig).items():
        name = key.rsplit(".", 1)[1]
        assert f"{help_text}" in text and name in text, key
    path = tmp_path / "printed.toml"
    path.write_text(text)
    assert load_toml(TrainConfig, path) == apply_overrides(TrainConfig(), ["grpo.beta=0.02", "run.steps=7"])


def test_gsm8k_on_the_embedded_tiny_model_warns_before_training():
    import warnings

    import pytest

    from discrepancy.trainers.setup import prepare

    cfg = apply_overrides(TrainConfig(), ['task.name="gsm8k"', "task.num_examples=20"])
    with pytest.warns(RuntimeWarning, match="will not learn GSM8K"):
        prepare(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(TrainConfig())  # the embedded arithmetic recipe: no warning


def test_print_config_with_a_model_of_ones_own_marks_the_tiny_model_keys(tmp_path):
    result = CliRunner().invoke(app, ["train", "--print-config", "--model", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split("=")[0].strip("# ").strip(): line for line in result.output.splitlines() if "=" in line}
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        assert lines[key].startswith("# ") and "does not apply" in lines[key], lines[key]
    assert not lines["rank"].startswith("#")  # the adapter's settings do apply
    assert "sft.weights" not in result.output and 'weights = "auto"' in result.output
