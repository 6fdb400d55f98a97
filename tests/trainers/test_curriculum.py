"""Curriculum phases: rules fire at the planted step of a scripted metric stream, phases set their settings, and a
bad phase config is one line before any training or file (Python and the command line)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides, from_dict
from discrepancy.errors import ConfigError
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.curriculum import Curriculum, parse_rule
from discrepancy.trainers.curriculum_config import CurriculumConfig, PhaseConfig


def _phases(*phases: dict) -> CurriculumConfig:
    return from_dict(CurriculumConfig, {"phases": list(phases)})


def _play(cur: Curriculum, stream: dict[str, list[float]]) -> list[tuple[int, int]]:
    """(phase, phase_trigger) recorded at each step while the scripted series ``stream`` plays (steps 1, 2, ...)."""
    rows = []
    for t in range(len(next(iter(stream.values())))):
        row = cur.step_series()
        rows.append((int(row["phase"]), int(row["phase_trigger"])))
        cur.observe({name: values[t] for name, values in stream.items()})
    return rows


def test_rules_fire_at_the_planted_steps_of_a_scripted_stream() -> None:
    """Format jumps from 0.5 to 0.95 at step 15: 'mean ≥ 0.9 over 5' holds first on steps 15-19, so step 20 is
    the first of phase 1 (trigger 2). Correctness then rises 0.05 a step until step 30 and is flat after: any
    10-step window with one rise in it has a least-squares slope ≥ 0.05·4.5/82.5 > 0.001, so 'slope ≤ 0.001 over
    10' holds first on the window 30-39 (phase 1's steps only) and step 40 starts phase 2 (trigger 2). Phase 2's
    max_steps = 5 ends it after step 44 (trigger 1, step 45), and the last phase never ends."""
    cur = Curriculum(_phases(
        {"name": "structure", "end_when": "reward_format >= 0.9 over 5"},
        {"name": "reasoning", "end_when": "slope(reward_correctness) <= 0.001 over 10", "max_steps": 50},
        {"name": "precision", "max_steps": 5}, {"name": "last", "max_steps": 2}))
    steps = np.arange(1, 61)
    stream = {"reward_format": np.where(steps < 15, 0.5, 0.95).tolist(),
              "reward_correctness": np.minimum(0.05 * steps, 0.05 * 30).tolist()}
    rows = _play(cur, stream)
    switches = [(step, phase, trigger) for step, (phase, trigger) in zip(steps, rows) if trigger]
    assert switches == [(20, 1, 2), (40, 2, 2), (45, 3, 1)]
    assert [phase for phase, _ in rows][-1] == 3  # the last phase outlives its max_steps


def test_a_window_counts_only_steps_of_its_own_phase_and_skips_nan() -> None:
    """A rule never holds on what the previous phase measured: phase 1's 3-step window starts empty. NaN values
    are left out: a window of NaN alone does not hold, one finite value in it decides."""
    cur = Curriculum(_phases({"name": "a", "max_steps": 4}, {"name": "b", "end_when": "min(x) > 0.5 over 3"},
                             {"name": "c"}))
    rows = _play(cur, {"x": [1.0, 1.0, 1.0, 1.0, math.nan, math.nan, math.nan, 1.0, 1.0]})
    # phase a's 1.0s are not in phase b's window; (nan, nan, nan) after step 7 is no evidence; (nan, nan, 1.0)
    # after step 8 is: step 9 starts phase c
    assert rows == [(0, 0)] * 4 + [(1, 1), (1, 0), (1, 0), (1, 0), (2, 2)]
    rule = parse_rule("last(x) < 2 over 2 and max(y) >= 3 over 1")
    assert rule.holds({"x": [5.0, 1.0], "y": [3.0]}) and not rule.holds({"x": [1.0], "y": [3.0]})


def test_phase_settings_ranges_and_weights() -> None:
    """A [start, end] temperature runs a cosine over max_steps; a value is constant; unset is the run's."""
    cur = Curriculum(_phases({"name": "a", "max_steps": 3, "temperature": [1.0, 0.5], "beta": [0.02],
                              "difficulty": [1, 2]}, {"name": "b"}))
    temps = []
    for _ in range(3):
        s = cur.settings()
        temps.append(s.temperature)
        assert s.beta == 0.02 and s.difficulty == (1, 2)
        cur.observe({})
    np.testing.assert_allclose(temps, [1.0, 0.75, 0.5])  # cosine: start, midpoint, end
    assert cur.settings().temperature is None and cur.settings().difficulty is None


@pytest.mark.parametrize("setting, message", [
    ('curriculum.phases=[{name="a", reward_weights={nope=1.0}}]', "unknown: nope"),
    ('curriculum.phases=[{name="a", locked_rewards=["nope"]}]', "unknown: nope"),
    ('curriculum.phases=[{name="a", difficulty=[1,2]}, {name="b", difficulty=[2,3]}]', "disjoint from phase a"),
    ('curriculum.phases=[{name="a"}, {name="a"}]', "repeated: a"),
    ('curriculum.phases=[{name="a", end_when="reward_format is high"}]', "stat op number over N"),
    ('curriculum.phases=[{name="a", temperature=[1.0, 0.5]}]', "the range spans max_steps"),
    ('curriculum.phases=[{name="a", difficulty=[3,1]}]', "0 ≤ lo ≤ hi"),
])
def test_bad_phase_configs_are_one_config_error(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=".*") as err:
        apply_overrides(TrainConfig(), [setting])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("setting, message", [
    ('curriculum.phases=[{name="a", end_when="reward_formt >= 0.9 over 5"}]', "no series reward_formt"),
    ('curriculum.phases=[{name="a", difficulty=[4,5]}]', "no prompt of the task has a difficulty in [4, 5]"),
    ('curriculum.phases=[{name="a", train_modules=["attn_nope"]}]', "'attn_nope' names no LoRA module"),
    ('curriculum.phases=[{name="a", reward_weights={nope=1.0}}]', "unknown: nope"),
])
def test_bad_phase_configs_stop_the_command_in_one_line_without_a_run_file(tmp_path, setting, message) -> None:
    """Through ``discrepancy train --config bad.toml``: non-zero exit, one line, no run file nor base."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhidden_size = 32\nnum_heads = 2\nintermediate_size = 64\n[task]\nnum_examples = 20\n")
    res = CliRunner().invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "r.h5"), "--set", setting,
                                   "--set", 'run.device="cpu"', "--set", "sft.steps=1"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r.h5").exists() and not list(tmp_path.glob("r.base*"))


def test_phase_config_fills_from_toml_python_and_set_alike(tmp_path) -> None:
    from discrepancy.config import load_toml, to_toml

    toml = ('[[curriculum.phases]]\nname = "a"\nmax_steps = 3\nend_when = "reward_format >= 0.9 over 2"\n'
            'reward_weights = { format = 1.0 }\n[[curriculum.phases]]\nname = "b"\ntrain_modules = ["mlp"]\n')
    (tmp_path / "c.toml").write_text(toml)
    from_file = load_toml(TrainConfig, tmp_path / "c.toml")
    by_set = apply_overrides(TrainConfig(), ['curriculum.phases=[{name="a", max_steps=3, end_when="reward_format >= '
                                             '0.9 over 2", reward_weights={format=1.0}}, {name="b", '
                                             'train_modules=["mlp"]}]'])
    by_python = TrainConfig(curriculum=CurriculumConfig([PhaseConfig("a", 3, "reward_format >= 0.9 over 2",
                                                                     {"format": 1.0}),
                                                         PhaseConfig("b", train_modules=["mlp"])]))
    assert from_file == by_set == by_python
    assert load_toml.__name__ and from_dict(TrainConfig, __import__("tomllib").loads(to_toml(by_set))) == by_set


def test_a_rule_that_can_never_hold_is_warned_of():
    """A window longer than the phase's max_steps, or a reward past its range: warned before training (the phase
    would always end by its step limit); a reachable rule and the last phase's (ignored) rule are not."""
    from discrepancy.trainers.curriculum import unreachable_rules
    from discrepancy.trainers.curriculum_config import CurriculumConfig, PhaseConfig

    cfg = CurriculumConfig(phases=[
        PhaseConfig(name="a", max_steps=30, end_when="reward_format >= 1.5 over 10"),
        PhaseConfig(name="b", max_steps=30, end_when="reward_correctness >= 0.9 over 50"),
        PhaseConfig(name="c", max_steps=30, end_when="reward_format >= 0.9 over 10 and slope(kl) <= 5 over 5"),
        PhaseConfig(name="d", end_when="reward_format >= 7 over 3")])
    got = unreachable_rules(cfg)
    assert len(got) == 2 and "'a'" in got[0] and "reward_format lies in [0, 1]" in got[0]
    assert "'b'" in got[1] and "window of 50 steps is longer than the phase's max_steps 30" in got[1]
