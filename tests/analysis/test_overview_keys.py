"""The key series a summary leads with (analysis.overview): a supervised loss beside a reward, and the plateau a key
series' largest change ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.analysis.overview import key_names, key_stalls
from discrepancy.analysis.pipeline import analyze


def _wandb_csv(path: Path, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A W&B history as HF Trainer's W&B callback names it: loss on a plateau at 1.6, then 0.9 from step 250; a
    reward stepping there too; an eval loss every 50 steps."""
    rng = np.random.default_rng(0)
    t = np.arange(1, 401)
    loss = np.where(t < 250, 1.6, 0.9) + 0.03 * rng.standard_normal(t.size)
    cols = {"_step": t, "train/loss": loss, "train/reward": 0.2 + 0.5 * (t >= 250) + 0.03 * rng.standard_normal(t.size),
            "eval/loss": np.where(t % 50 == 0, loss + 0.1, np.nan), **(extra or {})}
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


def test_a_supervised_loss_beside_a_reward_is_a_key_series(tmp_path: Path):
    res = analyze(_wandb_csv(tmp_path / "history.csv"))
    assert {"loss", "eval_loss", "reward"} <= set(res.series.columns)  # W&B's train/ and eval/ read back
    assert key_names(res) == ["reward", "loss", "eval_loss"]
    stalls = key_stalls(res, key_names(res))
    assert stalls["loss"].step == 250 and abs(stalls["loss"].level - 1.6) < 0.02 and stalls["loss"].size < -0.6


def test_a_policy_gradient_runs_loss_is_not_a_key_series(tmp_path: Path):
    """TRL's GRPO log: ``loss`` is the surrogate objective (β·KL on-policy), not what the model learned."""
    kl = 0.01 + 0.001 * np.random.default_rng(1).standard_normal(400)
    res = analyze(_wandb_csv(tmp_path / "grpo.csv", {"train/kl": kl}))
    assert key_names(res) == ["reward", "kl"]
    res = analyze(_wandb_csv(tmp_path / "trl.csv", {"train/clip_ratio/region_mean": np.zeros(400)}))
    assert "loss" not in key_names(res)


def test_the_plateau_a_key_series_largest_change_ends(tmp_path: Path):
    """A loss that falls to 2.0 by step 20, sits there to step 180, drops by 0.8 at 181: the stall is told with its
    level, its steps and the drop (planted, so each number has a truth to meet)."""
    rng = np.random.default_rng(2)
    t = np.arange(1, 301)
    loss = np.where(t < 20, 2.3 - 0.3 * t / 20, np.where(t <= 180, 2.0, 1.2)) + 0.03 * rng.standard_normal(t.size)
    path = tmp_path / "sft.csv"
    pd.DataFrame({"step": t, "loss": loss}).to_csv(path, index=False)
    res = analyze(path)
    s = key_stalls(res, key_names(res))["loss"]
    assert abs(s.level - 2.0) < 0.02 and 14 <= s.first_step <= 24 and s.last_step == 180 and s.step == 181
    assert abs(s.size + 0.8) < 0.03
    assert s.text() == f"loss stalled at {s.level:.3g} over steps {s.first_step}–180, then dropped by " \
        f"{-s.size:.3g} at step 181"
    flat = tmp_path / "flat.csv"  # no stall: a steady decline has no plateau to tell
    pd.DataFrame({"step": t, "loss": 2.0 - 0.003 * t + 0.01 * rng.standard_normal(t.size)}).to_csv(flat, index=False)
    res = analyze(flat)
    assert key_stalls(res, key_names(res)) == {}


def test_a_stall_is_said_only_of_a_loss_reward_or_accuracy_whose_new_level_holds(tmp_path: Path):
    """Planted: a loss and a completion length with the same stall at 2.0 over steps 20–180 and a drop of 0.8 at
    181 that holds (only the loss is a stall: a length's dip is no learning story); and a loss whose drop at 181
    climbs back to 2.0 by step 230 (half of a dip, no stall)."""
    rng = np.random.default_rng(5)
    t = np.arange(1, 301)
    held = np.where(t < 20, 2.3 - 0.3 * t / 20, np.where(t <= 180, 2.0, 1.2))
    back = np.where(t <= 180, held, np.minimum(1.2 + 0.8 * (t - 181) / 50, 2.0))  # back at 2.0 from step 231
    noise = lambda: 0.03 * rng.standard_normal(t.size)  # noqa: E731
    path = tmp_path / "stalls.csv"
    pd.DataFrame({"step": t, "loss": held + noise(), "completion_length_mean": held + noise(),
                  "eval_loss": back + noise()}).to_csv(path, index=False)
    res = analyze(path)
    assert (res.jumps["signal"] == "eval_loss").any() and (res.plateaus["signal"] == "eval_loss").any()  # a drop
    assert (res.jumps["signal"] == "completion_length_mean").any()
    assert set(key_stalls(res, ["loss", "completion_length_mean", "eval_loss"])) == {"loss"}


def test_a_loss_beside_a_reward_that_hovers_around_zero_is_no_key_series(tmp_path: Path):
    """TRL's log with only loss, reward and grad_norm (no KL, no completions/ columns): a loss within ±0.002 that
    changes sign is the policy-gradient surrogate, left out with a note; a positive loss of the same log shape is a
    training loss and stays."""
    import json

    rng = np.random.default_rng(6)
    t = np.arange(1, 201)

    def state(loss: np.ndarray) -> Path:
        rows = [{"step": int(s), "loss": float(v), "reward": float(0.3 + 0.3 * (s > 100) + 0.05 * rng.standard_normal()),
                 "grad_norm": float(0.2 + 0.02 * rng.standard_normal())} for s, v in zip(t, loss)]
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": rows}))
        return folder / "trainer_state.json"

    res = analyze(state(0.001 * rng.standard_normal(t.size)))
    assert key_names(res) == ["reward"]
    assert sum("loss left out of the key series" in n for n in res.notes) == 1
    res = analyze(state(1.5 - 0.002 * t + 0.02 * rng.standard_normal(t.size)))
    assert key_names(res) == ["reward", "loss"] and not any("loss left out" in n for n in res.notes)
    grpo = _wandb_csv(tmp_path / "grpo.csv", {"train/kl": 0.01 + 0.001 * rng.standard_normal(400)})
    assert any(n.startswith("loss left out of the key series: this is a policy-gradient run")
               for n in analyze(grpo).notes)
