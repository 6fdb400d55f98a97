"""Where one GRPO step's time goes on a GPU, stage by stage, with alternatives side by side.

Run: ``python benchmarks/profile_step_gpu.py [--smoke]`` (same model and batch as ``bench_trainer_gpu.py``; carry the
same wheels). Prints one JSON line per measurement and writes ``profile_step.{json,md}`` to ``$OUT`` (else
``benchmarks/results/``). Stages: sampling with transformers ``generate`` (static cache, compiled) against the
project's graph-captured decode loop; the training forward + backward with and without prompt sharing; the
no-grad reference forward. For each: seconds per call (median of timed calls after warm-up) and the top operators by
self CPU time from ``torch.profiler``, which tells launch-bound (CPU) from kernel-bound (GPU) stages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_trainer_gpu import SMOKE, Setup, _sync, build_model_dir, fixed_length_prompt  # noqa: E402
from bench_trainer_vs_trl import TARGETS  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any], warmup: int, reps: int) -> list[float]:
    """Seconds of each of ``reps`` calls after ``warmup`` untimed ones (GPU synchronised around each)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - t0)
    return out


def profile_table(fn: Callable[[], Any], rows: int = 12) -> dict[str, Any]:
    """One profiled call: top operators by self CPU time, GPU kernel time and kernel count."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
        _sync()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
    # The footer's total: summing the rows instead counts every kernel twice (its own row and its launcher's).
    footer = re.search(r"Self CUDA time total: ([0-9.]+)(ms|us|s)", table)
    gpu_ms = float(footer.group(1)) * {"s": 1e3, "ms": 1.0, "us": 1e-3}[footer.group(2)] if footer else 0.0
    return {"table": table, "gpu_ms": gpu_ms, "kernels": len(kernels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--skip", default="", help="comma list of measurements to skip")
    args = parser.parse_args()
    import torch

    from discrepancy.modeling import attach_lora, load_local_model
    from discrepancy.trainers.grpo import grpo_loss
    from discrepancy.trainers.logprobs import grouped_token_logprobs, token_logprobs
    from discrepancy.trainers.sampling import sample_completions
    from discrepancy.trainers.tasks import arithmetic_examples

    setup = SMOKE if args.smoke else Setup()
    cuda = torch.cuda.is_available()
    warm, reps = (1, 1) if args.smoke else (3, 3)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}

    def report(name: str, value: Any) -> None:
        results[name] = value
        line = {k: v for k, v in value.items() if k != "table"} if isinstance(value, dict) else value
        print(json.dumps({name: line}), flush=True)
        if isinstance(value, dict) and "table" in value:
            print(value["table"], flush=True)
        (out_dir / "profile_step.json").write_text(json.dumps(results, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        build_model_dir(setup, Path(tmp) / "m")
        model, tok = load_local_model(Path(tmp) / "m", dtype=torch.bfloat16 if cuda else torch.float32)
    model = attach_lora(model.to("cuda" if cuda else "cpu"), setup.rank, setup.alpha, TARGETS)
    with torch.no_grad():  # a trained-looking adapter: B ≠ 0, so merging changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    fmt = fixed_length_prompt(tok, setup.prompt_len)
    prompts = [fmt(e.question) for e in arithmetic_examples(setup.prompts, max_operand=5, seed=0)]
    kw = dict(group_size=setup.group, max_new_tokens=setup.length, min_new_tokens=setup.length, temperature=1.0)
    skip = set(args.skip.split(","))

    # ---- sampling ------------------------------------------------------------------------------------------------
    for name, static in (("gen_hf_static", True), ("gen_hf_dynamic_shared", False)):
        if name in skip:
            continue
        t0 = time.perf_counter()
        roll = sample_completions(model, tok, prompts, static_cache=static, **kw)
        first = time.perf_counter() - t0
        secs = timed(lambda: sample_completions(model, tok, prompts, static_cache=static, **kw), warm, reps)
        prof = profile_table(lambda: sample_completions(model, tok, prompts, static_cache=static, **kw))
        report(name, {"first_s": first, "s": statistics.median(secs), "per_token_ms": 1e3 * statistics.median(secs)
                      / setup.length, **prof})
    if "gen_graph" not in skip:
        try:
            from discrepancy.trainers.decode import sample_graphed
        except ImportError as exc:
            report("gen_graph", {"error": repr(exc)})
        else:
            t0 = time.perf_counter()
            sample_graphed(model, tok, prompts, **kw)
            first = time.perf_counter() - t0
            secs = timed(lambda: sample_graphed(model, tok, prompts, **kw), warm, reps)
            prof = profile_table(lambda: sample_graphed(model, tok, prompts, **kw))
            report("gen_graph", {"first_s": first, "s": statistics.median(secs),
                                 "per_token_ms": 1e3 * statistics.median(secs) / setup.length, **prof})

    # ---- training forward + backward, reference forward ----------------------------------------------------------
    roll = sample_completions(model, tok, prompts, static_cache=False, **kw)
    ids, attn, plen = roll.input_ids, roll.attention_mask, roll.prompt_ids.size(1)
    mask = roll.completion_mask
    adv = torch.randn(ids.size(0), device=ids.device)
    model.train()

    def train(fn: Callable[..., Any]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            if fn is token_logprobs:
                logp, _ = token_logprobs(model, ids, attn, plen, with_entropy=True)
            else:
                logp, _ = fn(model, ids, attn, plen, setup.group, with_entropy=True)
            ref = logp.detach() - 0.01
            loss, _ = grpo_loss(logp, None, ref, adv, mask, beta=setup.beta, kl_ratio_correction=True)
            loss.backward()

        return run

    for name, fn in (("train_grouped", grouped_token_logprobs), ("train_plain", token_logprobs)):
        if name in skip:
            continue
        secs = timed(train(fn), warm, reps)
        report(name, {"s": statistics.median(secs), **profile_table(train(fn))})

    def ref_forward(fn: Callable[..., Any]) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            with model.disable_adapter():
                if fn is token_logprobs:
                    token_logprobs(model, ids, attn, plen)
                else:
                    fn(model, ids, attn, plen, setup.group)

        return run

    model.eval()
    for name, fn in (("ref_grouped", grouped_token_logprobs), ("ref_plain", token_logprobs)):
        if name in skip:
            continue
        secs = timed(ref_forward(fn), warm, reps)
        report(name, {"s": statistics.median(secs), **profile_table(ref_forward(fn))})

    (out_dir / "profile_step.md").write_text("\n\n".join(
        f"## {k}\n\n" + json.dumps({a: b for a, b in v.items() if a != "table"}) + "\n\n```\n" + v.get("table", "")
        + "\n```" for k, v in results.items()))


if __name__ == "__main__":
    main()
