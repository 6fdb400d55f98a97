"""Closed-loop control: each controller against a toy system or a scripted stream, its state across a resume, and
bad settings as one line before training."""

from __future__ import annotations


import numpy as np
import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers.config import ControlConfig
from discrepancy.trainers.control import BETA_DOWN, BETA_UP, LR_DOWN, LR_UP, TEMP_DOWN, TEMP_UP, Controller
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
