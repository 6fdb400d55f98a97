"""Closed-loop control: each controller against a toy system or a scripted stream, its state across a resume, and
bad settings as one line before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides, from_dict
from discrepancy.errors import ConfigError
from discrepancy.instrumentation.grad_noise import SERIES as NOISE_SERIES
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.runfile import open_run
from discrepancy.trainers.config import ControlConfig
from discrepancy.trainers.control import (
    BATCH_DOWN, BATCH_UP, BETA_DOWN, BETA_UP, LR_DOWN, LR_UP, TEMP_DOWN, TEMP_UP, BatchControlConfig, ControlState,
    Controller,
)
from discrepancy.trainers import recipe
from discrepancy.trainers.run import train_run


def test_adaptive_beta_drives_a_kl_process_to_its_target() -> None:
    """Toy policy whose KL answers the penalty as KL = a/β (a stiffer penalty, a smaller drift), with 10 % noise:
    the fixed point of β ← β·(1 + e/H) is KL = target, i.e. β* = a/target."""
    rng = np.random.default_rng(0)
    a, target, beta0 = 0.05, 0.2, 0.01
    ctl = Controller(ControlConfig(kl_target=target, kl_horizon=10, beta_max_ratio=100.0), beta0)
    kls = []
    for _ in range(400):
        kl = a / (beta0 * ctl.state.beta_scale) * (1 + 0.1 * rng.normal())
        kls.append(kl)
        ctl.observe({"kl": kl})
    assert beta0 * ctl.state.beta_scale == pytest.approx(a / target, rel=0.1)  # β* = 0.25
    assert np.mean(kls[-100:]) == pytest.approx(target, rel=0.05)
    assert kls[0] > 10 * target  # it started far off


def test_beta_moves_by_the_clipped_error_and_stays_in_bounds() -> None:
    ctl = Controller(ControlConfig(kl_target=0.1, kl_horizon=10, beta_max_ratio=1.5), 0.01)
    # the error is clipped at 0.2; a KL above twice the target also lowers the temperature
    assert ctl.observe({"kl": 1.0}) == BETA_UP | TEMP_DOWN and ctl.state.beta_scale == pytest.approx(1.02)
    assert ctl.observe({"kl": 0.09}) == BETA_DOWN and ctl.state.beta_scale == pytest.approx(1.02 * 0.99)  # error −0.1, horizon 10
    for _ in range(100):
        ctl.observe({"kl": 5.0})
    assert ctl.state.beta_scale == 1.5 and ctl.observe({"kl": float("nan")}) == 0


def test_rho_controller_follows_the_trust_region_rule_on_a_scripted_stream() -> None:
    ctl = Controller(ControlConfig(rho_control=True, rho_patience=3, lr_scale_max=2.0), 0.0)
    nan = float("nan")
    actions = [ctl.observe({"rho": r}) for r in [0.1, 0.2, nan, 0.1, 0.5, 0.1, 0.1, 0.1]]
    # three ρ < ¼ in a row (a NaN neither counts nor breaks the streak) halve the lr; 0.5 breaks the next streak
    assert actions == [0, 0, 0, LR_DOWN, 0, 0, 0, LR_DOWN] and ctl.state.lr_scale == 0.25
    actions = [ctl.observe({"rho": r}) for r in [1.0] * 9]
    assert actions == [0, 0, LR_UP] * 3 and ctl.state.lr_scale == pytest.approx(0.25 * 1.25 ** 3)
    for _ in range(60):
        ctl.observe({"rho": 1.0})
    assert ctl.state.lr_scale == 2.0  # bounded


def test_temperature_rises_on_entropy_collapse_and_falls_on_kl_overshoot() -> None:
    ctl = Controller(ControlConfig(kl_target=0.1, entropy_floor=0.3, temperature_gain=0.1,
                                   temperature_max_ratio=1.2, temperature_min_ratio=0.9), 0.01)
    assert ctl.observe({"entropy": 0.1, "kl": 0.1}) & TEMP_UP and ctl.state.temperature_scale == pytest.approx(1.1)
    ctl.observe({"entropy": 0.1, "kl": 0.1})
    assert ctl.state.temperature_scale == 1.2  # bounded
    assert ctl.observe({"entropy": 1.0, "kl": 0.3}) & TEMP_DOWN
    assert ctl.observe({"entropy": 1.0, "kl": 0.1}) & (TEMP_UP | TEMP_DOWN) == 0  # in range: held


def test_controllers_act_in_a_run_record_every_decision_and_resume_exactly(fast_train_config, tmp_path) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "run.snapshot_every=3", "grpo.beta=0.05",
                                              "control.kl_target=0.0001", "control.rho_control=true",
                                              "control.rho_patience=1", "control.entropy_floor=5.0"])
    train_run(cfg, tmp_path / "full.h5")
    train_run(cfg, tmp_path / "part.h5", stop_at=3)
    train_run(cfg, tmp_path / "part.h5", resume=True)
    cols = ["ctl_beta_scale", "ctl_lr_scale", "ctl_temperature_scale", "ctl_action", "beta", "temperature", "lr"]
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "part.h5") as b:
        full, part = a.series()[cols], b.series()[cols]
        a_kl, a_rho = a.series()["kl"], a.series()["rho"]
    np.testing.assert_allclose(part.to_numpy(), full.to_numpy(), rtol=1e-6)
    # This 6-step tiny run never moves (tied rewards: KL 0, ρ NaN), which makes the expected decisions exact:
    assert (a_kl == 0).all() and a_rho.isna().all()
    np.testing.assert_allclose(full["ctl_beta_scale"], 0.98 ** np.arange(6))  # KL below target: β × (1 − 0.2/10)
    np.testing.assert_allclose(full["ctl_temperature_scale"], 1.05 ** np.arange(6))  # entropy below 5 nats: T up
    assert (full["ctl_lr_scale"] == 1.0).all()  # ρ is NaN: the trust-region controller never acts
    np.testing.assert_allclose(full["beta"], 0.05 * full["ctl_beta_scale"])  # applied = multiplier × schedule
    assert all(int(x) == BETA_DOWN | TEMP_UP for x in full["ctl_action"])


def test_off_by_default_and_nothing_recorded(fast_train_config, tmp_path) -> None:
    train_run(apply_overrides(fast_train_config, ["run.steps=2"]), tmp_path / "r.h5", instruments=[])
    with open_run(tmp_path / "r.h5") as run:
        assert not any(name.startswith("ctl_") for name in run.schema.series)


@pytest.mark.parametrize("setting", ["control.kl_target=-0.1", "control.rho_patience=0", "control.lr_scale_max=0.5",
                                     "control.temperature_gain=1.5", "control.kl_horizon=0"])
def test_bad_controller_settings_are_one_line_before_training(setting: str, tmp_path) -> None:
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r.h5"), "--set", setting])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert setting.split("=")[0] in res.output and not (tmp_path / "r.h5").exists()


# ---- batch from the noise scale ---------------------------------------------------------------------------------


def _with_batch(batch: BatchControlConfig) -> ControlConfig:
    """A control config whose batch controller is ``batch`` (``ControlConfig.batch``; set as an attribute on a
    config that predates the section)."""
    cfg = ControlConfig()
    cfg.batch = batch
    return cfg


def test_batch_grows_exactly_when_b_simple_exceeds_the_batch_on_a_scripted_stream() -> None:
    """8 prompt groups, factor 2, budget 4: the multiplier doubles exactly at the steps where B_simple is above the
    groups of that step (8, then 16, then 32), stops at the budget, halves below batch/2, never below 1, and a NaN,
    a missing or a non-positive B_simple changes nothing."""
    ctl = Controller(_with_batch(BatchControlConfig(enabled=True, factor=2.0, max_scale=4.0)), 0.0, num_prompts=8)
    nan = float("nan")
    stream = [5.0, 8.0, 8.5, nan, -3.0, 16.0, 40.0, 1e6, 20.0, 15.9, 7.9, 3.0, 3.0, 9.0]
    expected_scale, actions = [], []
    scale = 1.0
    for b in stream:  # the closed form, written out: batch = 8·scale; grow when b > batch, shrink when b < batch/2
        batch = 8 * scale
        act = 0
        if math.isfinite(b) and b > 0 and b > batch and scale < 4:
            scale, act = min(4.0, scale * 2), BATCH_UP
        elif math.isfinite(b) and b > 0 and b < batch / 2 and scale > 1:
            scale, act = max(1.0, scale / 2), BATCH_DOWN
        expected_scale.append(scale)
        actions.append(act)
    got_scale, got_actions = [], []
    for b in stream:
        assert ctl.applied()["ctl_batch_scale"] == ctl.state.batch_scale
        got_actions.append(ctl.observe({"b_simple_ewma": b}))
        got_scale.append(ctl.state.batch_scale)
    assert got_scale == expected_scale and got_actions == actions
    # spelled out, so the closed form above cannot drift with the code: up at 8.5, 16.5 > 16 only at 40, then capped
    assert got_scale[:8] == [1, 1, 2, 2, 2, 2, 4, 4] and max(got_scale) == 4.0 and min(got_scale) >= 1.0
    assert got_actions[3] == got_actions[4] == 0  # NaN and a negative estimate: no decision
    assert ctl.observe({}) == 0 and ctl.batch_prompts() == round(8 * ctl.state.batch_scale)
    assert "prompt groups" in NOISE_SERIES["b_simple_ewma"]  # the series steered by, in the batch's unit


def test_batch_reads_the_recorded_batch_of_the_step() -> None:
    """When the loop records the prompt groups it drew (``num_prompts``), that is the batch compared."""
    ctl = Controller(_with_batch(BatchControlConfig(enabled=True, factor=1.5, max_scale=3.0)), 0.0, num_prompts=4)
    assert ctl.observe({"b_simple_ewma": 5.0, "num_prompts": 6.0}) == 0  # 5 < 6 although 5 > 4 · 1
    assert ctl.observe({"b_simple_ewma": 7.0, "num_prompts": 6.0}) == BATCH_UP and ctl.state.batch_scale == 1.5
    assert ctl.batch_prompts() == 6


def test_batch_controller_off_changes_nothing_and_resumes_from_its_state() -> None:
    off = Controller(ControlConfig(), 0.0, num_prompts=8)
    assert not off.active and off.observe({"b_simple_ewma": 1e9}) == 0 and off.state.batch_scale == 1.0
    on = Controller(_with_batch(BatchControlConfig(enabled=True)), 0.0, num_prompts=2)
    on.observe({"b_simple_ewma": 3.0})
    resumed = Controller(_with_batch(BatchControlConfig(enabled=True)), 0.0, num_prompts=2,
                         state=ControlState.from_dict(on.state.to_dict()))
    assert on.active and resumed.state == on.state and resumed.state.batch_scale == 2.0
    for b in (5.0, 9.0, 1.0):
        assert resumed.observe({"b_simple_ewma": b}) == on.observe({"b_simple_ewma": b})
    assert resumed.state == on.state


@pytest.mark.parametrize("settings", [{"factor": -2.0}, {"factor": 1.0}, {"max_scale": 0.5},
                                      {"max_scale": float("inf")}])
def test_bad_batch_settings_are_one_line(settings: dict) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(BatchControlConfig, settings)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and f"control.batch.{next(iter(settings))}" in message


@pytest.mark.skipif(not hasattr(ControlConfig(), "batch"), reason="ControlConfig.batch not attached yet")
def test_bad_batch_settings_are_one_line_before_training(tmp_path) -> None:
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r.h5"), "--set", "control.batch.max_scale=0.5"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "control.batch.max_scale" in res.output and not (tmp_path / "r.h5").exists()


class _ScriptedNoise(Instrument):
    """B_simple (smoothed) as a script gives it, step by step: the loop's side of the batch controller, exactly."""

    def __init__(self, script: list[float]) -> None:
        self.script = script

    def series(self) -> dict[str, str]:
        return {"b_simple_ewma": "scripted B_simple"}

    def on_before_optimizer(self, ctx) -> dict[str, float]:
        return {"b_simple_ewma": self.script[ctx.step - 1]}


# the loop applies the multiplier once a module of the step reads it (the controller only decides)
_LOOP_APPLIES_BATCH = hasattr(ControlConfig(), "batch") and any(
    "ctl_batch_scale" in f.read_text(encoding="utf-8") for f in Path(recipe.__file__).parent.glob("*.py")
    if f.name != "control.py")


@pytest.mark.skipif(not _LOOP_APPLIES_BATCH, reason="the loop does not apply ctl_batch_scale yet")
def test_the_loop_draws_the_batch_the_controller_decides(fast_train_config, tmp_path) -> None:
    """2 prompt groups, factor 2, budget 4, B_simple scripted 3, NaN, 5, 1, 9, 0.5: grow at 3 > 2, nothing on NaN,
    grow at 5 > 4, shrink at 1 < 8/2, grow at 9 > 4, shrink at 0.5; each decision is the next step's batch."""
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "control.batch.enabled=true"])
    train_run(cfg, tmp_path / "r.h5", instruments=[_ScriptedNoise([3.0, math.nan, 5.0, 1.0, 9.0, 0.5])])
    with open_run(tmp_path / "r.h5") as run:
        s = run.series()
    assert list(s["ctl_batch_scale"]) == [1, 2, 2, 4, 2, 4]
    assert list(s["num_prompts"]) == [2, 4, 4, 8, 4, 8]
    assert [int(a) & (BATCH_UP | BATCH_DOWN) for a in s["ctl_action"]] == [BATCH_UP, 0, BATCH_UP, BATCH_DOWN,
                                                                             BATCH_UP, BATCH_DOWN]
