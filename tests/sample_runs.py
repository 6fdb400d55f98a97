"""Small run files made with the real Recorder, shared by the analysis, report, runfile and CLI tests.

- ``make_run`` / fixtures ``run_file``, ``short_run``: series with a planted phase transition at step DROP;
- ``make_good_run``: a healthy run with series, samples and snapshots (the file-check and inspect tests), and
  ``damage_snapshot``: a copy of it with one damaged snapshot;
- ``tiny_snapshot_run``: a tiny model's LoRA snapshots and the evaluation pairs as samples (the LLC tests).

A conftest imports the fixtures it needs from here (``from sample_runs import run_file``), so they are defined once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from discrepancy.runfile import Recorder, RunSchema

DROP = 700  # the planted phase transition
PAIRS = [("2+3=", "5"), ("1+4=", "5"), ("3+3=", "6"), ("2+2=", "4")]  # the LLC evaluation set of tiny_snapshot_run
STEPS = (0, 10, 20)  # snapshot steps of tiny_snapshot_run


def make_run(path: Path, n: int, *, finish: bool = True) -> Path:
    """A run whose loss, reward and KL all jump at step DROP (when n > DROP); lr constant; one all-NaN series."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    after = t >= DROP
    series = {
        "loss": 2.0 + 1.5 * np.exp(-t / 40) - 1.0 * after + 0.03 * rng.standard_normal(n),
        "reward_mean": 0.2 + 0.5 * after + 0.03 * rng.standard_normal(n),
        "kl_realised": 0.01 + 0.02 * after + 0.002 * rng.standard_normal(n),
        "completion_length_mean": 40.0 + rng.standard_normal(n),
        "lr": np.full(n, 1e-4),
        "rho": np.full(n, np.nan),
    }
    schema = RunSchema(series={k: f"test series {k}" for k in series})
    rec = Recorder.create(path, schema, config_toml="[train]\nsteps = 1000\n", meta={"base_model": "tiny"}, flush_every=100)
    for i in range(n):
        rec.log_step(i, {k: float(v[i]) for k, v in series.items()})
    if finish:
        rec.finish()
    rec.close()
    return path


@pytest.fixture(scope="session")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "run.h5", 1000)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "short.h5", 6)


def make_good_run(path: Path) -> Path:
    """40 steps of 8 series, one sample per step, a 4×4 snapshot every 10 steps; finished."""
    schema = RunSchema(series={f"s{i}": "" for i in range(8)}, sample_fields=["r"], snapshot_tensors={"w": (4, 4)})
    with Recorder.create(path, schema, config_toml="seed = 1\n", flush_every=5) as rec:
        for step in range(40):
            rec.log_step(step, {f"s{i}": step + i for i in range(8)})
            rec.log_samples(step, prompt_ids=["p"], prompts=["q"], completions=["c" * step], fields={"r": [1.0]})
            if step % 10 == 0:
                rec.log_snapshot(step, {"w": np.eye(4) * step})
        rec.finish()
    return path


def damage_snapshot(run: Path, path: Path) -> Path:
    """A copy of ``make_good_run``'s file at ``path`` with 16 flipped bytes in the stored chunk of the step-10
    snapshot (the checksum then fails for that snapshot only)."""
    import h5py

    shutil.copy(run, path)
    with h5py.File(path, "r") as f:
        info = f["snapshots/tensors/w"].id.get_chunk_info(1)  # the snapshot of step 10
    data = bytearray(path.read_bytes())
    for i in range(info.byte_offset, info.byte_offset + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def tiny_snapshot_run(folder: Path, run_id: str | None = None, base_at: Path | None = None) -> Path:
    """A run with three snapshots: B = 0 (step 0), then two trained adapters, and the evaluation pairs as samples.
    ``base_at``: keep the base model there (recorded as an absolute path) instead of next to the run."""
    import torch  # lazily: only the LLC tests need the model code

    from discrepancy.analysis.llc.evalset import tokenize_pairs
    from discrepancy.modeling import (
        LoraSettings, attach_lora, build_char_tokenizer, build_tiny_model, run_model_meta, save_local_model,
    )
    from discrepancy.modeling.lora import lora_state_numpy

    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=0, hidden_size=16, intermediate_size=32, num_layers=1)
    save_local_model(base, tok, base_at or folder / "run.base")
    lora = LoraSettings(2, 4.0, ("q_proj",), 0.0)
    model = attach_lora(base, lora.rank, lora.alpha, lora.target_modules, lora.dropout)
    snaps = {0: lora_state_numpy(model)}
    batch = tokenize_pairs(PAIRS, tok)[0]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(1, 21):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
        if step in STEPS:
            snaps[step] = lora_state_numpy(model)
    schema = RunSchema(series={"loss": "loss"}, snapshot_tensors={k: v.shape for k, v in snaps[0].items()})
    path = folder / "run.h5"
    meta = run_model_meta("tiny", str(base_at) if base_at else "run.base", lora) | ({"run_id": run_id} if run_id else {})
    with Recorder.create(path, schema, meta=meta) as rec:
        for step in STEPS:
            rec.log_step(step, {"loss": 0.0})
            if step == 0:
                rec.log_samples(0, prompt_ids=[str(i) for i in range(4)], prompts=[p for p, _ in PAIRS],
                                completions=[c for _, c in PAIRS])
            rec.log_snapshot(step, snaps[step])
        rec.finish()
    return path
