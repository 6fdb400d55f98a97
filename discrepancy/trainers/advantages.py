"""Group-relative advantages (GRPO, docs/definitions.md §1) and the share of groups that carry no signal.

Â_i = (r_i − mean_group r) / (std r + ε), with the std taken over the group ("group", DeepSeekMath), over the whole
batch ("batch") or not at all ("none", Dr. GRPO 2503.20783). Conventions, chosen to match TRL 1.16:

- the std is the *unbiased* one (Bessel's correction, ``n − 1``), as TRL's ``nanstd``; ε = 1e-4 is added to it;
- the mean is always the group mean, also when the scale is the batch std;
- NaN (and ±inf) rewards mark unscorable completions: they are left out of the mean and the std of their group and
  get advantage 0, so they neither move the policy nor shift the baseline of the others.

One deliberate difference from TRL: a group whose finite rewards all tie gets advantages of exactly 0 (TRL gets
``±(rounding error)/ε``, up to ~1e-12 for rewards like 0.1), and a group with fewer than two finite rewards also gets
0 (TRL gets NaN from the n − 1 std, then zeroes it; the result is the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

SCALES = ("group", "batch", "none")


def _as_groups(rewards: Tensor | np.ndarray | Sequence[float], group_size: int) -> Tensor:
    """Rewards ``[N]`` as a float tensor ``[N / G, G]`` with non-finite values replaced by NaN."""
    r = torch.as_tensor(rewards)
    r = r.to(torch.float64 if r.dtype == torch.float64 else torch.float32)
    if r.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(r.shape)}")
    if group_size < 1 or r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards cannot be split into groups of {group_size}")
    r = torch.where(torch.isfinite(r), r, torch.nan)
    return r.view(-1, group_size)  # [P, G]


def _nan_std(x: Tensor, dim: int | None = None) -> Tensor:
    """Unbiased std ignoring NaN (NaN where fewer than two values); written out because torch has no nanstd."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    sq = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    # n − 1 in the denominator (TRL's convention); NaN, not inf, when n < 2.
    var = torch.where(count > 1, sq / (count - 1).clamp(min=1), torch.nan)
    return var.sqrt() if dim is not None else var.sqrt().reshape(())


def _tied(groups: Tensor) -> Tensor:
    """Per group: True when its finite rewards all tie (or it has fewer than two) ``[P]``."""
    big = torch.finfo(groups.dtype).max
    hi = torch.where(torch.isnan(groups), -big, groups).max(dim=1).values  # [P]
    lo = torch.where(torch.isnan(groups), big, groups).min(dim=1).values  # [P]
    finite = (~torch.isnan(groups)).sum(dim=1)  # [P]
    return (hi == lo) | (finite < 2)


def group_advantages(
    rewards: Tensor | np.ndarray | Sequence[float], group_size: int, *, scale: str = "group", eps: float = 1e-4
) -> Tensor:
    """Advantages ``[N]`` for rewards ``[N]`` ordered group by group (``N = num_prompts · group_size``).

    ``scale``: "group" divides by each group's std, "batch" by the std of all finite rewards, "none" only centres.
    Returns a float tensor (float64 for float64 input, else float32) on the rewards' device.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    groups = _as_groups(rewards, group_size)  # [P, G]
    centred = groups - torch.nanmean(groups, dim=1, keepdim=True)  # [P, G]
    if scale == "group":
        adv = centred / (_nan_std(groups, dim=1) + eps)  # [P, G]
    elif scale == "batch":
        adv = centred / (_nan_std(groups.reshape(-1)) + eps)  # [P, G]
    else:
        adv = centred
    adv = torch.where(_tied(groups).unsqueeze(1), 0.0, adv)  # [P, G]
    # NaN rewards (and a NaN batch std when fewer than two rewards are finite) give advantage 0.
    return torch.nan_to_num(adv, nan=0.0).reshape(-1)  # [N]


def tied_groups(rewards: Tensor | np.ndarray | Sequence[float], group_size: int) -> np.ndarray:
    """Per group ``[N / G]``: True when its finite rewards all tie (or it has fewer than two): no learning signal."""
    return _tied(_as_groups(rewards, group_size)).cpu().numpy()


def frac_reward_zero_std(rewards: Tensor | np.ndarray | Sequence[float], group_size: int) -> float:
    """Share of groups whose finite rewards all tie (fewer than two finite rewards counts as a tie).

    Such groups carry no learning signal. Unlike TRL's metric of the same name, this counts groups by the tie itself,
    not by the scale chosen for the advantages, so it means the same with every ``scale``.
    """
    return float(_tied(_as_groups(rewards, group_size)).double().mean())
