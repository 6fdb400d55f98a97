"""The strict config loader: Python, TOML and --set overrides fill the same dataclass; typos are errors."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from discrepancy.config import apply_overrides, config_file, field_help, from_dict, load_toml, to_dict, to_toml
from discrepancy.errors import ConfigError


@dataclass
class Inner:
    beta: float = field(default=0.04, metadata={"help": "KL weight"})
    loss_type: Literal["grpo", "dapo"] = field(default="grpo", metadata={"help": "aggregation"})
    targets: list[str] = field(default_factory=lambda: ["q_proj"], metadata={"help": "LoRA targets"})


@dataclass
class Outer:
    seed: int = field(default=0, metadata={"help": "random seed"})
    model: Path | None = field(default=None, metadata={"help": "local model dir"})
    name: str = field(default='a "quoted" name\\x', metadata={"help": "run name"})
    inner: Inner = field(default_factory=Inner)


def test_three_ways_give_the_same_config(tmp_path):
    in_python = Outer(seed=3, inner=Inner(beta=0.1, targets=["a", "b"]))
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[inner]\nbeta = 0.1\ntargets = ['a', 'b']\n")
    from_file = load_toml(Outer, path)
    from_flags = apply_overrides(Outer(), ["seed=3", "inner.beta=0.1", "inner.targets=['a','b']"])
    assert in_python == from_file == from_flags


def test_toml_round_trip():
    cfg = Outer(seed=7, model=Path("/m"), inner=Inner(beta=1, loss_type="dapo"))
    text = to_toml(cfg)
    back = from_dict(Outer, tomllib.loads(text))
    assert back == cfg
    assert to_dict(cfg)["model"] == "/m" and isinstance(back.inner.beta, float)  # int in TOML → float field


@pytest.mark.parametrize("override,message", [
    ("inner.bta=1", "unknown config key 'inner.bta' (did you mean 'inner.beta'?)"),
    ("sed=1", "did you mean 'seed'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("inner.loss_type=ppo", "must be one of 'grpo', 'dapo'"),
    ("seed=1.5", "'seed' must be int"),
    ("seed", "must look like key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Outer(), [override])
    assert message in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_toml(Outer, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(Outer, bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[inner]\nbetta = 1\n")
    with pytest.raises(ConfigError, match=r"typo.toml: unknown config key 'inner.betta'"):
        load_toml(Outer, typo)


def test_errors_in_a_config_files_scope_start_with_its_path_once_and_keep_their_class():
    class Later(ConfigError):  # a check made after reading, e.g. one that needs the task
        pass

    with pytest.raises(Later, match=r"^F\.toml: config key 'seed' is bad$"):
        with config_file("F.toml"):
            raise Later("config key 'seed' is bad")
    with pytest.raises(ConfigError, match=r"^F\.toml: unknown config key 'sed'"):  # load_toml named it already
        with config_file("F.toml", " with --set seed"):
            with config_file("F.toml"):
                raise ConfigError("unknown config key 'sed'")
    with pytest.raises(ConfigError, match=r"^config key"):  # no file: unchanged
        with config_file(None):
            raise ConfigError("config key 'seed' is bad")
    with pytest.raises(ValueError, match=r"^other$"):  # not a config error: unchanged
        with config_file("F.toml"):
            raise ValueError("other")


def test_help_for_every_field():
    assert field_help(Outer) == {"seed": "random seed", "model": "local model dir", "name": "run name",
                                 "inner.beta": "KL weight", "inner.loss_type": "aggregation",
                                 "inner.targets": "LoRA targets"}


def test_an_entry_of_a_list_of_tables_is_set_by_its_number():
    """``--set curriculum.phases[0].end_when=...``: the notation the config's own errors use; an entry that does
    not exist, or the list named without a number, is one clear error."""
    from discrepancy.trainers.config import TrainConfig

    cfg = load_toml(TrainConfig, Path(__file__).parents[1] / "trainers" / "deepsynapse.toml")
    got = apply_overrides(cfg, ["curriculum.phases[1].max_steps=7",
                                "curriculum.phases[0].end_when=reward_format >= 0.5 over 5"])
    assert got.curriculum.phases[1].max_steps == 7 and got.curriculum.phases[0].end_when.startswith("reward_format")
    assert isinstance(got, TrainConfig) and cfg.curriculum.phases[1].max_steps != 7  # a copy
    with pytest.raises(ConfigError, match=r"has 3 phases \(numbered from 0\)"):
        apply_overrides(cfg, ["curriculum.phases[3].max_steps=1"])
    with pytest.raises(ConfigError, match=r"set by its number, e.g. curriculum.phases\[0\]"):
        apply_overrides(cfg, ["curriculum.phases.max_steps=1"])
