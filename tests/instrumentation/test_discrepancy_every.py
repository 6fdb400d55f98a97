"""``instruments.discrepancy_every``: the post-step measurements on every n-th step only.

Truth: instruments draw no random numbers, so training is the same whatever the schedule, and a measured step's
values must equal, bit for bit, those of the run that measures every step; the steps between carry NaN."""

from __future__ import annotations


import numpy as np
import pytest

from discrepancy.errors import ConfigError
from discrepancy.instrumentation import InstrumentationConfig

POST_STEP = ("loss_pre", "loss_post", "disc", "dloss_pred", "step_norm", "kl_realised", "entropy_post",
             "ratio_q50", "kl_start", "discrepancy_rows")


def _series(cfg, path, every: int, groups: str):
    from discrepancy.config import apply_overrides
    from discrepancy.runfile import open_run
    from discrepancy.trainers.run import train_run

    cfg = apply_overrides(cfg, ["run.steps=7", "sft.steps=2", "run.snapshot_every=100", "early_warning.enabled=false",
                                f"instruments.discrepancy_every={every}", f'instruments.discrepancy_groups="{groups}"'])
    train_run(cfg, path)
    with open_run(path) as run:
        return run.series()


def test_measured_steps_equal_the_every_step_run_and_the_others_are_nan(fast_train_config, tmp_path) -> None:
    every = _series(fast_train_config, tmp_path / "e1.h5", 1, "all")
    third = _series(fast_train_config, tmp_path / "e3.h5", 3, "all")
    assert third["loss"].tolist() == every["loss"].tolist()  # the schedule does not touch training
    measured = third.index.isin([1, 4, 7])
    for name in POST_STEP:
        assert np.isfinite(third.loc[measured, name]).all(), name
        assert third.loc[measured, name].tolist() == every.loc[measured, name].tolist(), name
        assert third.loc[~measured, name].isna().all(), name
    assert third.loc[~measured, "time_discrepancy"].isna().all()  # the skipped instrument spent nothing
    assert np.isfinite(third["lora_delta_norm_total"]).all()  # instruments that do not read them: every step


def test_the_measured_micro_batch_rotates_over_the_measured_steps(fast_train_config, tmp_path) -> None:
    s = _series(fast_train_config, tmp_path / "m.h5", 2, "micro")
    # steps 1, 3, 5, 7 measured; two micro-batches: each measured equally often, in turn
    assert s["discrepancy_micro"].tolist()[::2] == [0.0, 1.0, 0.0, 1.0]
    assert s["discrepancy_micro"].iloc[1::2].isna().all() and np.isfinite(s["disc"].iloc[::2]).all()


def test_theta_t_is_copied_between_measured_steps_only_for_an_instrument_that_reads_it_there(
        fast_train_config, tmp_path) -> None:
    """The copy of θ_t serves D_t on measured steps; the linearisation check reads it on its own schedule."""
    from discrepancy.instrumentation.registry import build_instruments
    from discrepancy.modeling.tiny import build_tiny_model
    from discrepancy.modeling.tokenizer import build_char_tokenizer

    model = build_tiny_model(build_char_tokenizer())
    provider = build_instruments(InstrumentationConfig(discrepancy_every=4, timing=False), model)[0]
    assert provider.provides and not provider.theta_every_step
    lin = build_instruments(InstrumentationConfig(discrepancy_every=4, linearisation_every=2, timing=False), model)[0]
    assert lin.theta_every_step
    from discrepancy.config import apply_overrides

    cfg = apply_overrides(fast_train_config, ["instruments.linearisation_every=2",  # a reward that moves θ at once
                                              'rewards.names=["instr_models:digit_reward"]', "rewards.weights=[1.0]"])
    s = _series(cfg, tmp_path / "lin.h5", 3, "micro")  # measured 1, 4, 7; linearisation 2, 4, 6
    assert s["lin_error"].notna().tolist() == [t % 2 == 0 for t in range(1, 8)]
    assert s["disc"].notna().tolist() == [(t - 1) % 3 == 0 for t in range(1, 8)]


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_bad_discrepancy_every_is_one_line(value) -> None:
    with pytest.raises(ConfigError, match=r"^config key 'instruments.discrepancy_every' must be a whole number ≥ 1, "
                                          r"got ") as err:
        InstrumentationConfig(discrepancy_every=value)
    assert "\n" not in str(err.value)
