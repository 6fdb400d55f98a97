"""Training histories with planted jumps, written as each tool writes them: a discrepancy run file (Recorder), a W&B
history CSV, an HF ``trainer_state.json``, TensorBoard events from PyTorch's ``SummaryWriter`` (what TRL and HF
Trainer use). Two generators unlike each other: Gaussian steps on flat levels, and binomial rewards with a decaying,
Laplace-noised loss. And ``write_full_run``: a small run with every kind of record, for the exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.runfile import ArraySpec, Recorder, RunSchema

N = 400
JUMP = 250  # every generator: loss, reward and kl jump here (a phase transition across three families)
EVAL_EVERY = 50  # eval_loss exists at these steps only, as HF Trainer's evaluation rows


def gaussian_steps(seed: int) -> pd.DataFrame:
    """Flat levels with Gaussian noise; reward also steps alone at 120."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, N + 1)
    after = t >= JUMP
    return pd.DataFrame({
        "loss": 0.8 - 0.4 * after + 0.02 * rng.standard_normal(N),
        "reward": 0.2 + 0.15 * (t >= 120) + 0.4 * after + 0.03 * rng.standard_normal(N),
        "kl": 0.001 + 0.004 * after + 0.0003 * rng.standard_normal(N),
        "learning_rate": np.linspace(1e-5, 0, N),
        "epoch": t / N,
        "eval_loss": np.where(t % EVAL_EVERY == 0, 0.9 - 0.3 * after + 0.01 * rng.standard_normal(N), np.nan),
    }, index=pd.Index(t, name="step"))


def binomial_decay(seed: int) -> pd.DataFrame:
    """Rewards as fractions of 64 draws, a log-decaying loss with Laplace noise, both moving at JUMP."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, N + 1)
    after = t >= JUMP
    return pd.DataFrame({
        "loss": 1.0 / np.log(t + 2.0) - 0.3 * after + rng.laplace(0, 0.01, N),
        "reward": rng.binomial(64, np.where(after, 0.75, 0.3)) / 64,
        "kl": np.abs(0.002 + 0.006 * after + rng.laplace(0, 0.0004, N)),
        "learning_rate": np.full(N, 1e-5),
        "epoch": t / N,
        "eval_loss": np.where(t % EVAL_EVERY == 0, 1.0 - 0.3 * after, np.nan),
    }, index=pd.Index(t, name="step"))


def write_run(frame: pd.DataFrame, path: Path) -> Path:
    """The equivalent discrepancy run file: the same series at the same steps (NaN where a log has no value)."""
    with Recorder.create(path, RunSchema(series={c: f"the {c}" for c in frame.columns})) as rec:
        for step, row in zip(frame.index, frame.to_numpy()):
            rec.log_step(int(step), {c: float(v) for c, v in zip(frame.columns, row) if np.isfinite(v)})
        rec.finish()
    return path


def write_wandb_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A W&B history export: ``_step``, ``_runtime``, ``_timestamp``, a media column, and the eval value on a row
    of its own at the same step (W&B logs evaluation as a separate call)."""
    train = frame.drop(columns="eval_loss").reset_index().rename(columns={"step": "_step"})
    train["_runtime"] = np.arange(len(train)) * 1.7
    train["_timestamp"] = 1.7e9 + train["_runtime"]
    train["completions"] = '{"_type": "table-file", "path": "media/table.json"}'
    evals = frame["eval_loss"].dropna().rename_axis("_step").reset_index()
    pd.concat([train, evals], ignore_index=True).to_csv(path, index=False)
    return path


def write_trainer_state(frame: pd.DataFrame, path: Path) -> Path:
    """An HF Trainer / TRL ``trainer_state.json``: one log row per step, eval rows apart, the final summary row."""
    history = []
    for step, row in frame.iterrows():
        history.append({"step": int(step), **{k: float(v) for k, v in row.items() if k != "eval_loss"}})
        if np.isfinite(row["eval_loss"]):
            history.append({"step": int(step), "epoch": float(row["epoch"]), "eval_loss": float(row["eval_loss"])})
    history.append({"step": N, "epoch": 1.0, "train_runtime": 812.5, "train_loss": 0.55, "total_flos": 0.0,
                    "train_samples_per_second": 3.1, "train_steps_per_second": 0.5})
    state = {"global_step": N, "max_steps": N, "logging_steps": 1, "log_history": history,
             "best_metric": None, "is_world_process_zero": True}
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    return path


def write_torch_events(frame: pd.DataFrame, logdir: Path) -> Path:
    """TensorBoard events as TRL writes them (PyTorch's SummaryWriter, tags ``train/<name>``)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(logdir)) as writer:
        for step, row in frame.iterrows():
            for k, v in row.items():
                if np.isfinite(v):
                    writer.add_scalar(f"train/{k}", float(v), int(step))
    return logdir


STEPS = 30
SNAP_EVERY = 10


def write_full_run(path: Path) -> Path:
    """STEPS steps: two series (one with NaN gaps), a two-label array, two samples a step (one with ``|`` and a
    line break), a 3×2 snapshot filled with step + 1 every SNAP_EVERY steps."""
    rng = np.random.default_rng(11)
    schema = RunSchema(series={"reward_mean": "mean total reward", "kl_realised": "realised KL"},
                       arrays={"lora_norm": ArraySpec(columns=["q_proj.0", "v_proj.0"],
                                                      description="‖(α/r)BA‖_F at θ_{t+1}")},
                       sample_fields=["correctness"], snapshot_tensors={"lora_A": (3, 2)})
    with Recorder.create(path, schema) as rec:
        for step in range(STEPS):
            kl = np.nan if step % 7 == 3 else float(rng.uniform())
            rec.log_step(step, {"reward_mean": float(rng.normal()) * 1e3, "kl_realised": kl},
                         arrays={"lora_norm": rng.uniform(size=2)})
            rec.log_samples(step, prompt_ids=["p1", "p2"], prompts=["1+2", "3+4"],
                            completions=[f"a|b\nstep {step}", "<answer>7</answer>"], fields={"correctness": [0.0, 1.0]})
            if step % SNAP_EVERY == 0:
                rec.log_snapshot(step, {"lora_A": np.full((3, 2), step + 1.0)})
        rec.finish()
    return path


def accumulator(folder: Path):  # noqa: ANN201 - tensorboard's EventAccumulator
    """TensorBoard's classic reader over ``folder``, every event kept: the independent reader of the export tests."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def scalar_events(acc, tag: str) -> list[tuple[int, float]]:  # noqa: ANN001 - an EventAccumulator
    """(step, value) of a scalar tag as the classic reader keeps it: the scalar plugin's float32 tensors."""
    from tensorboard.util import tensor_util

    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def scalar_tags(acc) -> list[str]:  # noqa: ANN001 - an EventAccumulator
    """The tags whose metadata names the scalar plugin."""
    return sorted(t for t in acc.Tags()["tensors"] if acc.SummaryMetadata(t).plugin_data.plugin_name == "scalars")
