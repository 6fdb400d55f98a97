"""End-to-end runs of the trainer on the tiny model (seconds each): the run file, determinism, resume, rebuild."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from discrepancy.config import apply_overrides
from discrepancy.modeling import load_base_for_run, lora_state, model_from_run
from discrepancy.modeling.fingerprint import weights_fingerprint
from discrepancy.runfile import open_run
from discrepancy.trainers.recipe import STEP_SERIES
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.run import train_run

pytestmark = pytest.mark.slow


class _Capture(Instrument):
    """An instrument that keeps the live model's logits on a fixed input after each optimizer step."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.logits: dict[int, torch.Tensor] = {}

    def series(self) -> dict[str, str]:
        return {"capture_ok": "1 after each captured step"}

    def on_after_optimizer(self, ctx):
        with torch.no_grad():
            ctx.model.eval()
            self.logits[ctx.step] = ctx.model(self.ids).logits.clone()
            ctx.model.train()
        return {"capture_ok": 1.0}


def test_ten_step_run_writes_a_valid_run_and_rebuilds_the_model(fast_train_config, tmp_path):
    cap = _Capture(torch.tensor([[9, 10, 11, 12, 13]]))
    out = tmp_path / "run.h5"
    summary = train_run(fast_train_config, out, instruments=[cap])
    assert summary.status == "finished" and summary.steps == 10
    assert (tmp_path / "run.base" / "config.json").is_file() and (tmp_path / "run.ckpt.pt").is_file()
    with open_run(out) as run:
        assert run.status == "finished"
        series = run.series()
        assert list(series.index) == list(range(1, 11))
        for name in [*STEP_SERIES, "reward_correctness", "reward_format", "capture_ok"]:
            assert name in series.columns, name
        assert len(series.columns) == len(run.schema.series)  # every declared series has its 10 rows
        assert series["capture_ok"].eq(1.0).all()
        assert np.isfinite(series[["loss", "reward_mean", "grad_norm", "lr", "temperature", "entropy"]]).all().all()
        assert series["temperature"].iloc[0] > series["temperature"].iloc[-1]  # the cosine decay ran
        samples = run.samples()
        assert len(samples) == 20 and set(samples["step"]) == set(range(1, 11))
        assert run.snapshot_steps == [0, 5, 10]
        # Step 0 is the model GRPO started from: B = 0, so the rebuilt model is the saved base without adapter.
        assert all(np.all(v == 0) for k, v in run.snapshot(0).items() if "lora_B" in k)
        base, _ = load_base_for_run(run)
        start, _ = model_from_run(run, 0)
        with torch.no_grad():
            assert torch.equal(start(cap.ids).logits, base(cap.ids).logits)
        assert run.meta["base_model_kind"] == "tiny" and run.meta["lora_rank"] == 2
        assert run.meta["base_fingerprint"] == weights_fingerprint(base)  # the saved base is the one recorded
        # The snapshot at step 10 holds the adapter as it was after the 10th optimizer step: rebuilding the model
        # from the run reproduces the live model's logits at that step.
        for step in (5, 10):
            model, _ = model_from_run(run, step)
            with torch.no_grad():
                rebuilt = model(cap.ids).logits
            assert torch.allclose(rebuilt, cap.logits[step], atol=1e-5), step


@pytest.mark.parametrize("min_length, lengths", [(0, 1.0), (5, 6.0)])
def test_min_completion_length_reaches_generate(fast_train_config, tmp_path, monkeypatch, bias_towards_eos,
                                                min_length, lengths):
    """With a model that ends every completion at once, grpo.min_completion_length = 5 gives 5 tokens + EOS."""
    import discrepancy.trainers.run as run_mod

    attach = run_mod.attach_lora

    def attach_to_eos_model(model, *args, **kwargs):
        bias_towards_eos(model, model.config.eos_token_id)  # after the base was saved: only the live model
        return attach(model, *args, **kwargs)

    monkeypatch.setattr(run_mod, "attach_lora", attach_to_eos_model)
    cfg = apply_overrides(fast_train_config, ["run.steps=1", "sft.steps=0", f"grpo.min_completion_length={min_length}"])
    train_run(cfg, tmp_path / "run.h5", instruments=[])
    with open_run(tmp_path / "run.h5") as run:
        row = run.series().iloc[0]
    assert row["completion_length_min"] == row["completion_length_max"] == lengths
    assert row["truncated_frac"] == 0.0


def test_same_seed_gives_the_same_numbers(fast_train_config, tmp_path):
    cfg = apply_overrides(fast_train_config, ["run.steps=4", "run.snapshot_every=4"])
    frames = []
    for name in ("a.h5", "b.h5"):
        train_run(cfg, tmp_path / name, instruments=[])
        with open_run(tmp_path / name) as run:
            series = run.series()
            frames.append(series.drop(columns=[c for c in series.columns if c.endswith("_time")]))  # wall clock
            frames.append(run.snapshot(4))
    pd.testing.assert_frame_equal(frames[0], frames[2])
    for key, value in frames[1].items():
        np.testing.assert_array_equal(value, frames[3][key])
    other = apply_overrides(cfg, ["run.seed=1"])
    train_run(other, tmp_path / "c.h5", instruments=[])
    with open_run(tmp_path / "c.h5") as run:
        assert not np.allclose(run.series()["entropy"], frames[0]["entropy"])  # other samples


def test_resume_continues_where_it_stopped(fast_train_config, tmp_path):
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "run.snapshot_every=3"])
    train_run(cfg, tmp_path / "full.h5", instruments=[])
    part = train_run(cfg, tmp_path / "part.h5", instruments=[], stop_at=3)
    assert part.status == "interrupted" and part.steps == 3
    with open_run(tmp_path / "part.h5") as run:
        assert run.status == "interrupted" and run.num_steps == 3
    rest = train_run(cfg, tmp_path / "part.h5", instruments=[], resume=True)
    assert rest.status == "finished" and rest.steps == 6 and len(rest.metrics) == 3
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "part.h5") as b:
        assert list(b.series().index) == list(range(1, 7))
        assert b.snapshot_steps == a.snapshot_steps == [0, 3, 6]  # the resumed run keeps its one step-0 snapshot
        cols = ["loss", "reward_mean", "grad_norm", "lr", "temperature"]
        np.testing.assert_allclose(b.series()[cols].to_numpy(), a.series()[cols].to_numpy(), rtol=1e-5, atol=1e-6)
        final_a, final_b = a.snapshot(6), b.snapshot(6)
    for key in final_a:
        np.testing.assert_allclose(final_b[key], final_a[key], atol=1e-6)
    assert set(final_a) == set(lora_state_names(tmp_path / "full.h5"))


def test_resume_continues_the_instruments_running_state(fast_train_config, tmp_path):
    """Bias-corrected EWMAs, KL to the start policy and the linearisation probe continue across a resume: the
    resumed run records what the uninterrupted one does (before, the averages restarted at the resume)."""
    cfg = apply_overrides(fast_train_config, [
        "run.steps=6", "instruments.linearisation_every=2", "instruments.ewma_beta=0.5",
        'rewards.names=["test_train_run:digit_share"]', "rewards.weights=[1.0]",  # varies from the first step
    ])
    train_run(cfg, tmp_path / "full.h5")
    train_run(cfg, tmp_path / "part.h5", stop_at=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_run(cfg, tmp_path / "part.h5", resume=True, trust_run=True)  # its reward is test code
    assert not [w for w in caught if "restart" in str(w.message)]  # every state was found in the checkpoint
    cols = ["noise_trace_ewma", "grad_sq_ewma", "b_simple_ewma", "kl_start", "lin_error"]
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "part.h5") as b:
        full, part = a.series()[cols], b.series()[cols]
    assert (full.loc[4:, ["noise_trace_ewma", "kl_start"]] > 0).all().all()  # something to continue
    assert full["lin_error"].notna().sum() == 3
    np.testing.assert_allclose(part.to_numpy(), full.to_numpy(), rtol=1e-4, atol=1e-7)


def digit_share(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """A reward that differs between completions of a random model (so gradients are not zero)."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def lora_state_names(path):
    model, _ = model_from_run(path)  # a path works as well as an open run
    return list(lora_state(model))


def test_non_finite_losses_skip_updates_and_fail_the_run(fast_train_config, tmp_path, monkeypatch):
    import discrepancy.trainers.recipe as recipe

    real = recipe.grpo_loss

    def nan_loss(logp, *args, **kwargs):
        loss, stats = real(logp, *args, **kwargs)
        return loss + logp.sum() * float("nan"), stats

    monkeypatch.setattr(recipe, "grpo_loss", nan_loss)
    cfg = apply_overrides(fast_train_config, ["grpo.max_bad_steps=2"])
    summary = train_run(cfg, tmp_path / "run.h5", instruments=[])
    assert summary.status == "failed" and summary.steps == 2
    with open_run(tmp_path / "run.h5") as run:
        assert run.status == "failed" and "non-finite" in run.status_message
        series = run.series()
        assert series["skipped"].tolist() == [1.0, 1.0] and series["loss"].isna().all()
        # No update was applied: LoRA B is still exactly zero, as peft initialises it.
        snap = run.snapshot(run.snapshot_steps[-1])
    assert all(np.all(v == 0) for k, v in snap.items() if "lora_B" in k)


class _LossCheck(Instrument):
    """Recomputes the full-batch loss through the hook context before and after the optimizer step."""

    def __init__(self) -> None:
        self.pres: list[float] = []
        self.moved: list[float] = []
        self.adv: list[float] = []

    def series(self) -> dict[str, str]:
        return {}

    @staticmethod
    def _batch_loss(ctx) -> float:
        from discrepancy.instrumentation.shared import measurement_forward

        return ctx.loss(measurement_forward(ctx, share_prompts=False, fold_lora=False)[0])  # no grad, whole batch

    def on_before_optimizer(self, ctx):
        self.pres.append(self._batch_loss(ctx))
        self.adv.append(float(ctx.batch.advantages.abs().sum()))
        return {}

    def on_after_optimizer(self, ctx):
        self.moved.append(abs(self._batch_loss(ctx) - self.pres[-1]))
        return {}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_batch_loss_in_the_hooks_equals_the_training_loss(fast_train_config, tmp_path, monkeypatch, loss_type):
    # L_pre recomputed from a no-grad forward of the whole batch must equal the loss the step trained on
    # (accumulated over micro-batches of unequal token counts); after the update it must differ.
    import discrepancy.trainers.recipe as recipe

    def varied_rewards(specs, prompts, completions, answers, **_):  # context and weights, when given
        total = np.array([len(c) % 3 for c in completions], dtype=float)  # [N] ties broken by length
        return total, {s.name: total for s in specs}

    monkeypatch.setattr(recipe, "score_completions", varied_rewards)
    check = _LossCheck()
    cfg = apply_overrides(fast_train_config, [f"grpo.loss_type=\"{loss_type}\"", "run.steps=2", "optim.lr=0.05"])
    train_run(cfg, tmp_path / "run.h5", instruments=[check])
    with open_run(tmp_path / "run.h5") as run:
        trained = run.series()["loss"].to_numpy()  # the loss each step trained on, as recorded
    gaps = np.abs(np.array(check.pres) - trained)
    assert min(check.adv) > 0  # the policy term is live, not only the KL term
    assert len(gaps) == 2 and max(gaps) < 1e-6
    assert max(check.moved) > 1e-6


@pytest.mark.parametrize("name, function", [("generate", "sample_completions"), ("loop", "sample_eager")])
def test_run_sampler_picks_the_sampling_function(fast_train_config, tmp_path, monkeypatch, name, function):
    """Every step samples with the function ``run.sampler`` names (here on the CPU, whose default is the loop)."""
    from discrepancy.rollout import samplers

    calls = []
    real = samplers.SAMPLERS[name]
    monkeypatch.setitem(samplers.SAMPLERS, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    assert real.__name__ == function
    cfg = apply_overrides(fast_train_config, ["run.steps=2", "sft.steps=0", f'run.sampler="{name}"'])
    train_run(cfg, tmp_path / "run.h5")
    assert len(calls) == 2
    with open_run(tmp_path / "run.h5") as run:
        assert len(run.series()) == 2 and 'sampler = "' + name + '"' in run.config_toml


def test_compile_on_cpu_warns_and_trains_as_usual(fast_train_config, tmp_path):
    cfg = apply_overrides(fast_train_config, ["run.steps=1", "sft.steps=0", "run.compile=true"])
    with pytest.warns(RuntimeWarning, match="run.compile applies to CUDA"):
        summary = train_run(cfg, tmp_path / "run.h5", instruments=[])
    assert summary.status == "finished" and summary.steps == 1


def test_compiled_layers_in_the_update_give_the_eager_run(fast_train_config, tmp_path, monkeypatch):
    """``run.compile`` on a GPU runs the update (reference, training, instrument forwards) through compiled layers.
    Forced on here on the CPU, with the usual sampler, it must record the numbers of the eager run."""
    from discrepancy.modeling.compiled import CompiledLayers
    from discrepancy.trainers import speed

    cfg = apply_overrides(fast_train_config, [
        "run.steps=2", "sft.steps=0", "run.snapshot_every=2",
        'rewards.names=["test_train_run:digit_share"]', "rewards.weights=[1.0]",  # advantages ≠ 0 from the start
        "instruments.policy_shift=false", "instruments.kl_start=false", "instruments.grad_noise=false",
        "instruments.lora_norms=false"])
    train_run(cfg, tmp_path / "eager.h5")
    monkeypatch.setattr(speed, "compiling_pays", lambda device: True)
    monkeypatch.setattr(speed, "resolve_sampler", lambda *a: "loop")  # same draws as the eager run (CPU sampler)
    calls = []
    real = CompiledLayers.active
    monkeypatch.setattr(CompiledLayers, "active", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    train_run(apply_overrides(cfg, ["run.compile=true"]), tmp_path / "compiled.h5")
    assert len(calls) == 2  # every update ran with the compiled layers swapped in
    with open_run(tmp_path / "eager.h5") as a, open_run(tmp_path / "compiled.h5") as b:
        sa, sb = a.series(), b.series()
        assert list(sa.columns) == list(sb.columns)
        off = {}
        for col in sa.columns:
            if not col.endswith("_time") and not col.startswith("time_"):
                assert np.array_equal(np.isnan(sb[col]), np.isnan(sa[col])), col
                rel = np.abs(sb[col] - sa[col]) / np.maximum(np.abs(sa[col]), 1e-6)
                off[col] = float(np.nanmax(rel)) if np.isfinite(rel).any() else 0.0
        # D_t and κ are differences of nearly equal losses: float32 rounding of the fused kernels shows there.
        second_order = {"disc", "kappa", "rho", "dloss_obs"}
        assert {c: v for c, v in off.items() if v > (0.2 if c in second_order else 1e-3)} == {}
        assert (sa["grad_norm"] > 0).all() and (sa["step_norm"] > 0).all()  # the update did something


def test_resuming_where_a_snapshot_was_taken_adds_no_duplicate(fast_train_config, tmp_path):
    """Stopping at a snapshot step, resuming without a step to run, and resuming a finished run record each
    snapshot once (duplicates made llc and probe process one step several times)."""
    cfg = apply_overrides(fast_train_config, ["run.steps=5", "run.snapshot_every=2", "sft.steps=0"])
    out = tmp_path / "run.h5"
    train_run(cfg, out, instruments=[], stop_at=3)  # a closing snapshot at 3
    train_run(cfg, out, instruments=[], resume=True, stop_at=3)  # nothing left to run before the stop
    train_run(cfg, out, instruments=[], resume=True)  # 4 and the closing 5
    summary = train_run(cfg, out, instruments=[], resume=True)  # already finished
    assert summary.status == "finished"
    with open_run(out) as run:
        assert run.snapshot_steps == [0, 2, 3, 4, 5] and run.num_steps == 5


def test_resume_with_other_steps_keeps_the_schedules(fast_train_config, tmp_path):
    """--resume --steps N extends or cuts a run without moving any step's lr, temperature or β: the schedules keep
    the horizon the run started with (recorded as schedule.horizon) and hold their final values after it."""
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "sft.steps=0", "optim.warmup_steps=1",
                                              "schedule.beta_end=0.001"])
    train_run(cfg, tmp_path / "full.h5", instruments=[])
    train_run(cfg, tmp_path / "cut.h5", instruments=[], stop_at=2)
    lines: list[str] = []
    train_run(apply_overrides(cfg, ["run.steps=4"]), tmp_path / "cut.h5", instruments=[], resume=True,
              notify=lines.append)  # cut short at step 2: steps 3 and 4 as the 6-step run has them
    train_run(cfg, tmp_path / "ext.h5", instruments=[])
    train_run(apply_overrides(cfg, ["run.steps=9"]), tmp_path / "ext.h5", instruments=[], resume=True)
    cols = ["lr", "temperature", "beta"]
    with open_run(tmp_path / "full.h5") as a, open_run(tmp_path / "cut.h5") as b, open_run(tmp_path / "ext.h5") as c:
        full, cut, ext = a.series()[cols], b.series()[cols], c.series()[cols]
        assert c.config["schedule"]["horizon"] == 6 and c.config["run"]["steps"] == 9
    np.testing.assert_array_equal(cut.to_numpy(), full.loc[1:4].to_numpy())
    np.testing.assert_array_equal(ext.loc[1:6].to_numpy(), full.to_numpy())
    np.testing.assert_array_equal(ext.loc[7:9].to_numpy(), np.repeat(full.loc[[6]].to_numpy(), 3, axis=0))
    lines = [line for line in lines if not line.startswith("model: ")]  # what is trained, said at every start
    assert len(lines) == 1 and "keep their 6-step horizon" in lines[0]


def test_a_model_of_ones_own_is_trained_through_its_adapter_only(fast_train_config, tmp_path, tiny_model,
                                                                  tiny_tokenizer):
    """--model DIR: the cold start trains the LoRA adapter (sft.weights auto), the model's weights stay as they are
    on disk and in memory, and the run refers to the folder itself; sft.weights = "all" still trains every weight."""
    from safetensors.torch import load_file

    from discrepancy.modeling import model_from_run, save_local_model

    folder = save_local_model(tiny_model, tiny_tokenizer, tmp_path / "model")
    before = load_file(folder / "model.safetensors")
    cfg = apply_overrides(fast_train_config, [f'model.path="{folder}"', "run.steps=2", "sft.steps=3"])
    summary = train_run(cfg, tmp_path / "run.h5", instruments=[])
    assert len(summary.sft_losses) == 3 and not (tmp_path / "run.base").exists()
    assert all(torch.equal(before[k], v) for k, v in load_file(folder / "model.safetensors").items())
    with open_run(tmp_path / "run.h5") as run:
        assert run.meta["base_model_path"] == str(folder.resolve())
        start = run.snapshot(0)  # the adapter after its cold start: B ≠ 0
        assert any(np.abs(v).max() > 0 for k, v in start.items() if "lora_B" in k)
        model, _ = model_from_run(run, 0)
    base = model.get_base_model().state_dict()
    assert all(torch.equal(before[k], base[k]) for k in before if k in base)  # the frozen base is the user's model
    train_run(apply_overrides(cfg, ['sft.weights="all"']), tmp_path / "all.h5", instruments=[])
    assert (tmp_path / "all.base").is_dir()  # every weight trained: the changed base is saved next to the run


def always_nan(prompts, completions, answers):
    return [float("nan")] * len(completions)


def huge(prompts, completions, answers):
    return [1e308] * len(completions)  # weighted by 1.25 the total overflows


def half_infinite(prompts, completions, answers):
    return [float("inf") if i % 2 else float(len(c) % 3) for i, c in enumerate(completions)]


@pytest.mark.parametrize("reward, weight", [("always_nan", 1.0), ("huge", 1.25)])
def test_a_run_without_usable_rewards_fails_and_says_why(fast_train_config, tmp_path, reward, weight):
    cfg = apply_overrides(fast_train_config, ["run.steps=6", "sft.steps=0", "grpo.max_bad_steps=2",
                                              f'rewards.names=["test_train_run:{reward}"]', f"rewards.weights=[{weight}]"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "Mean of empty slice" and overflow say nothing
        summary = train_run(cfg, tmp_path / "run.h5", instruments=[])
    assert summary.status == "failed" and summary.steps == 2
    with open_run(tmp_path / "run.h5") as run:
        assert "no completion got a usable reward" in run.status_message
        series = run.series()
        assert (series["reward_unusable_frac"] == 1.0).all() and (series["skipped"] == 1.0).all()


def test_infinite_rewards_are_counted_and_left_out(fast_train_config, tmp_path):
    cfg = apply_overrides(fast_train_config, ["run.steps=2", "sft.steps=0",
                                              'rewards.names=["test_train_run:half_infinite"]', "rewards.weights=[1.0]"])
    summary = train_run(cfg, tmp_path / "run.h5", instruments=[])
    assert summary.status == "finished"
    with open_run(tmp_path / "run.h5") as run:
        series = run.series()
        assert (series["reward_unusable_frac"] == 0.5).all() and (series["skipped"] == 0).all()
        assert np.isfinite(series["reward_test_train_run:half_infinite"]).all()  # the finite values' mean, not inf


@pytest.mark.parametrize("override", ["optim.lr=inf", "rewards.weights=[nan, 1.0]", "grpo.beta=inf"])
def test_non_finite_settings_are_refused(override):
    from discrepancy.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a finite number"):
        apply_overrides(TrainConfig(), [override])
