"""Function-preserving LoRA rank growth: logits unchanged at growth (the tiny model and a GPT-2 with a byte-level BPE
tokenizer), Adam's moments extended with zeros, the new directions trained afterwards, the inactive part exactly zero
without any mask, a shrink refused in one line, and grown snapshots read back by `model_from_run` and lineage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discrepancy.analysis.lineage import module_updates, snapshot_scale
from discrepancy.modeling import lora_state, model_from_run, run_model_meta, save_local_model
from discrepancy.modeling.lora import LoraSettings, attach_lora
from discrepancy.modeling.lora_growth import (
    ALPHA_SCHEDULE_META, RANK_SCHEDULE_META, GrowthError, active_rank, allocated_rank, grow_rank, lora_layers,
    mask_inactive, set_scale, snapshot_layout,
)
from discrepancy.runfile import Recorder, RunSchema, open_run

R_MAX = 4


def _batch(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 12), generator=torch.Generator().manual_seed(seed))  # [B, T]


def _adapter(model: torch.nn.Module, rank: int, targets=("q_proj", "v_proj", "up_proj")) -> torch.nn.Module:
    model = attach_lora(model, R_MAX, 8.0, list(targets))
    mask_inactive(model, rank)
    return model


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, steps: int) -> None:
    """A few AdamW steps on next-token loss: B moves away from zero, so the adapter is non-trivial."""
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.eval()


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def _grown(model, ids, rank=2, steps=3, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    _train(model, opt, ids, steps)
    before = _logits(model, ids)
    grow_rank(model, opt, rank, R_MAX, torch.Generator().manual_seed(1))
    return opt, before, _logits(model, ids)


def test_growth_preserves_the_logits_and_extends_adam_with_zeros(tiny_model) -> None:
    model = _adapter(tiny_model, rank=2)
    ids = _batch(tiny_model.config.vocab_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    _train(model, opt, ids, 3)
    # the inactive half is a stationary point: three AdamW steps (weight decay on) left it and its moments at zero
    assert active_rank(model) == 2
    old = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in opt.state}
    before = _logits(model, ids)
    grow_rank(model, opt, 2, R_MAX, torch.Generator().manual_seed(1))
    after = _logits(model, ids)
    assert float((after - before).abs().max()) <= 1e-6 and torch.equal(after, before)  # exact zeros were added
    assert active_rank(model) == R_MAX
    for module, name in lora_layers(model):
        a, b = module.lora_A[name].weight, module.lora_B[name].weight
        bound = 1 / np.sqrt(a.shape[1])  # peft's kaiming_uniform_(a=√5) bound
        assert a[2:].abs().min() > 0 and a[2:].abs().max() <= bound and not b[:, 2:].any()
        for p, cut in ((a, (slice(2, None),)), (b, (slice(None), slice(2, None)))):
            state = opt.state[p]
            assert not state["exp_avg"][cut].any() and not state["exp_avg_sq"][cut].any()
            keep = tuple(slice(0, 2) if s.start == 2 else s for s in cut)  # the trained part's moments: untouched
            assert torch.equal(state["exp_avg"][keep], old[id(p)]["exp_avg"][keep])
            assert torch.equal(state["step"], old[id(p)]["step"])
    # the new directions train: B's new columns move at the first step, A's new rows at the next
    a0 = {n: module.lora_A[n].weight[2:].clone() for module, n in lora_layers(model)}
    _train(model, opt, ids, 1)
    assert all(module.lora_B[n].weight[:, 2:].abs().sum() > 0 for module, n in lora_layers(model))
    _train(model, opt, ids, 1)
    assert any(not torch.equal(module.lora_A[n].weight[2:], a0[n]) for module, n in lora_layers(model))


def test_growth_preserves_a_gpt2_with_a_bpe_tokenizer(tmp_path) -> None:
    """GPT-2's Conv1D layers (peft's fan_in_fan_out) and a byte-level BPE vocabulary built from a config."""
    from local_models import build_local_model

    from discrepancy.modeling import load_local_model

    model, tok = load_local_model(build_local_model("gpt2", tmp_path / "gpt2"), dtype=torch.float32)
    model = _adapter(model, rank=1, targets=("c_attn", "c_fc"))
    ids = tok(["Natalia sold clips to 48 of her friends", "How many clips did"], return_tensors="pt",
              padding=True)["input_ids"]
    _, before, after = _grown(model, ids, rank=1)
    assert float((after - before).abs().max()) <= 1e-6


def test_a_shrink_and_a_rank_beyond_the_allocation_are_one_line(tiny_model) -> None:
    model = _adapter(tiny_model, rank=2)
    gen = torch.Generator().manual_seed(0)
    for old, new, what in ((3, 2, "only grows"), (2, R_MAX + 1, "exceeds the allocated rank")):
        with pytest.raises(GrowthError, match=what) as err:
            grow_rank(model, None, old, new, gen)
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(GrowthError, match="not inactive"):
        grow_rank(model, None, 1, 2, gen)  # rank 1 is already trained: growing "into" it would overwrite it


def _snapshot_run(tmp_path, tiny_model, tiny_tokenizer):
    """A run file as a growing run writes it: rank 2 then 4 at step 2, α 8 then 4 at step 2; snapshots 0, 1, 2."""
    base = save_local_model(tiny_model, tiny_tokenizer, tmp_path / "run.base")
    model = _adapter(tiny_model, rank=2)
    ids = _batch(tiny_model.config.vocab_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    meta = run_model_meta("tiny", base.name, LoraSettings(R_MAX, 8.0, ("q_proj", "v_proj", "up_proj")))
    meta.update({RANK_SCHEDULE_META: "[[0, 2], [2, 4]]", ALPHA_SCHEDULE_META: "[[0, 8.0], [2, 4.0]]"})
    shapes = {k: tuple(v.shape) for k, v in lora_state(model).items()}
    expected = {}
    with Recorder.create(tmp_path / "run.h5", RunSchema(series={"loss": "l"}, snapshot_tensors=shapes),
                         meta=meta) as rec:
        for step in range(3):
            if step == 2:
                grow_rank(model, opt, 2, R_MAX, torch.Generator().manual_seed(2))
                set_scale(model, 4.0 / R_MAX)
            if step:
                _train(model, opt, ids, 1)
            rec.log_step(step, {"loss": 0.0})
            rec.log_snapshot(step, {k: v.numpy() for k, v in lora_state(model).items()})
            expected[step] = _logits(model, ids)
        rec.finish()
    return tmp_path / "run.h5", ids, expected


def test_grown_snapshots_load_with_their_rank_and_scale(tmp_path, tiny_model, tiny_tokenizer) -> None:
    path, ids, expected = _snapshot_run(tmp_path, tiny_model, tiny_tokenizer)
    with open_run(path) as run:
        assert [snapshot_layout(run.meta, s) for s in (0, 1, 2)] == [(2, 2.0), (2, 2.0), (4, 1.0)]
        for step in (0, 1, 2):
            rebuilt, _ = model_from_run(run, step, dtype=torch.float32)
            assert allocated_rank(rebuilt) == R_MAX and active_rank(rebuilt) == (2 if step < 2 else R_MAX)
            assert float((_logits(rebuilt, ids) - expected[step]).abs().max()) <= 1e-5
        # lineage: ΔW = s·B·A with the step's scale; the zero rows of a pre-growth snapshot add nothing
        meta = run.meta
        ups = {s: module_updates(run.snapshot(s), R_MAX, 8.0, scale=snapshot_scale(meta, s)) for s in (1, 2)}
        snap = run.snapshot(1)
    assert snapshot_scale(meta, 1) == 2.0 and snapshot_scale(meta, 2) == 1.0
    mod = next(iter(ups[1]))
    a = next(v for k, v in snap.items() if k.startswith(mod + ".lora_A"))
    b = next(v for k, v in snap.items() if k.startswith(mod + ".lora_B"))
    delta = 2.0 * b[:, :2].astype(np.float64) @ a[:2].astype(np.float64)  # the active block alone, by hand
    assert ups[1][mod].norm() == pytest.approx(np.linalg.norm(delta), rel=1e-9)


@pytest.mark.parametrize("schedule", ["not json", "[[0]]", "[[5, 2], [1, 4]]", "[[0, \"x\"]]"])
def test_a_malformed_growth_schedule_in_a_run_is_one_line(tmp_path, schedule) -> None:
    """A run file is data someone may have sent: a broken schedule is refused before any model is loaded."""
    from types import SimpleNamespace

    from discrepancy.errors import DiscrepancyError
    from discrepancy.modeling import RunModelError

    (tmp_path / "run.base").mkdir()
    meta = run_model_meta("tiny", "run.base", LoraSettings(4, 8.0, ("q_proj",)))
    run = SimpleNamespace(path=tmp_path / "run.h5", meta=meta | {RANK_SCHEDULE_META: schedule,
                                                                 ALPHA_SCHEDULE_META: schedule},
                          snapshot_steps=[0], snapshot=lambda s: {})
    with pytest.raises(RunModelError, match="growth schedules are malformed") as err:
        model_from_run(run, 0)
    assert len(str(err.value).splitlines()) == 1
    if schedule != "[[5, 2], [1, 4]]":  # the comparison reads α alone, whatever the order of its steps
        with pytest.raises(DiscrepancyError, match="LoRA scale cannot be read"):
            snapshot_scale(run.meta, 3)
