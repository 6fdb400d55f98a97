"""The DeepSynapse recipes: the tiny one passes every check before training; the GSM8K one parses and, without
--model, stops in one line before any file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import load_toml
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.setup import prepare

RECIPES = Path(__file__).resolve().parents[2] / "trainers"


def test_the_tiny_recipe_has_three_phases_and_passes_the_checks_before_training() -> None:
    cfg = load_toml(TrainConfig, RECIPES / "deepsynapse.toml")
    assert [p.name for p in cfg.curriculum.phases] == ["structure", "reasoning", "precision"]
    assert cfg.sampling.dynamic and cfg.sampling.mode == "learnable" and cfg.fusion.rule != "fixed"
    prep = prepare(cfg)  # rewards, phase rules against the recorded series, difficulty ranges against the task
    assert {ex.difficulty for ex in prep.examples} == {1, 2, 3}


def test_the_gsm8k_recipe_parses_and_needs_a_model(tmp_path) -> None:
    cfg = load_toml(TrainConfig, RECIPES / "deepsynapse_gsm8k.toml")
    assert cfg.task.name == "gsm8k" and len(cfg.curriculum.phases) == 3 and cfg.model.require_path
    res = CliRunner().invoke(app, ["train", "--config", str(RECIPES / "deepsynapse_gsm8k.toml"),
                                   "--out", str(tmp_path / "r.h5")])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "--model DIR" in res.output and not (tmp_path / "r.h5").exists()
