"""The LLC over a run the trainer itself wrote (the demo recipe, shortened): with ``llc_over_run``'s defaults a
healthy, positive estimate is the normal outcome at every snapshot (the NLL of the recorded completions, the loss
used before, gave negative ones: tests/analysis/llc/test_evalset.py shows why)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from discrepancy.analysis.llc.over_run import llc_over_run


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo recipe (tiny model, SFT warm start, GRPO with LoRA on every linear layer) cut to 20 GRPO steps;
    snapshots at 0, 10 and 20, so the adapter has moved off B = 0 by the later ones."""
    from discrepancy.config import apply_overrides
    from discrepancy.trainers.config import TrainConfig
    from discrepancy.trainers.run import train_run

    torch.set_num_threads(1)
    cfg = apply_overrides(TrainConfig(), [
        "run.steps=20", "run.snapshot_every=10", "run.checkpoint_every=0", "run.threads=1", 'run.device="cpu"',
    ])
    path = tmp_path_factory.mktemp("grpo") / "run.h5"
    train_run(cfg, path)
    return path


@pytest.fixture(scope="module")
def over_run(grpo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    """``llc_over_run`` with its defaults on the run: the table and the stored settings."""
    out = tmp_path_factory.mktemp("llc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = llc_over_run(grpo_run, out)
    return table, json.loads((out / "llc_settings.json").read_text())


@pytest.mark.slow
def test_defaults_give_healthy_positive_estimates_on_every_snapshot(over_run: tuple[pd.DataFrame, dict]) -> None:
    table, _ = over_run
    assert list(table["step"]) == [0, 10, 20]
    assert (table["health"] == "ok").all(), table[["step", "llc_mean", "health", "warnings"]]
    assert (table["llc_mean"] > 0).all() and (table["llc_se"] < 0.2 * table["llc_mean"]).all()
