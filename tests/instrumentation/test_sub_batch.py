"""D_t on a sub-batch of whole micro-batches (docs/definitions.md §2): which rows, exact for them, unbiased for the
batch, equal to the full-batch measurement when the sub-batch is the batch, and the config's one-line errors."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from discrepancy.errors import ConfigError
from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.discrepancy_operator import DiscrepancyOperator
from discrepancy.instrumentation.hooks import HookRunner, Instrument, StepBatch, StepContext
from discrepancy.instrumentation.policy_shift import PolicyShift
from discrepancy.instrumentation.shared import choose_sub_batch, with_shared
from discrepancy.trainers.grpo import grpo_loss

from instr_models import make_lora_model, tok_logp

PLEN, TLEN, G = 4, 6, 2


def _batch(groups: int, per_micro: int) -> StepBatch:
    """Row layout only (the chooser reads micro-batches and the group size)."""
    micro = [list(range(g0 * G, min(groups, g0 + per_micro) * G)) for g0 in range(0, groups, per_micro)]
    n = groups * G
    z = torch.zeros(n, 1)
    return StepBatch(input_ids=z, attention_mask=z, completion_mask=z, old_logp=z, ref_logp=None,
                     advantages=torch.zeros(n), group_size=G, micro_batches=micro,
                     micro_weights=[len(r) / n for r in micro])


@pytest.mark.parametrize(("groups", "per_micro", "spec", "m"), [(6, 2, 0, 1), (8, 2, 4, 2), (6, 2, 4, 2), (5, 2, 0, 1)])
def test_rotation_visits_every_micro_batch_equally_often(groups, per_micro, spec, m) -> None:
    batch = _batch(groups, per_micro)
    k_all = len(batch.micro_batches)
    seen: Counter[int] = Counter()
    for step in range(1, k_all + 1):  # K steps make a whole number of rotations for every m
        sub = choose_sub_batch(batch, step, spec)
        assert len(sub.micro) == m and not sub.whole and sub.scale == k_all / m
        assert sub.rows == [r for k in sub.micro for r in batch.micro_batches[k]]
        seen.update(sub.micro)
    assert set(seen) == set(range(k_all)) and len(set(seen.values())) == 1  # each one, equally often


def test_the_whole_batch_when_asked_for_or_when_it_cannot_be_split() -> None:
    batch = _batch(4, 2)
    for sub in (choose_sub_batch(batch, 3, None), choose_sub_batch(batch, 3, 4), choose_sub_batch(batch, 3, 99),
                choose_sub_batch(batch, 3, 0, can_split=False), choose_sub_batch(_batch(2, 2), 3, 0)):
        assert sub.whole and sub.scale == 1.0 and sub.rows == sorted(sub.rows) == list(range(len(sub.rows)))


# ---- a GRPO-shaped step with a loss that has its per-micro-batch form, as the trainer's ---------------------------


@dataclass
class _Loss:
    """Full loss = Σ_k w_k loss_k, with `micro` (what lets the provider measure a sub-batch)."""

    batch: StepBatch

    def micro(self, lp: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, Any]:
        b = self.batch
        return grpo_loss(lp, b.old_logp[rows], None, b.advantages[rows], b.completion_mask[rows], loss_type="bnpo",
                         beta=0.0)

    def __call__(self, lp: torch.Tensor) -> float:
        b = self.batch
        return sum(w * float(self.micro(lp[r], r)[0]) for r, w in zip(b.micro_batches, b.micro_weights))


def _one_step(step: int, groups: int | str, per_micro: int = 1, n_groups: int = 3,
              silent: int | None = None) -> dict[str, Any]:
    """One AdamW step of a fresh tiny LoRA model on a fixed batch, hooks called as the trainer calls them, with
    ``ctx.step = step`` (which picks the rotation). Token counts differ per row, so bnpo's w_k are unequal.
    ``silent``: a group whose advantages are all 0 (no gradient at all, since β = 0)."""
    torch.manual_seed(0)  # peft draws A from the global generator: the same model every call
    model = make_lora_model()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=2e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(5)
    n = n_groups * G
    ids = torch.randint(8, 90, (n, PLEN + TLEN), generator=gen)
    ids[:, :PLEN] = ids[::G, :PLEN].repeat_interleave(G, 0)  # one prompt per group
    cmask = (torch.arange(TLEN)[None, :] < torch.randint(2, TLEN + 1, (n,), generator=gen)[:, None]).long()
    adv = torch.randn(n, generator=gen)
    if silent is not None:
        adv[silent * G : (silent + 1) * G] = 0.0
    micro = [list(range(g0 * G, min(n_groups, g0 + per_micro) * G)) for g0 in range(0, n_groups, per_micro)]
    tokens = float(cmask.sum())
    batch = StepBatch(input_ids=ids, attention_mask=torch.ones_like(ids), completion_mask=cmask,
                      old_logp=torch.zeros(n, TLEN), ref_logp=None, advantages=adv, group_size=G, micro_batches=micro,
                      micro_weights=[float(cmask[r].sum()) / tokens for r in micro])
    ctx = StepContext(step=step, iteration=0, model=model, params=params, batch=batch, loss=_Loss(batch))
    runner = HookRunner(with_shared([DiscrepancyOperator(), PolicyShift()], share_prompts=False, groups=groups))
    row: dict[str, Any] = {}
    own_grads = []
    opt.zero_grad(set_to_none=True)
    logp_all, ent_all = torch.zeros(n, TLEN), torch.zeros(n, TLEN)
    for k, (rows, w) in enumerate(zip(micro, batch.micro_weights)):
        lp, ent = tok_logp(model, ids[rows], PLEN)
        batch.old_logp[rows] = lp.detach()
        loss_k = ctx.loss.micro(lp, rows)[0]
        own_grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss_k, list(params.values()),
                                                                             retain_graph=True)]))
        (w * loss_k).backward()
        logp_all[rows], ent_all[rows] = lp.detach(), ent
        row.update(runner.on_micro_backward(ctx, k))
    ctx.logp, ctx.entropy = logp_all, ent_all
    theta_t = torch.cat([p.detach().flatten() for p in params.values()])
    torch.nn.utils.clip_grad_norm_(list(params.values()), 0.05)
    row.update(runner.on_before_optimizer(ctx))
    opt.step()
    row.update(runner.on_after_optimizer(ctx))
    with torch.no_grad():
        logp_next = tok_logp(model.eval(), ids, PLEN)[0]  # a plain forward: no prompt sharing, no folding
    delta = torch.cat([p.detach().flatten() for p in params.values()]) - theta_t
    return {"row": row, "ctx": ctx, "own": own_grads, "delta": delta, "logp_pre": logp_all, "logp_post": logp_next}


def _independent_disc(s: dict[str, Any], k: int) -> float:
    """D of micro-batch k scaled to the batch, K·w_k·(loss_k(θ_{t+1}) − loss_k(θ_t) − ∇loss_k·Δθ), from the
    step's own autograd gradients and a plain forward (a second implementation of the sub-batch D_t)."""
    b, loss = s["ctx"].batch, s["ctx"].loss
    rows, w = b.micro_batches[k], b.micro_weights[k]
    pre = float(loss.micro(s["logp_pre"][rows], rows)[0])
    post = float(loss.micro(s["logp_post"][rows], rows)[0])
    pred = float(s["own"][k].double() @ s["delta"].double())
    return len(b.micro_batches) * w * (post - pre - pred)


def test_sub_batch_disc_is_exact_for_its_rows_and_averages_to_the_batch_over_a_rotation() -> None:
    full = _one_step(1, "all")
    full_row = full["row"]
    assert full_row["discrepancy_rows"] == 6
    subs = [_one_step(step, "micro") for step in (1, 2, 3)]  # K = 3: steps 1..3 measure micro-batches 0, 1, 2
    for k, s in enumerate(subs):
        assert s["row"]["discrepancy_micro"] == k and s["row"]["discrepancy_rows"] == 2
        assert math.isclose(s["row"]["disc"], _independent_disc(s, k), rel_tol=1e-3, abs_tol=1e-8)
        assert s["row"]["step_norm"] == full_row["step_norm"]  # the same step whatever is measured
    # L_B = Σ_k w_k loss_k and g_B = Σ_k w_k g_k: the K scaled sub-batch values average to the batch's exactly
    # (up to float32 rounding of the forwards); the 3 sub-batch values differ from each other and from it.
    for name in ("loss_pre", "loss_post", "dloss_pred", "disc"):
        values = [s["row"][name] for s in subs]
        assert math.isclose(float(np.mean(values)), full_row[name], rel_tol=1e-4, abs_tol=1e-7), name
    disc = [s["row"]["disc"] for s in subs]
    assert min(abs(a - b) for a, b in zip(disc, disc[1:])) > 1e-4 * max(map(abs, disc))
    assert math.isfinite(full_row["kl_realised"]) and all(math.isfinite(s["row"]["kl_realised"]) for s in subs)


def test_a_sub_batch_without_gradient_has_no_direction_but_a_discrepancy() -> None:
    quiet, other = _one_step(1, "micro", silent=0), _one_step(2, "micro", silent=0)  # micro-batch 0, then 1
    assert quiet["row"]["dloss_pred"] == 0.0 and math.isnan(quiet["row"]["cos_grad_step"])
    assert math.isnan(quiet["row"]["rho"]) and math.isfinite(quiet["row"]["disc"])
    assert math.isfinite(other["row"]["cos_grad_step"]) and other["row"]["dloss_pred"] != 0.0


def test_the_whole_batch_as_sub_batch_gives_the_full_batch_measurement_exactly() -> None:
    a, b = _one_step(1, "micro", per_micro=3), _one_step(1, "all", per_micro=3)  # K = 1: the sub-batch is the batch
    assert a["row"]["discrepancy_rows"] == 6
    assert a["row"].keys() == b["row"].keys()
    assert all(a["row"][k] == b["row"][k] or (math.isnan(a["row"][k]) and math.isnan(b["row"][k]))
               for k in a["row"])


# ---- the trainer: one micro-batch of two per step, against a second full-batch implementation on the same step --


class _FullBatchDisc(Instrument):
    """Test-only second implementation of the full-batch D_t on the trainer's own step: L_B before and after from a
    plain no-grad forward of every row (no folding, no prompt sharing), ΔL_pred from the full unclipped gradient."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_micro_backward(self, ctx: StepContext, k: int) -> None:
        if k == len(ctx.batch.micro_batches) - 1:
            self._grad = torch.cat([p.grad.detach().flatten() for p in ctx.params.values()]).double()

    def _loss(self, ctx: StepContext) -> float:
        from discrepancy.modeling.logprobs import batch_logprobs

        b = ctx.batch
        logp = batch_logprobs(ctx.model, b.input_ids, b.attention_mask, b.prompt_len, b.group_size, share=False,
                              with_entropy=False)[0]
        return float(ctx.loss(logp))

    def on_before_optimizer(self, ctx: StepContext) -> None:
        self._theta = torch.cat([p.detach().flatten() for p in ctx.params.values()]).double()
        self._pre = self._loss(ctx)

    def on_after_optimizer(self, ctx: StepContext) -> None:
        delta = torch.cat([p.detach().flatten() for p in ctx.params.values()]).double() - self._theta
        self.values.append(self._loss(ctx) - self._pre - float(self._grad @ delta))


def test_trainer_sub_batch_disc_matches_the_full_batch_on_average(fast_train_config, tmp_path, monkeypatch) -> None:
    import discrepancy.trainers.run as run_mod
    from discrepancy.config import apply_overrides
    from discrepancy.instrumentation.registry import build_instruments
    from discrepancy.runfile import open_run

    steps = 24
    cfg = apply_overrides(fast_train_config, [f"run.steps={steps}", "sft.steps=2", "run.snapshot_every=100",
                                              'rewards.names=["instr_models:digit_reward"]', "rewards.weights=[1.0]",
                                              "early_warning.enabled=false"])
    icfg = InstrumentationConfig(kl_start=False, lora_norms=False, rollout_stats=False, diversity=False,
                                 grad_noise=False, timing=False, discrepancy_every=1)
    full = _FullBatchDisc()
    instruments: list[Any] = []
    attach = run_mod.attach_lora

    def attach_and_instrument(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = attach(*args, **kwargs)
        instruments.extend([*build_instruments(icfg, model), full])
        return model

    monkeypatch.setattr(run_mod, "attach_lora", attach_and_instrument)
    run_mod.train_run(cfg, tmp_path / "run.h5", instruments=instruments)
    with open_run(tmp_path / "run.h5") as run:
        s = run.series()
    assert s["discrepancy_rows"].tolist() == [4.0] * steps  # one prompt group of G = 4 out of two
    assert s["discrepancy_micro"].tolist() == [float((t - 1) % 2) for t in range(1, steps + 1)]
    diff = s["disc"].to_numpy() - np.array(full.values)  # [steps] sub-batch minus full batch, same step
    assert np.isfinite(diff).all() and np.abs(full.values).max() > 0
    assert np.abs(diff).max() > 1e-3 * np.abs(full.values).max()  # really another measurement per step
    # Over the rotation the sub-batch D_t is unbiased for the batch's: the mean paired difference sits within
    # 4 standard errors of 0 (a 6e-5 chance of failing for normal errors were the estimator unbiased).
    se = diff.std(ddof=1) / math.sqrt(steps)
    assert abs(diff.mean()) <= 4 * se, (diff.mean(), se)


# ---- configuration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "some", [1]])
def test_bad_discrepancy_groups_are_one_line(value) -> None:
    with pytest.raises(ConfigError, match=r"^config key 'instruments.discrepancy_groups' must be \"micro\", \"all\" "
                                          r"or a number of prompt groups ≥ 1, got ") as err:
        InstrumentationConfig(discrepancy_groups=value)
    assert "\n" not in str(err.value)
    assert InstrumentationConfig(discrepancy_groups=3).discrepancy_groups == 3


@pytest.mark.parametrize("key", ["instruments.discrepancy_groups", "instruments.discrepancy_every"])
def test_bad_post_step_settings_on_the_command_line_exit_in_one_line(tmp_path, key) -> None:
    from discrepancy.cli import app

    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run.h5"), "--steps", "1",
                                      "--set", f"{key}=0"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "run.h5").exists()
