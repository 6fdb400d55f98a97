"""TRL's GRPOTrainer instrumented into a run file: the run opens in inspect and analyze, D_t and its parts equal an
independent recomputation (the test's own forwards and its own GRPO loss formula, from parameters and gradients a
plain callback captured), LoRA norms equal the snapshots', the trained run is the one a plain GRPOTrainer trains,
and a trl outside the supported range is refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from trl_setup import grpo_parts  # noqa: E402

STEPS = 2


class Capture:
    """θ_t, the unclipped gradient (no clipping is configured) and θ_{t+1} of every optimizer step, and the
    micro-batch inputs TRL prepared, taken by a plain `TrainerCallback` and a wrapper of `_prepare_inputs`."""

    def __init__(self, trainer: Any) -> None:
        from transformers import TrainerCallback

        self.steps: list[dict[str, Any]] = []
        self.micro: list[dict[str, Any]] = []
        capture = self

        class Hook(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                params = {n: p for n, p in model.named_parameters() if p.requires_grad}
                capture.steps.append({"theta": {n: p.detach().clone() for n, p in params.items()},
                                      "grad": {n: p.grad.detach().clone() for n, p in params.items()},
                                      "micro": capture.micro})
                capture.micro = []

            def on_optimizer_step(self, args, state, control, model=None, **kw):
                capture.steps[-1]["after"] = {n: p.detach().clone() for n, p in model.named_parameters()
                                              if p.requires_grad}

        trainer.add_callback(Hook())
        prepare = trainer._prepare_inputs

        def prepared(batch: Any) -> Any:
            out = prepare(batch)
            if trainer.model.training:
                capture.micro.append(out)
            return out

        trainer._prepare_inputs = prepared


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory) -> dict[str, Any]:
    from discrepancy.integrations.trl_trainer import InstrumentedGRPOTrainer

    folder = tmp_path_factory.mktemp("trl")
    torch.set_num_threads(1)
    trainer = InstrumentedGRPOTrainer(**grpo_parts(folder / "out", steps=STEPS), discrepancy_run=folder / "run.h5",
                                      snapshot_every=1)
    capture = Capture(trainer)
    with pytest.warns(RuntimeWarning, match="sample_time, score_time cannot be measured"):
        trainer.train()
    return {"path": folder / "run.h5", "trainer": trainer, "capture": capture}


def _completion_logp(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """log π of the completion tokens [n, T] from one plain forward (no TRL code)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1].double()
    return torch.log_softmax(logits, -1).gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)


def _grpo_loss(logp: torch.Tensor, old: torch.Tensor, inputs: dict[str, torch.Tensor], k: int, eps: float) -> float:
    """TRL's "grpo" loss with β = 0, written out: −min(rA, clip(r)A) averaged per sequence, then over sequences,
    divided by the K micro-batches of the step."""
    ratio = torch.exp(logp - old)
    adv = inputs["advantages"].double().unsqueeze(1)
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    mask = inputs["completion_mask"].double()
    return float(((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()) / k


def _load(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in tensors:
                p.copy_(tensors[name])


def test_discrepancy_equals_an_independent_recomputation(trl_run):
    from discrepancy.runfile import open_run

    trainer, steps = trl_run["trainer"], trl_run["capture"].steps
    model, eps = trainer.model, trainer.epsilon_low
    with open_run(trl_run["path"]) as run:
        series = run.series()
    assert len(steps) == STEPS and list(series.index) == list(range(1, STEPS + 1))
    model.eval()  # no dropout in this model: eval only skips TRL's train-mode bookkeeping
    for step, cap in enumerate(steps, start=1):
        k = len(cap["micro"])
        assert k == 2
        with torch.no_grad():
            _load(model, cap["theta"])
            olds = [_completion_logp(model, m) for m in cap["micro"]]
            _load(model, cap["after"])
            news = [_completion_logp(model, m) for m in cap["micro"]]
        pre = sum(_grpo_loss(o, o, m, k, eps) for o, m in zip(olds, cap["micro"]))
        post = sum(_grpo_loss(n, o, m, k, eps) for n, o, m in zip(news, olds, cap["micro"]))
        pred = sum(float((cap["grad"][n].double() * (cap["after"][n] - cap["theta"][n]).double()).sum())
                   for n in cap["theta"])
        row = series.loc[step]
        assert row["loss_pre"] == pytest.approx(pre, abs=1e-5)
        assert row["loss_post"] == pytest.approx(post, abs=1e-5)
        assert row["dloss_pred"] == pytest.approx(pred, abs=1e-5)
        assert row["disc"] == pytest.approx(post - pre - pred, abs=1e-5)
        assert abs(post - pre) > 1e-3  # the step moved the loss: ΔL_obs is not 0 by construction
        if math.isfinite(row["rho"]):
            assert row["rho"] == pytest.approx((post - pre) / pred, rel=1e-3)
    _load(model, steps[-1]["after"])
    model.train()


def test_noise_norms_samples_and_snapshots(trl_run):
    from discrepancy.runfile import open_run

    with open_run(trl_run["path"]) as run:
        series, norms = run.series(), run.array("lora_delta_norm")
        samples, meta = run.samples(), run.meta
        snap = run.snapshot(STEPS)
        assert run.snapshot_steps == list(range(0, STEPS + 1)) and run.status == "finished"  # 0: before training
        assert all(not v.any() for k, v in run.snapshot(0).items() if "lora_B" in k)  # B = 0 at the start
    assert np.isfinite(series["noise_trace"]).all()  # two micro-batches per step: the noise scale is defined
    assert series["sample_time"].isna().all() and "sample_time" in json.loads(meta["unmeasured"])
    assert np.isfinite(series[["reward_mean", "loss", "grad_norm", "entropy", "kl_realised"]]).all().all()
    # ‖(α/r)BA‖_F per module from the snapshot's tensors, formed densely here
    for label in norms.columns:
        a = next(v for k, v in snap.items() if f"{label}.lora_A" in k).astype(np.float64)
        b = next(v for k, v in snap.items() if f"{label}.lora_B" in k).astype(np.float64)
        assert norms.loc[STEPS, label] == pytest.approx(2.0 * np.linalg.norm(b @ a), rel=1e-5)
    assert len(samples) == 8 * STEPS and set(samples["step"]) == set(range(1, STEPS + 1))
    assert samples["prompt"].str.fullmatch(r"\d\+\d=").all()
    assert np.allclose(samples["reward_len"], -np.abs(samples["completion"].str.len() - 4) / 4.0)
    assert meta["model_rebuild"] == "ok" and (trl_run["path"].parent / "run.base" / "config.json").is_file()


def test_llc_and_probe_rebuild_the_trained_model(trl_run):
    """`llc` and `probe` load a run's model through `model_from_run`: from the saved base, the LoRA settings in meta
    and the last snapshot it must give the trained model's logits back."""
    from discrepancy.modeling import model_from_run

    rebuilt, tokenizer = model_from_run(trl_run["path"], STEPS)
    trained = trl_run["trainer"].model
    ids = tokenizer(["1+2=", "7+7="], return_tensors="pt")
    was_training = trained.training
    trained.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**ids).logits, trained(**ids).logits, atol=1e-5)
    trained.train(was_training)


def test_inspect_and_analyze_read_the_run(trl_run, tmp_path):
    from typer.testing import CliRunner

    from discrepancy.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(trl_run["path"])])
    assert shown.exit_code == 0, shown.output
    assert "disc" in shown.output and "reward_mean" in shown.output
    out = tmp_path / "analysis"
    analysed = runner.invoke(app, ["analyze", str(trl_run["path"]), "--out", str(out), "--format", "json"])
    assert analysed.exit_code == 0, analysed.output
    assert json.loads(analysed.stdout)["num_steps"] == STEPS and (out / "report.html").exists()


def test_the_instrumented_run_trains_what_plain_trl_trains(trl_run, tmp_path):
    from trl import GRPOTrainer

    torch.set_num_threads(1)
    plain = GRPOTrainer(**grpo_parts(tmp_path / "out", steps=STEPS))
    plain.train()
    ours = {n: p for n, p in trl_run["trainer"].model.named_parameters() if p.requires_grad}
    theirs = {n: p for n, p in plain.model.named_parameters() if p.requires_grad}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_a_trl_outside_the_supported_range_is_one_line(monkeypatch):
    import trl

    from discrepancy.integrations.trl_version import SUPPORTED_TRL, TRLVersionError, require_trl

    monkeypatch.setattr(trl, "__version__", "0.19.1")
    with pytest.raises(TRLVersionError) as err:
        require_trl()
    assert "\n" not in str(err.value) and SUPPORTED_TRL in str(err.value) and "discrepancy[trl]" in str(err.value)
    monkeypatch.setattr(trl, "__version__", "1.16.3")
    assert require_trl() == "1.16.3"


def test_a_run_that_cannot_be_rebuilt_says_why(tmp_path: Path):
    from peft import LoraConfig

    from discrepancy.integrations.trl_record import lora_rebuild

    settings, why = lora_rebuild(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True))
    assert settings is None and "use_rslora" in why
    settings, why = lora_rebuild(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert settings is not None and settings.target_modules == ("q_proj", "v_proj") and why == ""


def _train(folder: Path, **kwargs: Any) -> Path:
    """A short instrumented run into ``folder / run.h5`` (kwargs: grpo_parts settings and GRPOConfig fields)."""
    from discrepancy.integrations.trl_trainer import InstrumentedGRPOTrainer

    peft = kwargs.pop("peft_config", None)
    instruments = kwargs.pop("instruments", None)
    parts = grpo_parts(folder / "out", **kwargs)
    if peft is not None:
        parts["peft_config"] = peft
    torch.set_num_threads(1)
    with pytest.warns(RuntimeWarning):
        InstrumentedGRPOTrainer(**parts, discrepancy_run=folder / "run.h5", instruments=instruments).train()
    return folder / "run.h5"


def test_a_second_inner_iteration_starts_where_the_first_ended(tmp_path):
    """With μ = 2 TRL reuses the step's micro-batches and π_old for a second optimizer step, so that step's L_pre is
    the same loss at the same weights as the first step's L_post: two measurements that must agree."""
    from discrepancy.instrumentation.config import InstrumentationConfig
    from discrepancy.runfile import open_run

    lin = InstrumentationConfig(linearisation_every=1)
    path = _train(tmp_path, steps=2, num_iterations=2, gradient_checkpointing=False, instruments=lin)
    with open_run(path) as run:
        s = run.series()
    assert s.loc[2, "loss_pre"] == pytest.approx(s.loc[1, "loss_post"], abs=1e-6)
    assert abs(s.loc[1, "loss_post"] - s.loc[1, "loss_pre"]) > 1e-3
    assert np.isfinite(s["lin_error"]).all()  # N_t is measured when TRL does not checkpoint


def test_a_run_whose_model_cannot_be_rebuilt_is_refused_in_one_line(tmp_path):
    from peft import LoraConfig
    from typer.testing import CliRunner

    from discrepancy.cli import app
    from discrepancy.runfile import open_run

    from discrepancy.instrumentation.config import InstrumentationConfig

    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True)
    path = _train(tmp_path, steps=1, peft_config=peft, instruments=InstrumentationConfig(linearisation_every=1))
    with open_run(path) as run:
        assert "use_rslora" in run.meta["model_rebuild"] and "base_model_path" not in run.meta
        assert run.snapshot_steps == [0, 1]
        # TRL checkpoints by default, and its input-gradient hook breaks jvp: N_t is declared, NaN, and said why
        assert run.series()["lin_error"].isna().all()
        assert "gradient_checkpointing" in json.loads(run.meta["unmeasured"])["lin_error"]
    for command in ("llc", "probe"):
        result = CliRunner().invoke(app, [command, str(path)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and "cannot be rebuilt" in lines[0], result.output


def test_a_crash_leaves_a_failed_run_with_the_steps_done(tmp_path):
    from discrepancy.integrations.trl_trainer import InstrumentedGRPOTrainer
    from discrepancy.runfile import open_run

    calls = []

    def reward_then_fail(completions: list[str], **_: Any) -> list[float]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("reward server down")
        return [float(len(c)) for c in completions]

    parts = grpo_parts(tmp_path / "out", steps=3)
    parts["reward_funcs"] = [reward_then_fail]
    trainer = InstrumentedGRPOTrainer(**parts, discrepancy_run=tmp_path / "run.h5")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="reward server down"):
        trainer.train()
    with open_run(tmp_path / "run.h5") as run:
        assert run.status == "failed" and "reward server down" in run.status_message
        assert list(run.series().index) == [1] and np.isfinite(run.series()["disc"]).all()
