"""Benchmark: CPU sampling, our token loop against transformers' `generate`, and the token draws, side by side.

Run: ``.venv/bin/python benchmarks/bench_sampling_cpu.py [--reps 20]``.
Writes ``benchmarks/results/sampling_cpu.json`` and ``benchmarks/results/sampling_cpu.md``.

Setup of the CPU trainer benchmark (``bench_trainer_vs_trl.py``): the embedded tiny Qwen2 with a LoRA adapter
(r 8, all linear layers, B non-zero so merging matters), 8 arithmetic prompts × G 8, 24 completion tokens with EOS
suppressed, one thread. Sides, run in turn within each repetition so that they share the machine's drift:

- ``generate``: `sample_completions` (shared prompt prefill, then transformers' `generate`), the CPU sampler before.
- ``eager``: `sample_eager` (the same prefill, then our loop with the inverse-CDF draw), the CPU sampler now.

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
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()

    import torch

    from bench_trainer_vs_trl import TARGETS, Setup, _common
    from discrepancy.modeling import attach_lora
    from discrepancy.trainers.draw import _inverse_cdf, _race
    from discrepancy.trainers.eager_decode import sample_eager
    from discrepancy.trainers.sampling import sample_completions

    setup = Setup()
    tokenizer, model, rows = _common(setup)
    model = attach_lora(model, setup.rank, setup.alpha, TARGETS)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    prompts = [r["prompt"] for r in rows[: setup.prompts]]
    kw = dict(group_size=setup.group, max_new_tokens=setup.length, min_new_tokens=setup.length)
    sides = {"generate": lambda: sample_completions(model, tokenizer, prompts, **kw),
             "eager": lambda: sample_eager(model, tokenizer, prompts, **kw)}
    for fn in sides.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.reps):
        for name, fn in sides.items():
            times[name] += _time(fn, 1)

    probs = torch.softmax(torch.randn(setup.prompts * setup.group, len(tokenizer)), -1)
    draws = {"multinomial": lambda: torch.multinomial(probs, 1), "inverse_cdf": lambda: _inverse_cdf(probs),
             "race": lambda: _race(probs)}
    draw_times = {k: [] for k in draws}
    for _ in range(20):
        for name, fn in draws.items():
            draw_times[name] += _time(fn, 50)

    med = {k: statistics.median(v) for k, v in times.items()}
    dmed = {k: statistics.median(v) for k, v in draw_times.items()}
    result = {"setup": {"prompts": setup.prompts, "group": setup.group, "length": setup.length, "threads": 1,
                        "vocab": len(tokenizer)},
              "reps": args.reps, "median_s": med, "min_s": {k: min(v) for k, v in times.items()},
              "ratio_generate_over_eager": med["generate"] / med["eager"], "draw_median_s": dmed,
              "versions": {"torch": torch.__version__, "python": platform.python_version()},
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampling_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# CPU sampling: our token loop vs transformers' generate", "",
             f"Tiny Qwen2 + LoRA r8, {setup.prompts} prompts × G {setup.group}, {setup.length} tokens (EOS "
             f"suppressed), 1 thread; {args.reps} repetitions, sides in turn; medians.", "",
             "| sampler | median ms / call | min ms |", "| --- | --- | --- |"]
    lines += [f"| {k} | {med[k] * 1e3:.1f} | {min(times[k]) * 1e3:.1f} |" for k in sides]
    lines += ["", f"generate / eager: {result['ratio_generate_over_eager']:.2f}×.", "",
              f"Token draw over [{probs.size(0)}, {probs.size(1)}] probabilities (median µs per call):", "",
              "| draw | µs |", "| --- | --- |"]
    lines += [f"| {k} | {v * 1e6:.0f} |" for k, v in dmed.items()]
    lines += ["", f"Machine: {result['machine']}.", ""]
    (RESULTS / "sampling_cpu.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
