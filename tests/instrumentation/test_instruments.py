"""Instruments driven through the trainer's hook protocol, checked against what the driver computes itself."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.hooks import Instrument
from discrepancy.instrumentation.registry import build_instruments
from discrepancy.instrumentation.discrepancy_operator import DiscrepancyOperator
from discrepancy.instrumentation.drift import kl_to_start
from discrepancy.instrumentation.grad_noise import GradNoise, noise_from_micro_grads
from discrepancy.instrumentation.lora_norms import LoraNorms
from discrepancy.instrumentation.policy_shift import PolicyShift, StartPolicyKL

from instr_models import drive, make_lora_model, tok_logp


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))


def test_discrepancy_uses_unclipped_gradient_and_true_post_loss() -> None:
    torch.manual_seed(0)
    model = make_lora_model()
    truths = drive(model, [DiscrepancyOperator()], steps=2, clip=0.01)  # clip far below the gradient norm
    for t in truths:
        deltas = [b - a for a, b in zip(t.theta_t, t.theta_next)]
        pred = _dot(t.raw_grads, deltas)
        assert math.isclose(t.row["loss_pre"], t.loss_pre, rel_tol=1e-6)
        assert math.isclose(t.row["dloss_pred"], pred, rel_tol=1e-5)
        assert math.isclose(t.row["disc"], t.row["dloss_obs"] - pred, rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(t.row["step_norm"], math.sqrt(_dot(deltas, deltas)), rel_tol=1e-6)
        assert math.isfinite(t.row["rho"])
    last = truths[-1]  # its weights are still in the model: recompute L_post with a plain full forward
    with torch.no_grad():
        post = last.ctx.loss(tok_logp(model.eval(), last.ctx.batch.input_ids, 4)[0])
    # The instrument's forward encodes each prompt once per group: equal up to float32 rounding.
    assert math.isclose(last.row["loss_post"], post, rel_tol=1e-5, abs_tol=1e-8)


def test_grad_noise_matches_separately_computed_micro_gradients() -> None:
    torch.manual_seed(0)
    truths = drive(make_lora_model(), [GradNoise(beta=0.9)], steps=3, groups=6, groups_per_micro=2)
    s_vals, g2_vals = [], []
    for t in truths:
        ref = noise_from_micro_grads(torch.stack(t.micro_grads), b=2)
        assert math.isclose(t.row["noise_trace"], ref.noise_trace, rel_tol=1e-4)
        assert math.isclose(t.row["grad_sq"], ref.grad_sq, rel_tol=1e-3, abs_tol=1e-9)
        s_vals.append(ref.noise_trace)
        g2_vals.append(ref.grad_sq)
    # Smoothed B_simple = EWMA(Ŝ)/EWMA(|G|²) with bias correction, by hand for β = 0.9 over three steps.
    w = np.array([0.9**2, 0.9, 1.0]) * 0.1 / (1 - 0.9**3)
    expected = float(w @ s_vals) / float(w @ g2_vals)
    assert math.isclose(truths[-1].row["b_simple_ewma"], expected, rel_tol=1e-3)


def test_single_micro_batch_gives_nan_and_one_warning() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truths = drive(make_lora_model(), [GradNoise()], steps=3, groups=2, groups_per_micro=2)
    ours = [w for w in caught if "micro-batches" in str(w.message)]
    assert len(ours) == 1
    assert all(math.isnan(t.row["noise_trace"]) and math.isnan(t.row["b_simple_ewma"]) for t in truths)


def test_kl_to_start_is_positive_at_step_one_for_beta_zero_and_matches_reference_forward() -> None:
    torch.manual_seed(0)
    model = make_lora_model(random_b=False)  # peft's B = 0 start: the starting policy is the adapter-off model
    truths = drive(model, [PolicyShift(), StartPolicyKL()], steps=1, beta=0.0, lr=5e-2, clip=1.0)
    t = truths[0]
    assert t.ctx.batch.ref_logp is None
    with torch.no_grad():
        new = tok_logp(model.eval(), t.ctx.batch.input_ids, 4)[0]
        with model.disable_adapter():
            start = tok_logp(model, t.ctx.batch.input_ids, 4)[0]
    expected = kl_to_start(new, start, t.ctx.batch.completion_mask)
    assert expected > 0
    assert math.isclose(t.row["kl_start"], expected, rel_tol=1e-6)
    assert t.row["kl_realised"] > 0  # recorded although β = 0


def test_kl_to_start_with_a_nonzero_initial_adapter_swaps_theta0_back_and_restores() -> None:
    torch.manual_seed(0)
    model = make_lora_model(random_b=True)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    truths = drive(model, [StartPolicyKL()], steps=2, lr=5e-2, clip=1.0)
    final = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.equal(final[n], b) for n, b in zip(final, truths[-1].theta_next))  # weights restored
    with torch.no_grad():
        new = tok_logp(model.eval(), truths[-1].ctx.batch.input_ids, 4)[0]
        for n, p in model.named_parameters():
            if n in theta0:
                p.copy_(theta0[n])
        start = tok_logp(model, truths[-1].ctx.batch.input_ids, 4)[0]
    expected = kl_to_start(new, start, truths[-1].ctx.batch.completion_mask)
    # The instrument's forward folds LoRA into the weights: float32 rounding of a KL of ~6e-3 reaches a few 1e-6.
    assert math.isclose(truths[-1].row["kl_start"], expected, rel_tol=1e-5)


def test_lora_norms_report_per_module_arrays() -> None:
    torch.manual_seed(0)
    model = make_lora_model()
    inst = LoraNorms(model)
    truths = drive(model, [inst], steps=1)
    row = truths[0].row
    peft_layers = [m for _, m in model.named_modules() if hasattr(m, "get_delta_weight")]
    expected = [float(torch.linalg.matrix_norm(m.get_delta_weight("default").detach())) for m in peft_layers]
    np.testing.assert_allclose(row["lora_delta_norm"], expected, rtol=1e-5)
    raw_total = math.sqrt(_dot(truths[0].raw_grads, truths[0].raw_grads))
    assert math.isclose(float(np.sqrt((row["lora_grad_norm"] ** 2).sum())), raw_total, rel_tol=1e-6)


def test_registry_switches_and_every_declared_series_is_written() -> None:
    torch.manual_seed(0)
    model = make_lora_model()
    instruments = build_instruments(InstrumentationConfig(linearisation_every=1, linearisation_probe=4, discrepancy_every=1),
                                    model)
    truths = drive(model, instruments, steps=2)
    declared = {name for inst in instruments for name in inst.series()}
    for t in truths:
        assert declared <= set(t.row), declared - set(t.row)
        assert math.isfinite(t.row["instrument_time"]) and t.row["instrument_time"] > 0
    off = InstrumentationConfig(discrepancy=False, policy_shift=False, kl_start=False, grad_noise=False,
                                lora_norms=False, rollout_stats=False, timing=False, diversity=False)
    assert build_instruments(off, model) == []


def test_loss_pre_falls_back_to_an_eval_forward_when_dropout_is_active(monkeypatch) -> None:
    from types import SimpleNamespace

    from discrepancy.instrumentation import shared

    train_logp, eval_logp = torch.zeros(1, 1), torch.ones(1, 1)
    monkeypatch.setattr(shared, "batch_logprobs", lambda *a, **k: (eval_logp, None))  # the eval-mode forward

    def ctx(p: float) -> SimpleNamespace:
        batch = SimpleNamespace(input_ids=None, attention_mask=None, prompt_len=0, group_size=1, micro_batches=[[0]])
        return SimpleNamespace(model=torch.nn.Sequential(torch.nn.Dropout(p)), logp=train_logp, batch=batch,
                               share_prompts=True, loss=lambda lp: 1.0 if lp is train_logp else 2.0)

    assert shared.loss_at_theta_t(ctx(0.0)) == 1.0  # the training forward is deterministic: reuse its log-probs
    assert shared.loss_at_theta_t(ctx(0.1)) == 2.0  # train-mode dropout: pay for the deterministic forward


def test_a_failing_measurement_becomes_nan_with_one_warning_naming_it() -> None:
    from discrepancy.instrumentation.timing import InstrumentTime, StepClock, Timed

    class Broken(Instrument):
        def series(self) -> dict[str, str]:
            return {"broken_value": "never computed"}

        def on_after_optimizer(self, ctx: object) -> dict[str, float]:
            raise ValueError("boom")

    torch.manual_seed(0)
    clock = StepClock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truths = drive(make_lora_model(), [Timed("broken", Broken(), clock), InstrumentTime(clock)], steps=2)
    ours = [str(w.message) for w in caught if "boom" in str(w.message)]
    assert len(ours) == 1 and "broken" in ours[0]
    assert all(math.isnan(t.row["broken_value"]) and math.isfinite(t.row["instrument_time"]) for t in truths)
