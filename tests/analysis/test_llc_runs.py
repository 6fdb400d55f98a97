"""LLC over a run's LoRA snapshots: frozen settings, resumability, outputs, stage boundaries, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from discrepancy.analysis.llc_runs import llc_over_run, llc_stage_events, stage_boundaries, tokenize_probe

PAIRS = [("2+3=", "5"), ("1+4=", "5"), ("3+3=", "6"), ("2+2=", "4")]
STEPS = (0, 10, 20)


def _tiny_run(folder: Path, run_id: str | None = None) -> Path:
    """A run with three snapshots: B = 0 (step 0), then two trained adapters, and the probe pairs as samples."""
    from discrepancy.modeling import (
        LoraSettings, attach_lora, build_char_tokenizer, build_tiny_model, run_model_meta, save_local_model,
    )
    from discrepancy.modeling.lora import lora_state_numpy
    from discrepancy.runfile import Recorder, RunSchema

    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=0, hidden_size=16, intermediate_size=32, num_layers=1)
    save_local_model(base, tok, folder / "run.base")
    lora = LoraSettings(2, 4.0, ("q_proj",), 0.0)
    model = attach_lora(base, lora.rank, lora.alpha, lora.target_modules, lora.dropout)
    snaps = {0: lora_state_numpy(model)}
    batch = tokenize_probe(PAIRS, tok)[0]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(1, 21):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
        if step in STEPS:
            snaps[step] = lora_state_numpy(model)
    schema = RunSchema(series={"loss": "loss"}, snapshot_tensors={k: v.shape for k, v in snaps[0].items()})
    path = folder / "run.h5"
    meta = run_model_meta("tiny", "run.base", lora) | ({"run_id": run_id} if run_id else {})
    with Recorder.create(path, schema, meta=meta) as rec:
        for step in STEPS:
            rec.log_step(step, {"loss": 0.0})
            if step == 0:
                rec.log_samples(0, prompt_ids=[str(i) for i in range(4)], prompts=[p for p, _ in PAIRS],
                                completions=[c for _, c in PAIRS])
            rec.log_snapshot(step, snaps[step])
        rec.finish()
    return path


def test_stage_boundaries_are_critical_points_of_the_smoothed_curve() -> None:
    steps = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    rise_fall = [1, 2, 3, 4, 5, 6, 5, 4, 3, 2]  # maximum at step 100
    assert stage_boundaries(steps, rise_fall, sigma=0.5) == [100]
    assert stage_boundaries(steps, list(range(10)), sigma=0.5) == []  # monotone: no stage boundary
    dip = [5, 4, 3, 2, 1, 2, 3, 4, 5, 6]  # minimum at step 30
    assert stage_boundaries(steps, dip, sigma=0.5) == [30]
    events = llc_stage_events(pd.DataFrame({"step": steps, "llc_mean": [float(v) for v in dip]}))
    assert list(events["step"]) == [30] and events["kind"].iloc[0] == "llc_stage" and events["score"].iloc[0] == 1.0


@pytest.mark.slow
def test_llc_over_run_is_frozen_resumable_and_written(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = _tiny_run(tmp_path)
    out = tmp_path / "out"
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = llc_over_run(run, out, num_chains=2, num_draws=10, num_burnin=4,
                             on_snapshot=lambda d, t, s: seen.append((d, t, s)))
    assert list(table["step"]) == list(STEPS) and seen[-1] == (3, 3, 20)
    assert np.isfinite(table["llc_mean"]).all()
    settings = json.loads((out / "llc_settings.json").read_text())
    # nβ = n/log n with n the number of completion tokens: one answer digit + EOS per pair
    assert settings["probe_tokens"] == 2 * len(PAIRS)
    assert settings["nbeta"] == pytest.approx(8 / np.log(8))
    assert (out / "llc.png").stat().st_size > 0 and (out / "llc_stages.csv").exists()
    # Resume: drop the last row; only that snapshot is recomputed, the others are kept verbatim.
    csv = out / "llc.csv"
    full = pd.read_csv(csv)
    full.iloc[:2].to_csv(csv, index=False)
    seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = llc_over_run(run, out, num_chains=2, num_draws=10, num_burnin=4,
                             on_snapshot=lambda d, t, s: seen.append((d, t, s)))
    assert seen == [(3, 3, 20)]
    pd.testing.assert_frame_equal(again.iloc[:2], full.iloc[:2], check_dtype=False)
    # Same frozen settings and seed → the recomputed snapshot gives the same number.
    assert again["llc_mean"].iloc[2] == pytest.approx(full["llc_mean"].iloc[2], rel=1e-6)


@pytest.mark.slow
def test_cli_writes_csv_to_stdout(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from discrepancy.cli import app

    run = _tiny_run(tmp_path)
    res = CliRunner().invoke(app, ["llc", str(run), "--chains", "2", "--draws", "6", "--burnin", "2",
                                   "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("step,llc_mean,llc_std")
    assert {"llc_se", "chains_ok", "health"} <= set(res.stdout.splitlines()[0].split(","))
    assert (tmp_path / "run.h5.analysis" / "llc.csv").exists()
    missing = CliRunner().invoke(app, ["llc", str(tmp_path / "nope.h5")])
    assert missing.exit_code != 0 and "not found" in missing.output
