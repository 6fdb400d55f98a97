"""The learnability ledger is on exactly when the config says so: learnable sampling, which samples from the ledger,
sets ``sampling.ledger = true`` in the config itself, so the config a run records (and ``--print-config`` shows) says
what ran; a run recorded before that (learnable, ``ledger = false``) still resumes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from discrepancy.config import apply_overrides, load_toml, to_toml
from discrepancy.runfile import Recorder, RunSchema, open_run
from discrepancy.trainers.checkpoint import checkpoint_path
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.curriculum_step import orchestration_series
from discrepancy.trainers.ledger import LEDGER_SERIES
from discrepancy.trainers.run import train_run
from discrepancy.trainers.run_files import check_resume

RECIPE = Path(__file__).resolve().parents[2] / "trainers" / "deepsynapse.toml"


def _sampling(cfg: TrainConfig) -> dict:
    return tomllib.loads(to_toml(cfg))["sampling"]


def test_learnable_sampling_sets_the_ledger_in_the_config() -> None:
    recipe = load_toml(TrainConfig, RECIPE)  # mode = "learnable", no ledger key
    assert recipe.sampling.ledger and _sampling(recipe)["ledger"] is True
    by_flag = apply_overrides(TrainConfig(), ["sampling.mode=learnable"])
    assert by_flag.sampling.ledger and _sampling(by_flag)["ledger"] is True
    assert not TrainConfig().sampling.ledger and _sampling(TrainConfig())["ledger"] is False  # uniform: off
    for cfg in (recipe, by_flag, TrainConfig(), apply_overrides(TrainConfig(), ["sampling.ledger=true"])):
        # the trainer's ledger series follow the config's key alone
        assert (set(LEDGER_SERIES) <= set(orchestration_series(cfg, cfg.rewards.names))) == cfg.sampling.ledger


def test_a_learnable_run_records_the_ledger_it_kept(fast_train_config, tmp_path: Path) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=2", "sft.steps=1", "sampling.mode=learnable"])
    train_run(cfg, tmp_path / "r.h5")
    with open_run(tmp_path / "r.h5") as run:
        recorded, series = run.config["sampling"], set(run.schema.series)
    assert recorded["mode"] == "learnable" and recorded["ledger"] is True
    assert set(LEDGER_SERIES) <= series


def test_a_run_recorded_with_ledger_false_and_learnable_sampling_resumes(tmp_path: Path) -> None:
    """An older version recorded ``ledger = false`` for such a run, which kept a ledger all the same: resuming it
    with today's config (``ledger = true``) changes nothing, and is not refused as a changed key."""
    cfg = apply_overrides(TrainConfig(), ["sampling.mode=learnable", "schedule.horizon=300"])
    now = to_toml(cfg)
    assert "ledger = true" in now
    out = tmp_path / "old.h5"
    older = now.replace("ledger = true", "ledger = false")
    with Recorder.create(out, RunSchema(series={"loss": ""}), config_toml=older) as rec:
        rec.log_step(0, {"loss": 1.0})
        rec.finish()
    checkpoint_path(out).write_bytes(b"")  # check_resume reads the config only; the checkpoint must exist
    check_resume(out, now)
