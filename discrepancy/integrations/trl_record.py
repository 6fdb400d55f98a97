"""What a TRL run file declares besides the step series: where its base model is, its LoRA settings, its config.

`discrepancy llc` and `probe` rebuild the model from the meta keys `modeling.from_run` reads (``base_model_path``,
``lora_*``). They are written only when the rebuild would give the trained model back: a base the run can point at
(a local folder, or a model object saved next to the run as ``<run>.base/``) and a LoRA config that
`modeling.lora.attach_lora` reproduces (plain LoRA: no rsLoRA, DoRA, bias, extra trained modules or per-layer
ranks). Otherwise the keys are left out, ``model_rebuild`` says why, and those commands refuse in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from discrepancy.modeling.from_run import base_dir_for, run_model_meta
from discrepancy.modeling.lora import ALL_LINEAR, LoraSettings

#: Series `discrepancy train` records that a TRL step does not expose (docs/trl.md): declared, NaN every step.
UNMEASURED: dict[str, str] = {
    "sample_time": "seconds sampling; NaN under TRL: it generates and scores in one call (see generation_time)",
    "score_time": "seconds scoring; NaN under TRL: it generates and scores in one call (see generation_time)",
}
#: Why N_t (`Linearisation`) is not measured with TRL's default gradient checkpointing: TRL makes the input embeddings
#: require grad through a forward hook, which `torch.func.jvp` refuses inside its transform.
LIN_CHECKPOINTING = ("N_t (linearisation error); NaN under TRL with gradient_checkpointing=True: TRL's input-gradient "
                     "hook cannot run inside torch.func.jvp (set gradient_checkpointing=False to measure it)")


def unmeasured(cfg: Any, args: Any) -> tuple[dict[str, str], Any]:
    """(series declared and left NaN, the instrument config without what cannot run under TRL's ``args``)."""
    out = dict(UNMEASURED)
    if getattr(cfg, "discrepancy_groups", "all") != "all":  # TRL's loss has no per-micro-batch form: whole batch
        cfg = dataclasses.replace(cfg, discrepancy_groups="all")
    if getattr(cfg, "linearisation_every", 0) > 0 and getattr(args, "gradient_checkpointing", False):
        out["lin_error"] = LIN_CHECKPOINTING
        cfg = dataclasses.replace(cfg, linearisation_every=0)
    return out, cfg


#: How the gradient-noise series read under TRL: its micro-batches are shuffled completions, not whole groups, so
#: `GradNoise`'s b (groups per micro-batch) counts completions / G. ``grouped``: the step's rows are whole groups
#: (TRL's default, steps_per_generation = gradient_accumulation_steps); otherwise b counts completions.
def noise_unit(grouped: bool) -> dict[str, str]:
    """Descriptions of the noise series in the unit `GradNoise` will use for this run."""
    unit = "groups of G completions (b = completions per micro-batch / G)" if grouped else "completions"
    return {
        "noise_trace": f"Ŝ: gradient covariance trace per example, examples in {unit}; TRL's micro-batches are "
                       "shuffled completions (raw, this step)",
        "b_simple": f"B_simple = Ŝ/|G|² in {unit} (raw, this step)",
        "b_simple_ewma": f"B_simple = EWMA(Ŝ)/EWMA(|G|²), in {unit}",
        "noise_snr": "B/B_simple: examples per step over the smoothed noise scale (the same in either unit)",
    }


#: Series this integration adds from TRL's step.
EXTRA = {
    "advantage_abs_mean": "mean |advantage| of the step's completions",
    "ratio_mean": "token-mean importance ratio π_θ/π_old of the training forward",
    "reward_unusable_frac": "share of completions whose every reward function returned None/NaN",
    "temperature": "sampling temperature of the step",
    "beta": "KL weight β of the step",
    "generation_time": "seconds in TRL's generation and scoring of the step's completions (reference forward too)",
}


def lora_rebuild(peft_config: Any) -> tuple[LoraSettings | None, str]:
    """(settings, "") when `attach_lora` rebuilds this peft LoRA config exactly, else (None, why not)."""
    if peft_config is None:
        return None, "no LoRA adapter (pass peft_config=LoraConfig(...)): no snapshots to rebuild a model from"
    why = [name for name, bad in (
        ("use_rslora", getattr(peft_config, "use_rslora", False)),
        ("use_dora", getattr(peft_config, "use_dora", False)),
        ("bias", getattr(peft_config, "bias", "none") != "none"),
        ("modules_to_save", bool(getattr(peft_config, "modules_to_save", None))),
        ("rank_pattern", bool(getattr(peft_config, "rank_pattern", None))),
        ("alpha_pattern", bool(getattr(peft_config, "alpha_pattern", None))),
        ("layers_to_transform", getattr(peft_config, "layers_to_transform", None) is not None),
    ) if bad]
    if type(peft_config).__name__ != "LoraConfig":
        why.insert(0, type(peft_config).__name__)
    if why:
        return None, f"its adapter uses {', '.join(why)}, which discrepancy's LoRA rebuild does not reproduce"
    targets = peft_config.target_modules
    targets = (ALL_LINEAR,) if targets == ALL_LINEAR else tuple(sorted([targets] if isinstance(targets, str)
                                                                      else targets))
    return LoraSettings(int(peft_config.r), float(peft_config.lora_alpha), targets,
                        float(peft_config.lora_dropout)), ""


def local_folder(model: Any) -> Path | None:
    """The local folder a model was loaded from, when it is one (a model id of the hub is not)."""
    name = model if isinstance(model, (str, Path)) else getattr(getattr(model, "config", None), "_name_or_path", "")
    path = Path(str(name)).expanduser() if name else None
    return path.resolve() if path is not None and (path / "config.json").is_file() else None


def save_base_model(model: torch.nn.Module, run_path: Path) -> Path:
    """Save the base model's weights as ``<run>.base/`` before TRL wraps it in the adapter; the folder's name
    relative to the run's folder (run and base move together). The tokenizer follows (`save_base_tokenizer`)."""
    folder = base_dir_for(run_path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    return Path(folder.name)


def save_base_tokenizer(tokenizer: Any, run_path: Path) -> None:
    """The tokenizer next to the saved base, where `modeling.local.load_local_model` reads it."""
    from discrepancy.modeling.local import TOKENIZER_SUBDIR

    tokenizer.save_pretrained(str(base_dir_for(run_path) / TOKENIZER_SUBDIR))


def model_meta(base: Path | None, lora: LoraSettings | None, why_not: str, dtype: torch.dtype) -> dict[str, Any]:
    """The meta entries `modeling.from_run` needs, or ``model_rebuild`` saying why there are none."""
    if lora is None or base is None:
        reason = why_not or ("its base model is neither a local folder nor saved next to the run (pass a model "
                             "object, or a local folder, to GRPOTrainer)")
        return {"model_rebuild": f"the model of this TRL run cannot be rebuilt: {reason}"}
    return {**run_model_meta("local", base, lora, dtype), "model_rebuild": "ok"}


def config_toml(trainer: Any, lora: LoraSettings | None) -> str:
    """The run's config as TOML: the recipe tables a report reads ([grpo], [optim], [schedule], [lora]) from TRL's
    settings, and every scalar of GRPOConfig under [trl]."""
    args = trainer.args
    tables: dict[str, dict[str, Any]] = {
        "grpo": {"num_prompts": int(args.generation_batch_size // trainer.num_generations),
                 "group_size": int(trainer.num_generations), "beta": float(trainer.beta),
                 "inner_iterations": int(trainer.num_iterations), "loss_type": str(trainer.loss_type)},
        "optim": {"lr": float(args.learning_rate)},
        "schedule": {"temperature": float(args.temperature)},
        "trl": {k: v for k, v in sorted(args.to_dict().items()) if isinstance(v, (bool, int, float, str))},
    }
    if lora is not None:
        tables["lora"] = {"rank": lora.rank, "alpha": lora.alpha, "target_modules": list(lora.target_modules),
                          "dropout": lora.dropout}
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {_toml(v)}\n" for key, v in table.items())
                     for name, table in tables.items())


def _toml(value: Any) -> str:
    """One TOML value. Hand-written for flat tables of scalars and string lists: JSON's string escapes are valid
    TOML basic strings, and the project's config writer serialises its own dataclasses only."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
