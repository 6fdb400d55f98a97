"""Statistics of one GRPO step for its metrics row: the loss stats of the micro-batches combined, and the reward,
length and entropy statistics of the rollouts."""

from __future__ import annotations

import math

import numpy as np
import torch

from discrepancy.trainers.advantages import frac_reward_zero_std


#: Columns of the sample table every run has; a reward component of the same name gets ``reward_<name>`` instead.
SAMPLE_BASE_FIELDS = ("reward", "advantage", "length")


#: Self-assessment calibration of a run with a critique reward (`trainers.critique.critique_calibration`).
CRITIQUE_SERIES = {
    "critique_share": "critique: share of the trained completions with a readable self-assessment",
    "critique_agreement": "critique: share, of those with a verdict, whose self-assessment (≥ 0.5 = correct) agrees "
                          "with the verifier",
    "critique_brier": "critique: mean (p − v)² of self-assessment p and verdict v (0 = perfectly calibrated)",
    "critique_confidence": "critique: mean self-assessment p (above critique_accuracy = overconfident)",
    "critique_accuracy": "critique: mean verdict v of the completions with a self-assessment",
}


def sample_column(reward_name: str) -> str:
    """The sample-table column of reward component ``reward_name``: its name, unless a base column has it (the
    ``length`` reward beside the completion length) or it is one of the table's own fields; then ``reward_<name>``."""
    taken = (*SAMPLE_BASE_FIELDS, "step", "prompt_id", "prompt", "completion")
    return f"reward_{reward_name}" if reward_name in taken else reward_name


def loss_stats(stats_rows: list[tuple[int, dict[str, float]]], loss_pre: float) -> dict[str, float]:
    """Loss stats of the micro-batches combined (token-weighted means of the per-token stats)."""
    tokens = sum(s["num_tokens"] for _, s in stats_rows) or 1.0
    out = {"loss": loss_pre}
    for key in ("kl", "clip_ratio_low", "clip_ratio_high", "clip_ratio_region", "ratio_mean"):
        out[key] = sum(s[key] * s["num_tokens"] for _, s in stats_rows) / tokens
    n = sum(rows for rows, _ in stats_rows)
    out["policy_loss"] = sum(s["policy_loss"] * rows / n for rows, s in stats_rows)
    return out


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN when there are none), scaled by the largest magnitude first so that values
    near the float range (a reward of 1e308) do not overflow the sum."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return math.nan
    scale = float(np.abs(finite).max()) or 1.0
    return float((finite / scale).mean() * scale)


def reward_metrics(total: np.ndarray, components: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean and std of the weighted total and the mean of each component, over the finite values."""
    r = np.asarray(total)  # as given: the trained batch's rewards are float32, their std is taken as such
    out = {"reward_mean": finite_mean(r), "reward_std": float(np.nanstd(r)) if np.isfinite(r).any() else math.nan}
    out.update({f"reward_{name}": finite_mean(values) for name, values in components.items()})
    return out


def rollout_metrics(cmask: torch.Tensor, truncated: torch.Tensor, rewards: torch.Tensor, adv: torch.Tensor,
                     components: dict[str, np.ndarray], entropy: torch.Tensor | None, loss_mask: torch.Tensor | None,
                     group_size: int) -> dict[str, float]:
    """Reward, length and entropy statistics of the step's rollouts."""
    lengths = cmask.sum(1).float()  # [N]
    r = rewards.detach().cpu().numpy()
    out = {
        **reward_metrics(r, components),
        "frac_reward_zero_std": frac_reward_zero_std(rewards, group_size),
        "advantage_abs_mean": float(adv.abs().mean()),
        "completion_length_mean": float(lengths.mean()),
        "completion_length_min": float(lengths.min()),
        "completion_length_max": float(lengths.max()),
        "truncated_frac": float(truncated.float().mean()),
        "reward_unusable_frac": float((~np.isfinite(r)).mean()),
    }
    if entropy is not None and loss_mask is not None:
        m = loss_mask.float()
        out["entropy"] = float((entropy * m).sum() / m.sum().clamp(min=1))
    return out
