"""Dynamic LoRA between steps (`trainers.growth`): the schedules' values by step, growth at the scheduled step with
the function preserved, a resume that continues bit for bit across a growth, and bad schedules as one line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from discrepancy.config import apply_overrides, from_dict
from discrepancy.errors import ConfigError
from discrepancy.modeling import model_from_run
from discrepancy.modeling.lora import attach_lora, load_lora_state, lora_state
from discrepancy.modeling.lora_growth import active_rank, lora_layers
from discrepancy.trainers.config import LoraConfig, TrainConfig
from discrepancy.runfile import open_run
from discrepancy.trainers.growth import GROWTH_SERIES, LoraGrowth, LoraGrowthConfig
from discrepancy.trainers.recipe import TrainState
from discrepancy.trainers.run import train_run

SCHEDULE = LoraGrowthConfig(rank_schedule=[[0, 1], [2, 2], [4, 4]], alpha_schedule=[[0, 8.0], [5, 2.0]])


def test_the_schedules_hold_each_value_from_its_step_on() -> None:
    g = LoraGrowth(SCHEDULE, rank=4, alpha=16.0)
    assert [g.rank_at(t) for t in range(7)] == [1, 1, 2, 2, 4, 4, 4]
    assert [g.scale_at(t) for t in range(7)] == [2.0] * 5 + [0.5] * 2  # α_t / lora.rank
    plain = LoraGrowth(LoraGrowthConfig(alpha_schedule=[[3, 4.0]]), rank=4, alpha=16.0)
    assert [plain.rank_at(t) for t in (0, 9)] == [4, 4] and [plain.scale_at(t) for t in (2, 3)] == [4.0, 1.0]
    assert set(g.meta()) == {"lora_rank_schedule", "lora_alpha_schedule"}


def _model(tiny_model, growth: LoraGrowth) -> torch.nn.Module:
    model = attach_lora(tiny_model, 4, 16.0, ["q_proj", "v_proj"])
    growth.attach(model)
    return model


def _steps(model, opt, growth: LoraGrowth, first: int, last: int, ids: torch.Tensor) -> list[dict[str, float]]:
    """Steps first..last of a hand-written loop: growth between steps, then one AdamW step on next-token loss."""
    rows = []
    for step in range(first, last + 1):
        with torch.no_grad():
            before = model(input_ids=ids).logits
        row = growth.before_step(model, opt, step)
        with torch.no_grad():  # growth and the α schedule are the only changes between steps
            row["logit_jump"] = float((model(input_ids=ids).logits - before).abs().max())
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        rows.append(row | {"active": active_rank(model)})
    return rows


def test_growth_between_steps_preserves_the_function_and_resumes_exactly(tiny_model) -> None:
    cfg = LoraGrowthConfig(rank_schedule=[[0, 1], [2, 2], [4, 4]])  # α fixed: every logit jump must be 0
    ids = torch.randint(0, tiny_model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(tiny_model)
    growth = LoraGrowth(cfg, rank=4, alpha=16.0, seed=3)
    model = _model(tiny_model, growth)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rows = _steps(model, opt, growth, 1, 3, ids)
    saved = (lora_state(model), copy.deepcopy(opt.state_dict()), growth.state_dict())
    rows += _steps(model, opt, growth, 4, 6, ids)
    assert [r["lora_active_rank"] for r in rows] == [1, 2, 2, 4, 4, 4] == [r["active"] for r in rows]
    assert set(rows[0]) >= set(GROWTH_SERIES) and max(r["logit_jump"] for r in rows) == 0.0

    # a resume after step 3 (fresh adapter, masked, then the checkpoint's tensors and states) grows at step 4 with
    # the same rows: the generator is the run's seed and the step, not the training RNGs
    resumed_growth = LoraGrowth(cfg, rank=4, alpha=16.0, seed=3)
    resumed = _model(twin, resumed_growth)
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-2)
    load_lora_state(resumed, saved[0])
    opt2.load_state_dict(saved[1])
    resumed_growth.load_state_dict(saved[2])
    torch.manual_seed(123)  # a different training RNG state changes nothing here
    rows2 = _steps(resumed, opt2, resumed_growth, 4, 6, ids)
    assert [r["lora_active_rank"] for r in rows2] == [4, 4, 4]
    for k, v in lora_state(model).items():
        assert torch.equal(v, lora_state(resumed)[k]), k


def test_the_alpha_schedule_sets_the_scale_of_every_layer(tiny_model) -> None:
    growth = LoraGrowth(SCHEDULE, rank=4, alpha=16.0)
    model = _model(tiny_model, growth)
    assert {float(m.scaling[n]) for m, n in lora_layers(model)} == {2.0}
    assert growth.before_step(model, None, 5) == {"lora_active_rank": 4.0, "lora_scale": 0.5}
    assert {float(m.scaling[n]) for m, n in lora_layers(model)} == {0.5}


@pytest.mark.parametrize("settings, words", [
    ({"rank_schedule": [[0, 4], [10, 2]]}, "rank 4 → 2 at step 10 is a shrink"),
    ({"rank_schedule": [[5, 2]]}, "must start at step 0"),
    ({"rank_schedule": [[0, 2], [0, 4]]}, "strictly increasing"),
    ({"rank_schedule": [[0, 0]]}, "integers ≥ 1"),
    ({"rank_schedule": [[0, 2, 3]]}, "[step, value] pairs"),
    ({"alpha_schedule": [[0, -1.0]]}, "α must be > 0"),
])
def test_bad_schedules_are_one_line(settings: dict, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(LoraGrowthConfig, settings)
    assert len(str(err.value).splitlines()) == 1 and words in str(err.value)
    with pytest.raises(ConfigError, match="reaches rank 8 but lora.rank is 4"):
        LoraGrowthConfig(rank_schedule=[[0, 2], [9, 8]]).check_rank(4)


@pytest.mark.skipif("growth" not in LoraConfig.__dataclass_fields__, reason="LoraConfig.growth not attached yet")
def test_a_shrinking_schedule_is_refused_before_training() -> None:
    with pytest.raises(ConfigError, match="shrink"):
        apply_overrides(TrainConfig(), ["lora.growth.rank_schedule=[[0, 8], [10, 4]]"])


@pytest.mark.skipif("growth" not in TrainState.__dataclass_fields__, reason="the loop does not apply growth yet")
def test_a_growing_run_records_its_rank_resumes_exactly_and_its_snapshots_load(fast_train_config, tmp_path) -> None:
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "run.snapshot_every=2", "lora.rank=4",
                                              "lora.growth.rank_schedule=[[0, 2], [3, 4]]",
                                              "lora.growth.alpha_schedule=[[0, 4.0], [5, 8.0]]"])
    train_run(cfg, tmp_path / "full.h5")
    train_run(cfg, tmp_path / "part.h5", stop_at=2)
    train_run(cfg, tmp_path / "part.h5", resume=True)  # the growth at step 3 happens after the resume
    cols = ["lora_active_rank", "lora_scale", "loss", "kl", "grad_norm"]
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "part.h5") as b:
        full, part = a.series()[cols], b.series()[cols]
        assert list(full["lora_active_rank"]) == [2, 2, 4, 4, 4, 4]
        assert list(full["lora_scale"]) == [1.0] * 4 + [2.0] * 2  # α / lora.rank
        np.testing.assert_allclose(part.to_numpy(), full.to_numpy(), rtol=1e-6)
        for step, rank in ((0, 2), (2, 2), (4, 4), (6, 4)):
            snap = a.snapshot(step)
            assert all(v.shape[0 if ".lora_A" in k else 1] == 4 for k, v in snap.items())  # the allocated shape
            assert active_rank(model_from_run(a, step)[0]) == rank
        np.testing.assert_array_equal(np.concatenate([v.ravel() for v in a.snapshot(6).values()]),
                                      np.concatenate([v.ravel() for v in b.snapshot(6).values()]))
