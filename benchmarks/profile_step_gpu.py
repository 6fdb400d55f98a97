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
    """One profiled call: top operators by self CPU time, top kernels by GPU time, GPU kernel time and count."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
        _sync()
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
    # The footer's total: summing the rows instead counts every kernel twice (its own row and its launcher's).
    footer = re.search(r"Self CUDA time total: ([0-9.]+)(ms|us|s)", table)
    gpu_ms = float(footer.group(1)) * {"s": 1e3, "ms": 1.0, "us": 1e-3}[footer.group(2)] if footer else 0.0
    out = {"table": table, "gpu_ms": gpu_ms, "kernels": len(kernels)}
    if cuda:
        out["gpu_table"] = averages.table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--skip", default="", help="comma list of measurements to skip")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds after which measurements are skipped")
    args = parser.parse_args()
    import torch

    from discrepancy.modeling import attach_lora, load_local_model
    from discrepancy.modeling.compiled import CompiledLayers
    from discrepancy.modeling.lora_fold import adapter_disabled
    from discrepancy.rollout import graphs as decode
    from discrepancy.rollout.graphs import Decoders, sample_graphed
    from discrepancy.trainers.grpo import grpo_loss
    from discrepancy.modeling.logprobs import grouped_token_logprobs, token_logprobs
    from discrepancy.rollout.generate import sample_completions
    from discrepancy.trainers.tasks import arithmetic_examples

    setup = SMOKE if args.smoke else Setup()
    cuda = torch.cuda.is_available()
    warm, reps = (1, 1) if args.smoke else (3, 3)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}

    def report(name: str, value: Any) -> None:
        results[name] = value
        line = {k: v for k, v in value.items() if not k.endswith("table")} if isinstance(value, dict) else value
        print(json.dumps({name: line}), flush=True)
        for key in ("table", "gpu_table"):
            if isinstance(value, dict) and key in value:
                print(value[key], flush=True)
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

    t_start = time.perf_counter()

    def wanted(name: str) -> bool:
        """Measured unless skipped or past the time budget (the call must return its files in time)."""
        if name in skip:
            return False
        if time.perf_counter() - t_start > args.budget:
            report(name, {"skipped": f"past the {args.budget:.0f} s budget"})
            return False
        return True

    def measure(name: str, fn: Callable[[], Any], per_token: bool = False) -> None:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0  # compile included
        secs = statistics.median(timed(fn, warm, reps))
        extra = {"per_token_ms": 1e3 * secs / setup.length} if per_token else {}
        report(name, {"first_s": first, "s": secs, **extra, **profile_table(fn)})

    # ---- sampling ------------------------------------------------------------------------------------------------
    for name, static in (("gen_hf_static", True), ("gen_hf_dynamic_shared", False)):
        if wanted(name):
            measure(name, lambda: sample_completions(model, tok, prompts, static_cache=static, **kw), per_token=True)
    base = model.get_base_model()

    def gen_variant(name: str, attention: str, mode: str | None) -> None:
        """The graphed decode with another attention implementation or compile mode."""
        if not wanted(name):
            return
        decoders = Decoders()  # fresh decoders, compiled with this variant's options
        base.set_attn_implementation(attention)
        if mode:
            decode.COMPILE_OPTIONS["mode"] = mode
        try:
            if name == "gen_graph":
                report("graph_check", graph_check())
            measure(name, lambda: sample_graphed(model, tok, prompts, decoders=decoders, **kw), per_token=True)
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, the others still run
            report(name, {"error": repr(exc)[:500]})
        finally:
            base.set_attn_implementation("sdpa")
            decode.COMPILE_OPTIONS.pop("mode", None)

    def graph_check() -> dict[str, Any]:
        """Greedy tokens of the compiled step run plainly, then replayed from the captured CUDA graph: identical."""
        ids = torch.full((setup.group, setup.prompt_len), 7, device=model.device)
        ids[:, -8:] = torch.arange(8, device=model.device) + 9 + torch.arange(setup.group, device=model.device)[:, None]
        mask = torch.ones_like(ids)
        args = dict(max_new_tokens=setup.length, eos_id=tok.eos_token_id, greedy=True, min_new_tokens=setup.length)
        saved, decode.WARMUP_CALLS = decode.WARMUP_CALLS, 10**9
        decoders = Decoders()
        try:
            plain = decode.decode_tokens(base, ids, mask, decoders=decoders, **args)  # compiles; never captures
        finally:
            decode.WARMUP_CALLS = saved
        replayed = decode.decode_tokens(base, ids, mask, decoders=decoders, **args)  # captures, then replays
        captured = any(d.graph is not None for d in decoders.by_key.values())
        return {"captured": captured, "equal": bool(torch.equal(plain, replayed)),
                "distinct_tokens": int(plain.unique().numel())}

    gen_variant("gen_graph", "sdpa", None)

    # ---- training forward + backward, reference forward ----------------------------------------------------------
    roll = sample_completions(model, tok, prompts, static_cache=False, **kw)
    ids, attn, plen = roll.input_ids, roll.attention_mask, roll.prompt_ids.size(1)
    mask = roll.completion_mask
    adv = torch.randn(ids.size(0), device=ids.device)
    model.train()

    layers = CompiledLayers(model)  # one compiled layer function for every compiled measurement, as a run keeps it

    def train(fn: Callable[..., Any], compiled: bool) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            with layers.active(enabled=compiled):
                if fn is token_logprobs:
                    logp, _ = token_logprobs(model, ids, attn, plen, with_entropy=True)
                else:  # prompts shared whatever the device policy says: this measures the sharing itself
                    logp, _ = fn(model, ids, attn, plen, setup.group, with_entropy=True, share=True)
                ref = logp.detach() - 0.01
                loss, _ = grpo_loss(logp, None, ref, adv, mask, beta=setup.beta, kl_ratio_correction=True)
                loss.backward()

        return run

    for name, fn, compiled in (("train_grouped", grouped_token_logprobs, False), ("train_plain", token_logprobs, False),
                               ("train_compiled", token_logprobs, True)):
        if wanted(name):
            measure(name, train(fn, compiled))
    if wanted("train_compiled_graphs"):  # the shared layer function with CUDA graphs (mode="reduce-overhead")
        from discrepancy.modeling import compiled as compiled_module

        saved = dict(compiled_module.COMPILE_OPTIONS)
        compiled_module.COMPILE_OPTIONS.update(mode="reduce-overhead")
        saved_layers, layers = layers, CompiledLayers(model)  # compiled again with the new options
        try:
            measure("train_compiled_graphs", train(token_logprobs, True))
        except Exception as exc:  # noqa: BLE001 - reported; the other measurements still run
            report("train_compiled_graphs", {"error": repr(exc)[:800]})
        finally:
            compiled_module.COMPILE_OPTIONS.clear()
            compiled_module.COMPILE_OPTIONS.update(saved)
            layers = saved_layers

    whole: dict[str, Any] = {}

    def whole_model(mode: str, grad: bool) -> Callable[[], None]:
        """The whole model compiled as one graph (``mode``), training forward + backward or no-grad forward."""
        from discrepancy.modeling.logprobs import _logp_entropy, position_ids_for

        fn = whole.setdefault(mode, torch.compile(base, mode=mode))
        t = ids.size(1) - plen

        def run() -> None:
            model.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(grad):
                out = fn(input_ids=ids, attention_mask=attn, position_ids=position_ids_for(attn), use_cache=False,
                         logits_to_keep=t + 1)
                logp, _ = _logp_entropy(out.logits[:, :-1], ids[:, plen:], with_entropy=grad)
                if grad:
                    loss, _ = grpo_loss(logp, None, logp.detach() - 0.01, adv, mask, beta=setup.beta,
                                        kl_ratio_correction=True)
                    loss.backward()

        return run

    for name, mode, grad in (("train_whole", "default", True), ("train_whole_graphs", "reduce-overhead", True),
                             ("ref_whole_graphs", "reduce-overhead", False)):
        if wanted(name):
            try:
                measure(name, whole_model(mode, grad))
            except Exception as exc:  # noqa: BLE001 - reported; the other measurements still run
                report(name, {"error": repr(exc)[:800]})

    def ref_forward(fn: Callable[..., Any], compiled: bool) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            with adapter_disabled(model), layers.active(enabled=compiled):
                if fn is token_logprobs:
                    token_logprobs(model, ids, attn, plen)
                else:
                    fn(model, ids, attn, plen, setup.group, share=True)

        return run

    for name, fn, compiled in (("ref_grouped", grouped_token_logprobs, False), ("ref_plain", token_logprobs, False),
                               ("ref_compiled", token_logprobs, True)):
        if wanted(name):
            measure(name, ref_forward(fn, compiled))

    # ---- decode variants last: the autotuned compile may take minutes --------------------------------------------
    gen_variant("gen_graph_eager_attn", "eager", None)
    gen_variant("gen_graph_autotune", "sdpa", "max-autotune-no-cudagraphs")

    (out_dir / "profile_step.md").write_text("\n\n".join(
        f"## {k}\n\n" + json.dumps({a: b for a, b in v.items() if not a.endswith("table")}) + "\n\n```\n"
        + v.get("table", "") + "\n" + v.get("gpu_table", "") + "\n```" for k, v in results.items()))


if __name__ == "__main__":
    main()
