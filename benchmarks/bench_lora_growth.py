"""Dynamic LoRA: what a growth changes at the moment it happens, and what a growing run does around it.

    .venv/bin/python benchmarks/bench_lora_growth.py [--steps 60] [--grow-at 30] [--seeds 0 1 2]
        # → benchmarks/results/lora_growth.{md,json}

1. Logits at growth. An adapter allocated at rank 8, active rank 4, trained 5 AdamW steps on next-token loss (so B is
   non-zero), then grown to 8 (`modeling.lora_growth.grow_rank`). Max |Δ logit| before vs after through each forward
   the trainer uses: peft's own, the fused LoRA forward (training) and the folded one (sampling, measurements). On
   the embedded tiny model at the default recipe's size and on two models built from configs with a byte-level BPE
   tokenizer trained on the shipped GSM8K sample: a Llama (SwiGLU) and a GPT-2 (Conv1D layers, peft's
   fan_in_fan_out).
2. A growing run next to its twin. The default recipe with ``lora.rank = 8``: the twin keeps rank 4
   (``rank_schedule = [[0, 4]]``), the growing run activates ranks 4..7 before step ``--grow-at``. Same seed, so
   both are the same run up to the growth; at the growth step the model is the same function and draws the same
   samples (growth moves no training RNG), so every series of that step must match the twin's, and the runs part
   only afterwards as the new directions train. Reported: max |Δ| between the twins at the growth step; the jump of
   each series at the growth step against its median step-to-step change; means over the steps after the growth.
   Needs the loop to apply growth (``TrainState.growth``); otherwise this part says so and is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cli_runs import train_series  # benchmarks/cli_runs.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SERIES = ["loss", "reward_mean", "kl", "entropy", "grad_norm"]


# ---- 1. logits at growth ------------------------------------------------------------------------------------------

def _bpe_tokenizer(vocab_size: int = 400):
    """A GPT-2-style byte-level BPE tokenizer trained on the shipped GSM8K sample."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from discrepancy.trainers.tasks import gsm8k_sample_path

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(Path(gsm8k_sample_path()).read_text(encoding="utf-8").splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _models() -> dict:
    """name → (model, token ids [B, T], LoRA targets)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from discrepancy.modeling import build_char_tokenizer, build_tiny_model
    from discrepancy.trainers.tasks import gsm8k_sample_path

    text = Path(gsm8k_sample_path()).read_text(encoding="utf-8").splitlines()[:4]
    char = build_char_tokenizer()
    tiny = build_tiny_model(char, seed=0)  # the default recipe's size
    bpe = _bpe_tokenizer()
    ids = dict(vocab_size=len(bpe), bos_token_id=bpe.eos_token_id, eos_token_id=bpe.eos_token_id,
               pad_token_id=bpe.pad_token_id)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, **ids))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=256, **ids))

    def batch(tok):
        return tok([t[:120] for t in text], return_tensors="pt", padding=True, truncation=True,
                   max_length=48)["input_ids"]  # [4, T]

    return {"tiny (char, default recipe size)": (tiny, batch(char), ["all-linear"]),
            "Llama from a config (byte-level BPE)": (llama, batch(bpe), ["all-linear"]),
            "GPT-2 from a config (byte-level BPE, Conv1D)": (gpt2, batch(bpe), ["all-linear"])}


def logits_at_growth() -> list[dict]:
    """Max |Δ logit| across a growth 4 → 8 through each forward, per model."""
    import torch

    from discrepancy.modeling.lora import attach_lora
    from discrepancy.modeling.lora_fold import folded_lora
    from discrepancy.modeling.lora_fused import fused_lora
    from discrepancy.modeling.lora_growth import grow_rank, mask_inactive

    rows = []
    for name, (model, ids, targets) in _models().items():
        model = attach_lora(model, 8, 16.0, targets)
        mask_inactive(model, 4)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(5):  # B away from zero: a non-trivial adapter
            opt.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        model.eval()

        def forwards() -> dict[str, torch.Tensor]:
            with torch.no_grad():
                out = {"peft": model(input_ids=ids).logits.double()}
                with fused_lora(model):
                    out["fused"] = model(input_ids=ids).logits.double()
                with folded_lora(model) as folded:
                    out["folded" if folded else "folded (not applicable)"] = model(input_ids=ids).logits.double()
            return out

        before = forwards()
        grow_rank(model, opt, 4, 8, torch.Generator().manual_seed(0))
        after = forwards()
        rows.append({"model": name, "tokens": int(ids.numel()), "logit_scale": float(before["peft"].abs().max()),
                     **{f"max_abs_delta_{k}": float((after[k] - before[k]).abs().max()) for k in before}})
    return rows


# ---- 2. a growing run next to its twin ----------------------------------------------------------------------------

def _loop_applies_growth() -> bool:
    from discrepancy.trainers.recipe import TrainState

    return "growth" in TrainState.__dataclass_fields__


def _train(out: Path, seed: int, steps: int, schedule: str) -> tuple[dict, float]:
    frame, seconds = train_series(out, seed, steps, ["lora.rank=8", f"lora.growth.rank_schedule={schedule}"],
                                  failed_ok=False)
    return {k: frame[k].to_numpy() for k in [*SERIES, "lora_active_rank"]}, seconds


def twins(seeds: list[int], steps: int, grow_at: int, folder: Path) -> list[dict]:
    rows = []
    for seed in seeds:
        grown, t_g = _train(folder / f"grown{seed}.h5", seed, steps, f"[[0, 4], [{grow_at}, 8]]")
        twin, t_t = _train(folder / f"twin{seed}.h5", seed, steps, "[[0, 4]]")
        g = grow_at - 1  # row of the growth step (steps start at 1)
        row = {"seed": seed, "seconds": [round(t_g, 1), round(t_t, 1)],
               "active_rank_around": grown["lora_active_rank"][g - 1:g + 2].tolist()}
        for k in SERIES:
            a, b = grown[k], twin[k]
            steps_diff = np.abs(np.diff(a[:g]))  # step-to-step changes before the growth
            row[k] = {"twin_delta_before": float(np.nanmax(np.abs(a[:g] - b[:g]))),
                      "twin_delta_at_growth": float(abs(a[g] - b[g])),
                      "jump_at_growth": float(abs(a[g] - a[g - 1])),
                      "median_step_change": float(np.nanmedian(steps_diff)),
                      "mean_after_grown": float(np.nanmean(a[g + 1:])), "mean_after_twin": float(np.nanmean(b[g + 1:]))}
        rows.append(row)
    return rows


# ---- report -------------------------------------------------------------------------------------------------------

def _markdown(logits: list[dict], runs: list[dict] | None, args: argparse.Namespace, load: str) -> str:
    out = ["# Dynamic LoRA: growth preserves the function", "",
           f"`benchmarks/bench_lora_growth.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
           f"load average at start {load} on {os.cpu_count()} cores, torch threads 1.", "",
           "## Logits at growth (rank 4 → 8, adapter trained 5 AdamW steps first)", "",
           "| model | tokens | max abs logit | max abs Δ peft | max abs Δ fused | max abs Δ folded |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in logits:
        folded = r.get("max_abs_delta_folded", r.get("max_abs_delta_folded (not applicable)"))
        out.append(f"| {r['model']} | {r['tokens']} | {r['logit_scale']:.3g} | {r['max_abs_delta_peft']:.3g} | "
                   f"{r['max_abs_delta_fused']:.3g} | {folded:.3g} |")
    out += ["", "## A growing run next to its twin (default recipe, lora.rank = 8)", ""]
    if runs is None:
        out.append("Skipped: the loop does not apply growth yet (`TrainState.growth`).")
        return "\n".join(out) + "\n"
    out += [f"{args.steps} GRPO steps; the growing run activates ranks 4..7 before step {args.grow_at}, the twin "
            "stays at rank 4; same seed.", "",
            "| seed | series | max abs Δ twin, steps before | abs Δ twin at growth | jump at growth | median step "
            "change before | mean after, grown | mean after, twin |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        for k in SERIES:
            v = r[k]
            out.append(f"| {r['seed']} | {k} | {v['twin_delta_before']:.3g} | {v['twin_delta_at_growth']:.3g} | "
                       f"{v['jump_at_growth']:.3g} | {v['median_step_change']:.3g} | {v['mean_after_grown']:.4g} | "
                       f"{v['mean_after_twin']:.4g} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--grow-at", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if not 2 <= args.grow_at < args.steps:
        sys.exit("--grow-at must lie in [2, --steps)")
    import torch

    torch.set_num_threads(1)
    load = f"{os.getloadavg()[0]:.1f}"
    logits = logits_at_growth()
    runs = None
    if _loop_applies_growth():
        with tempfile.TemporaryDirectory() as tmp:
            runs = twins(args.seeds, args.steps, args.grow_at, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora_growth.json").write_text(json.dumps({"logits": logits, "runs": runs, "steps": args.steps,
                                                          "grow_at": args.grow_at, "load": load}, indent=1))
    text = _markdown(logits, runs, args, load)
    (RESULTS / "lora_growth.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
