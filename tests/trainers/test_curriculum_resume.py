"""A curriculum run end to end: phases switch as planted, locked LoRA modules stay bit-identical in the run's
snapshots while the others train, and a resumed run continues phase, reward weights, ledger and sampler exactly."""

from __future__ import annotations

import numpy as np

from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers.run import train_run


def digit_share(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """A reward that differs between completions of a random model (so gradients are not zero)."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


PHASES = ('curriculum.phases=[{name="structure", max_steps=2, train_modules=["mlp"], reward_weights={format=1.0}, '
          'locked_rewards=["format"]}, '
          '{name="reasoning", end_when="reward_mean > -10 over 2", temperature=[0.8]}, {name="precision", '
          'locked_rewards=["format"]}]')


def test_curriculum_switches_locks_and_resumes_exactly(fast_train_config, tmp_path) -> None:
    cfg = apply_overrides(fast_train_config, [
        "run.steps=6", "run.snapshot_every=1", "sft.steps=2", "task.max_ops=2",
        'rewards.names=["test_curriculum_resume:digit_share", "format", "length"]', "rewards.weights=[1.0, 0.5, 0.1]",
        PHASES,
        'sampling.mode="learnable"', "sampling.dynamic=true", 'fusion.rule="headroom"', "fusion.window=2"])
    train_run(cfg, tmp_path / "full.h5", instruments=[])
    part = train_run(cfg, tmp_path / "part.h5", instruments=[], stop_at=3)
    assert part.status == "interrupted"
    train_run(cfg, tmp_path / "part.h5", instruments=[], resume=True, trust_run=True)  # its own reward code
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "part.h5") as b:
        full, resumed = a.series(), b.series()
        arrays = [(a.array(n), b.array(n)) for n in ("ledger_sampled", "ledger_solved")]
        snaps = {s: a.snapshot(s) for s in a.snapshot_steps}
        last_a, last_b = a.snapshot(6), b.snapshot(6)
        phases = a.config["curriculum"]["phases"]
        columns = list(a.samples().columns)
    # phase a: max_steps 2 (trigger 1 at step 3); phase b's rule holds on its 2nd step (trigger 2 at step 5)
    assert full["phase"].tolist() == [0, 0, 1, 1, 2, 2] and full["phase_trigger"].tolist() == [0, 0, 1, 0, 2, 0]
    # the length reward beside the completion length: its own column, the old columns unchanged
    assert columns[-4:] == ["length", "test_curriculum_resume:digit_share", "format", "reward_length"]
    assert [p["name"] for p in phases] == ["structure", "reasoning", "precision"] and phases[0]["max_steps"] == 2
    assert (full["temperature"][full["phase"] == 1] == 0.8).all()
    assert (full.loc[[1, 2], "reward_weight_format"] == 1.0).all()  # the phase's weight, locked against fusion
    assert full.loc[3, "reward_weight_format"] != 1.0  # the next phase's base (0.5), adapted by the headroom rule
    cols = [c for c in full.columns if not c.endswith("_time") and not c.startswith("time_")]
    np.testing.assert_array_equal(resumed[cols].to_numpy(), full[cols].to_numpy())  # every series, exactly
    for x, y in arrays:
        np.testing.assert_array_equal(x.to_numpy(), y.to_numpy())
    assert all(np.array_equal(last_a[k], last_b[k]) for k in last_a)
    attention = [k for k in snaps[0] if ".self_attn." in k and "lora_B" in k]
    mlp = [k for k in snaps[0] if ".mlp." in k and "lora_B" in k]
    # locked in phase a (steps 1-2): bit-identical to the start; the MLP adapters moved; unlocked later, they move
    assert all(np.array_equal(snaps[2][k], snaps[0][k]) for k in attention)
    assert any(not np.array_equal(snaps[2][k], snaps[0][k]) for k in mlp)
    assert any(not np.array_equal(snaps[6][k], snaps[2][k]) for k in attention)
