"""The trainer config: defaults, recipes, TOML round trip, overrides, and errors before anything runs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from discrepancy.config import apply_overrides, field_help, load_toml, to_toml
from discrepancy.errors import ConfigError
from discrepancy.trainers.config import TrainConfig

RECIPES = Path(__file__).resolve().parents[2] / "trainers"


def test_every_field_has_help():
    helps = field_help(TrainConfig)
    assert len(helps) > 50
    missing = [key for key, text in helps.items() if not text.strip()]
    assert missing == []


def test_tiny_recipe_is_the_embedded_default():
    assert load_toml(TrainConfig, RECIPES / "tiny.toml") == TrainConfig()


def test_gsm8k_recipe_loads():
    cfg = load_toml(TrainConfig, RECIPES / "gsm8k.toml")
    assert cfg.task.name == "gsm8k" and cfg.lora.rank == 16 and cfg.model.path is None


def test_toml_round_trip_and_overrides(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["grpo.beta=0.02", "lora.target_modules=[\"q_proj\"]", "run.seed=7",
                                          "model.path=\"/some/model\""])
    assert cfg.grpo.beta == 0.02 and cfg.lora.target_modules == ["q_proj"] and cfg.run.seed == 7
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    again = load_toml(TrainConfig, path)
    assert again == cfg
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


@pytest.mark.parametrize("override, message", [
    ("grpo.bta=0.1", "did you mean 'grpo.beta'"),
    ("grpo.group_size=1", "grpo.group_size"),
    ("grpo.eps_low=0", "grpo.eps_low"),
    ("grpo.beta=-1", "grpo.beta"),
    ("grpo.min_completion_length=17", "grpo.min_completion_length"),
    ("grpo.loss_type=\"ppo\"", "grpo.loss_type"),
    ("rewards.weights=[1.0]", "rewards.weights"),
    ("optim.lr=0", "optim.lr"),
    ("run.steps=0", "run.steps"),
    ("task.min_ops=3", "task.min_ops"),
    # the tiny model's shape: checked here, not by a ZeroDivisionError or a failure after the cold start
    ("model.num_heads=0", "model.num_heads"),
    ("model.num_heads=-4", "model.num_heads"),
    ("model.num_heads=3", "model.num_heads"),  # the 2 key/value heads must divide the heads
    ("model.hidden_size=36", "model.hidden_size"),  # 36 / 4 heads = 9: odd head size, no rotary embedding
    ("model.hidden_size=0", "model.hidden_size"),
    ("model.intermediate_size=0", "model.intermediate_size"),
    ("run.seed=-1", "run.seed"),
    ("run.seed=4294967296", "run.seed"),
    ("rewards.names=[\"correctness\", \"correctness\"]", "repeated: correctness"),
    # a boolean is not a number, although Python counts True as 1
    ("run.steps=true", "run.steps"),
    ("grpo.beta=false", "grpo.beta"),
    ("rewards.weights=[1.0, true]", "rewards.weights[1]"),
])
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(TrainConfig(), [override])


def test_gsm8k_recipe_prepares_the_shipped_sample():
    from discrepancy.trainers.setup import prepare

    prep = prepare(load_toml(TrainConfig, RECIPES / "gsm8k.toml"))
    assert len(prep.examples) == 200 and [s.name for s in prep.rewards] == ["correctness", "format"]
    assert all(ex.answer.lstrip("-").replace(".", "").isdigit() for ex in prep.examples)


def test_edges_of_the_new_ranges_are_accepted():
    cfg = apply_overrides(TrainConfig(), ["run.seed=4294967295", "model.num_heads=6", "model.hidden_size=48",
                                          "model.intermediate_size=1", "grpo.beta=0"])
    assert cfg.run.seed == 2**32 - 1 and cfg.model.num_heads == 6 and cfg.grpo.beta == 0.0
    assert apply_overrides(TrainConfig(), ["run.seed=0"]).run.seed == 0


def test_bool_for_a_number_in_a_toml_file_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[run]\nsteps = true\n")
    with pytest.raises(ConfigError, match=r"c\.toml: config key 'run\.steps' must be a number \(int\), got true"):
        load_toml(TrainConfig, path)


def test_tiny_kv_heads_matches_the_tiny_model():
    import inspect

    from discrepancy.modeling.tiny import tiny_model_config
    from discrepancy.trainers.config import TINY_KV_HEADS

    assert inspect.signature(tiny_model_config).parameters["num_kv_heads"].default == TINY_KV_HEADS
