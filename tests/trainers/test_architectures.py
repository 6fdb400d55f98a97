"""Models users bring (GPT-2, Phi-3, Llama built from configs with a byte-level BPE tokenizer) train and probe as they
are: LoRA on every linear layer peft picks for the architecture, adapter-only cold start, the run rebuildable."""

from __future__ import annotations

import pytest

from discrepancy.config import apply_overrides
from discrepancy.modeling import load_local_model, model_from_run
from discrepancy.probes.symmetries import unit_activity
from discrepancy.runfile import open_run
from discrepancy.trainers.run import train_run

from local_models import ARCHITECTURES, build_local_model

pytestmark = pytest.mark.slow

EXPECTED_TARGETS = {"gpt2": {"c_attn", "c_proj", "c_fc"}, "phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
                    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_users_model_trains_records_and_rebuilds(arch, fast_train_config, tmp_path):
    folder = build_local_model(arch, tmp_path / arch)
    cfg = apply_overrides(fast_train_config, [f'model.path="{folder}"', "run.steps=2", "sft.steps=2",
                                              'model.dtype="float32"'])
    summary = train_run(cfg, tmp_path / "run.h5")
    assert summary.status == "finished"
    with open_run(tmp_path / "run.h5") as run:
        adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in run.snapshot(run.snapshot_steps[-1])}
        assert adapted == EXPECTED_TARGETS[arch]
        series = run.series()
        assert series["disc"].notna().all() and series["lora_delta_norm_total"].gt(0).all()
        model, _ = model_from_run(run)
    base, tok = load_local_model(folder)
    assert type(model.get_base_model()) is type(base)
    ids = tok(["Natalia sold 48 clips", "Weng earns $12"], return_tensors="pt", padding=True)
    units = unit_activity(model, ids["input_ids"], ids["attention_mask"])  # probe's unit counts: every MLP kind
    assert len(units) == 2 and units["units"].gt(0).all()
