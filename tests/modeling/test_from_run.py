"""Rebuilding a run's model from what its file records: paths outside the run's folder only when trusted, and
malformed LoRA settings as one-line errors (a run file is data someone may have sent)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from discrepancy.modeling import (
    LoraSettings, RunModelError, lora_state, model_from_run, run_model_meta, save_local_model,
)
from discrepancy.modeling.lora import attach_lora


def _run(tmp_path, base_path, **meta_overrides):
    meta = run_model_meta("local", base_path, LoraSettings(4, 8.0, ("q_proj", "v_proj")))
    meta.update(meta_overrides)
    return SimpleNamespace(path=tmp_path / "runs" / "run.h5", meta=meta, snapshot_steps=[0], snapshot=lambda s: {})


def test_a_base_outside_the_run_folder_needs_trust(tmp_path, tiny_model, tiny_tokenizer):
    elsewhere = save_local_model(tiny_model, tiny_tokenizer, tmp_path / "elsewhere" / "model")
    (tmp_path / "runs").mkdir()
    adapter = lora_state(attach_lora(tiny_model, 4, 8.0, ["q_proj", "v_proj"]))
    run = _run(tmp_path, elsewhere)
    run.snapshot = lambda step: adapter
    with pytest.raises(RunModelError, match="outside the run's folder; pass --trust-run"):
        model_from_run(run)
    sneaky = _run(tmp_path, "../elsewhere/model")  # relative, but climbing out of the folder
    with pytest.raises(RunModelError, match="outside the run's folder"):
        model_from_run(sneaky)
    model, _ = model_from_run(run, trust_paths=True)
    assert model is not None


@pytest.mark.parametrize("key, value", [("lora_rank", "abc"), ("lora_rank", 0), ("lora_alpha", "x"),
                                        ("lora_dropout", 2.0)])
def test_malformed_lora_settings_are_one_line(tmp_path, key, value):
    (tmp_path / "runs" / "run.base").mkdir(parents=True)
    with pytest.raises(RunModelError, match="LoRA settings are malformed"):
        model_from_run(_run(tmp_path, "run.base", **{key: value}))


def test_a_run_that_says_its_model_cannot_be_rebuilt_is_refused_with_its_reason(tmp_path):
    """A writer that could not record a rebuildable adapter (e.g. a TRL run with DoRA) says why in
    ``model_rebuild``; that reason, not a list of missing keys, is what the user reads."""
    run = SimpleNamespace(path=tmp_path / "run.h5", meta={"model_rebuild": "DoRA adapters are not rebuilt"},
                          snapshot_steps=[0], snapshot=lambda s: {})
    with pytest.raises(RunModelError, match="DoRA adapters are not rebuilt"):
        model_from_run(run)
