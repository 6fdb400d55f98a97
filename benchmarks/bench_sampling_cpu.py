"""Benchmark: CPU sampling, our token loop against transformers' `generate`, and the token draws, side by side.

Run: ``.venv/bin/python benchmarks/bench_sampling_cpu.py [--reps 20]``.
Writes ``benchmarks/results/sampling_cpu.json`` and ``benchmarks/results/sampling_cpu.md``.

Setup of the CPU trainer benchmark (``bench_trainer_vs_trl.py``): the embedded tiny Qwen2 with a LoRA adapter
(r 8, all linear layers, B non-zero so merging matters), 8 arithmetic prompts × G 8, completions of 24 tokens (the
benchmark's length) and of 160 with EOS suppressed, one thread. Sides, run in turn within each repetition so that
they share the machine's drift:

- ``generate``: `sample_completions` (shared prompt prefill, then transformers' `generate`), the CPU sampler before.
- ``eager_concat``: our loop with transformers' dynamic cache as it is (grown by concatenation).
- ``eager``: `sample_eager`, our loop with the reserved cache (`discrepancy.rollout.kv_reserve`): the CPU sampler.

Draws: one [64, V] probability table per call, as in the loop: ``torch.multinomial``, the inverse CDF and the
exponential race.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))


def _time(fn, reps: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=12)
    args = parser.parse_args()

    import torch

    from bench_trainer_vs_trl import TARGETS, Setup, _common
    from discrepancy.modeling import attach_lora
    from discrepancy.rollout.draw import _inverse_cdf, _race
    from discrepancy.rollout.loop import sample_eager
    from discrepancy.rollout import rollouts as sampling
    from discrepancy.rollout.generate import sample_completions

    setup = Setup()
    tokenizer, model, rows = _common(setup)
    model = attach_lora(model, setup.rank, setup.alpha, TARGETS)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    prompts = [r["prompt"] for r in rows[: setup.prompts]]
    reserve = sampling.reserve

    def concat(**kw):  # noqa: ANN003, ANN202 - the loop with the reserved cache turned off
        sampling.reserve = lambda *a, **k: False
        try:
            return sample_eager(model, tokenizer, prompts, **kw)
        finally:
            sampling.reserve = reserve

    times: dict[int, dict[str, list[float]]] = {}
    for length in (setup.length, 160):
        kw = dict(group_size=setup.group, max_new_tokens=length, min_new_tokens=length)
        sides = {"generate": lambda kw=kw: sample_completions(model, tokenizer, prompts, **kw),
                 "eager_concat": lambda kw=kw: concat(**kw),
                 "eager": lambda kw=kw: sample_eager(model, tokenizer, prompts, **kw)}
        for fn in sides.values():
            fn()  # warm-up
        times[length] = {k: [] for k in sides}
        for _ in range(args.reps if length == setup.length else max(3, args.reps // 3)):
            for name, fn in sides.items():
                times[length][name] += _time(fn, 1)

    probs = torch.softmax(torch.randn(setup.prompts * setup.group, len(tokenizer)), -1)
    draws = {"multinomial": lambda: torch.multinomial(probs, 1), "inverse_cdf": lambda: _inverse_cdf(probs),
             "race": lambda: _race(probs)}
    draw_times = {k: [] for k in draws}
    for _ in range(20):
        for name, fn in draws.items():
            draw_times[name] += _time(fn, 50)

    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    dmed = {k: statistics.median(v) for k, v in draw_times.items()}
    result = {"setup": {"prompts": setup.prompts, "group": setup.group, "threads": 1, "vocab": len(tokenizer)},
              "reps": args.reps, "median_s": med,
              "ratio_generate_over_eager": {n: m["generate"] / m["eager"] for n, m in med.items()},
              "draw_median_s": dmed, "versions": {"torch": torch.__version__, "python": platform.python_version()},
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampling_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# CPU sampling: our token loop vs transformers' generate", "",
             f"Tiny Qwen2 + LoRA r8, {setup.prompts} prompts × G {setup.group}, EOS suppressed, 1 thread; sides in "
             f"turn, {args.reps} repetitions at {setup.length} tokens, {max(3, args.reps // 3)} at 160; medians.", "",
             "| tokens | generate ms | eager_concat ms | eager ms | generate / eager |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {m['generate'] * 1e3:.1f} | {m['eager_concat'] * 1e3:.1f} | {m['eager'] * 1e3:.1f} | "
              f"{m['generate'] / m['eager']:.2f}× |" for n, m in med.items()]
    lines += ["", f"Token draw over [{probs.size(0)}, {probs.size(1)}] probabilities (median µs per call):", "",
              "| draw | µs |", "| --- | --- |"]
    lines += [f"| {k} | {v * 1e6:.0f} |" for k, v in dmed.items()]
    lines += ["", f"Machine: {result['machine']}.", ""]
    (RESULTS / "sampling_cpu.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
