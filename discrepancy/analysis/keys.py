"""Which series a summary leads with (the key series), and why a logged loss is not among them.

The overview figure, the report's first screen, summary.json and the terminal all read the key series from here, so
one rule decides what a reader is told first. A log that holds none of them (a one-column CSV of sales) is summarised
by its first searched series instead (``summary_names``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the result type only: pipeline reads the notes below, so no import at run time
    from discrepancy.analysis.pipeline import AnalysisResult

KEY_SERIES = ("reward_mean", "reward_correctness", "reward_format", "kl", "entropy", "completion_length_mean")
# Another trainer's log names the same quantities its own way: TRL's trainer_state.json or TensorBoard log holds
# ``reward``, ``rewards/<function>/mean`` and ``completions/mean_length``. A key series absent under its own name is
# looked up under these (exact names first, then a pattern over the reward functions' names).
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "reward_mean": ("reward", "rewards_mean"),
    "reward_correctness": (r"re:^rewards?[/_].*(correct|accura).*mean$",),
    "reward_format": (r"re:^rewards?[/_].*format.*mean$",),
    "completion_length_mean": ("completions/mean_length", "completions_mean_length"),
}
# A log without any reward (supervised fine-tuning, pre-training: an HF Trainer's trainer_state.json) has its loss
# as the curve a reader looks at first: there the training and evaluation losses lead the key series. Beside a
# reward they follow it, unless the log is a policy-gradient run's (``POLICY_GRADIENT``, ``surrogate_loss``). Foreign
# logs name them so whatever their kind (``interop.source.HF_PREFIXES``: W&B's train/loss and eval/loss are loss and
# eval_loss).
SUPERVISED_SERIES = ("loss", "eval_loss")
# A GRPO / PPO run logs its surrogate objective as ``loss``: on-policy its value is β·KL (the policy part is a mean
# of mean-centred advantages, 0), so it says nothing of what the model learned and is no key series. Such a run is
# told by what only policy-gradient trainers log: KL to the reference, the ratio and its clipping, groups with
# tied rewards, completion lengths (this project's runs, TRL's GRPOTrainer in any of its log formats).
POLICY_GRADIENT = re.compile(r"^(kl|frac_reward_zero_std|ratio_mean)$|^clip_ratio|^completions?[/_]")
# A TRL log with only loss, reward and grad_norm names none of those: its loss is then told by its values. A
# supervised loss (a cross-entropy) is positive and far from 0; a policy-gradient surrogate beside a reward sits
# around 0 (β·KL plus round-off) and changes sign. Below this magnitude, with both signs, it is no training loss.
SURROGATE_MAX = 0.01


def surrogate_loss(y: pd.Series) -> bool:
    """Whether a logged loss is a policy-gradient surrogate by its values: every finite |value| ≤ SURROGATE_MAX and
    both signs present (a cross-entropy is never negative)."""
    v = y.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size and np.abs(v).max() <= SURROGATE_MAX and v.min() < 0 < v.max())


def _usable(res: AnalysisResult, name: str) -> bool:
    """A logged series with a finite value that is not constant (a constant one is a note, not a key)."""
    return name in res.series.columns and name not in res.constant and np.isfinite(res.series[name]).sum() > 0


def _rewarded(res: AnalysisResult) -> bool:
    return any(key_of(c).startswith("reward") and _usable(res, c) for c in res.series.columns)


def loss_left_out(res: AnalysisResult) -> str:
    """Why the log's ``loss`` is no key series beside its reward ('' when it is one, or the log has no loss):
    a policy-gradient run's surrogate objective, told by the run's other series or by the loss's own values."""
    if not _usable(res, "loss") or not _rewarded(res):
        return ""
    if any(POLICY_GRADIENT.search(c) for c in res.series.columns):
        return ("loss left out of the key series: this is a policy-gradient run (it logs KL, ratios or completion "
                "statistics), whose loss is the surrogate objective (β·KL on-policy), not a measure of what the "
                "model learned; it is drawn with the losses")
    if surrogate_loss(res.series["loss"]):
        return (f"loss left out of the key series: beside a reward it stays within ±{SURROGATE_MAX:g} and changes "
                "sign, as a policy-gradient surrogate objective does (a supervised cross-entropy is positive); it is "
                "drawn with the losses")
    return ""


def key_names(res: AnalysisResult, keys: tuple[str, ...] = KEY_SERIES) -> list[str]:
    """The run's own name of each of ``keys`` it logged with a finite, non-constant value (``KEY_ALIASES`` when
    a foreign log names it otherwise), in the order of ``keys``; when ``keys`` name rewards, ``SUPERVISED_SERIES``
    lead when the log has no reward (its loss is then what a reader looks at first) and follow the rewards' keys
    when it has one and its loss is no policy-gradient surrogate (``loss_left_out``): a supervised loss beside a
    reward is half of what happened."""
    cols = list(res.series.columns)
    out: list[str] = []
    rewarded = any(key.startswith("reward") and key in keys for key in KEY_SERIES)
    if rewarded and not _rewarded(res):
        keys = (*SUPERVISED_SERIES, *keys)  # no reward logged: the losses lead
    elif rewarded and not any(POLICY_GRADIENT.search(c) for c in cols):
        surrogate = {n for n in SUPERVISED_SERIES if n in res.series and surrogate_loss(res.series[n])}
        keys = (*keys, *(n for n in SUPERVISED_SERIES if n not in surrogate))  # a training loss beside the reward
    for key in keys:
        for alias in (key, *KEY_ALIASES.get(key, ())):
            found = [c for c in cols if re.search(alias[3:], c)] if alias.startswith("re:") else [alias]
            name = next((c for c in found if _usable(res, c) and c not in out), None)
            if name is not None:
                out.append(name)
                break
    return out


def summary_names(res: AnalysisResult, keys: tuple[str, ...] = KEY_SERIES, limit: int = 6) -> list[str]:
    """The series a summary is about: ``key_names`` when the log has any, else its first ``limit`` searched series
    (a CSV of sales has no key series, yet its one series is what happened)."""
    present = key_names(res, keys)
    if present:
        return present
    searched = res.signals.loc[~res.signals["jump_fraction"].isna(), "signal"]
    return list(searched[:limit])


def key_of(name: str) -> str:
    """The key series ``name`` stands for (itself when it is none's alias): ``reward`` → ``reward_mean``."""
    for key, aliases in KEY_ALIASES.items():
        if any(re.search(a[3:], name) if a.startswith("re:") else a == name for a in aliases):
            return key
    return name
