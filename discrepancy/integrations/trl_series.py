"""The series TRL's GRPOTrainer already logs, under the run file's names, declared from the trainer's settings.

A run file declares every series before step 1, so the names TRL will log are derived from its config (β, the loss
type, the reward functions, vLLM, tools, the entropy bonus) rather than discovered at the first log. Where TRL's
quantity is the one `discrepancy train` records, it gets that series' name (``reward`` → ``reward_mean``,
``completions/mean_length`` → ``completion_length_mean``), so analyses and reports read both kinds of runs alike;
every other name keeps TRL's, with ``/`` (a group separator in HDF5) written as ``_``.
"""

from __future__ import annotations

from typing import Any

#: TRL name → (series name, description). TRL averages each over its logging window (``logging_steps``).
COMMON: dict[str, tuple[str, str]] = {
    "loss": ("loss", "TRL's training loss of the step (mean over the logging window)"),
    "grad_norm": ("grad_norm", "gradient norm before clipping, as TRL logs it"),
    "learning_rate": ("lr", "learning rate of the step"),
    "reward": ("reward_mean", "mean total reward of the step's completions (TRL 'reward')"),
    "reward_std": ("reward_std", "standard deviation of the total reward (TRL 'reward_std')"),
    "frac_reward_zero_std": ("frac_reward_zero_std", "share of prompt groups whose rewards all tie"),
    "completions/mean_length": ("completion_length_mean", "mean completion length in tokens"),
    "completions/min_length": ("completion_length_min", "shortest completion in tokens"),
    "completions/max_length": ("completion_length_max", "longest completion in tokens"),
    "completions/clipped_ratio": ("truncated_frac", "share of completions cut at max_completion_length"),
    "completions/mean_terminated_length": ("completions_mean_terminated_length",
                                           "mean length of completions that ended with EOS"),
    "completions/min_terminated_length": ("completions_min_terminated_length",
                                          "shortest completion that ended with EOS"),
    "completions/max_terminated_length": ("completions_max_terminated_length",
                                          "longest completion that ended with EOS"),
    "entropy": ("entropy", "token-mean policy entropy of the training forward at θ_t"),
    "num_tokens": ("num_tokens", "tokens seen so far (TRL's running count)"),
    "step_time": ("step_time", "seconds of TRL's training step (its own timer)"),
}
CLIPPED = {  # loss types with a clipped ratio
    "clip_ratio/low_mean": ("clip_ratio_low", "share of tokens clipped below 1−ε (negative advantage)"),
    "clip_ratio/low_min": ("clip_ratio_low_min", "smallest per-sequence share of tokens clipped below"),
    "clip_ratio/high_mean": ("clip_ratio_high", "share of tokens clipped above 1+ε (positive advantage)"),
    "clip_ratio/high_max": ("clip_ratio_high_max", "largest per-sequence share of tokens clipped above"),
    "clip_ratio/region_mean": ("clip_ratio_region", "share of tokens clipped either way"),
}
KL = {"kl": ("kl", "KL to the reference policy on the rollout tokens (k3), as TRL logs it")}
VLLM = {f"sampling/{what}/{stat}": (f"sampling_{what}_{stat}", f"{stat} of vLLM's {what.replace('_', ' ')}")
        for what, stats in (("sampling_logp_difference", ("mean", "max")),
                            ("importance_sampling_ratio", ("min", "mean", "max"))) for stat in stats}
ENTROPY_BONUS = {"entropy_coef": ("entropy_coef", "entropy bonus coefficient of the step"),
                 "policy_loss": ("policy_loss", "policy part of the loss (without the entropy bonus)")}
TOOLS = {"tools/call_frequency": ("tools_call_frequency", "tool calls per completion"),
         "tools/failure_frequency": ("tools_failure_frequency", "share of tool calls that failed")}
#: Keys Trainer logs once at the end (train_runtime, ...) or per epoch: not per-step series.
IGNORED = ("epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
           "train_loss", "train_tokens_per_second")


def trl_series(trainer: Any) -> dict[str, tuple[str, str]]:
    """TRL name → (series name, description) for every metric this trainer's settings make TRL log."""
    out = dict(COMMON)
    loss_type = getattr(trainer, "loss_type", "grpo")
    if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo"):
        out |= CLIPPED
    elif loss_type == "cispo":
        out["cispo_clip_ratio"] = ("cispo_clip_ratio", "share of tokens whose CISPO ratio was clipped")
    elif loss_type == "vespo":
        out["vespo/phi_seq_mean"] = ("vespo_phi_seq_mean", "mean VESPO sequence weight φ(w)")
    if getattr(trainer, "beta", 0.0) != 0.0:
        out |= KL
    if getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_importance_sampling_correction", False):
        out |= VLLM
    if getattr(trainer, "_entropy_bonus_enabled", False):
        out |= ENTROPY_BONUS
    if getattr(trainer, "aux_loss_enabled", False):
        out["aux_loss"] = ("aux_loss", "MoE load-balancing loss")
    if getattr(trainer, "tools", None):
        out |= TOOLS
    for name in getattr(trainer, "reward_func_names", []):
        out[f"rewards/{name}/mean"] = (f"reward_{safe_name(name)}", f"mean of reward function {name}")
        out[f"rewards/{name}/std"] = (f"reward_{safe_name(name)}_std", f"standard deviation of reward function {name}")
    return out


def safe_name(name: str) -> str:
    """A run-file record name: ``/`` (an HDF5 group separator) as ``_``, no leading dot."""
    return str(name).replace("/", "_").lstrip(".") or "_"
