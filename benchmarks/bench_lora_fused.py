"""Benchmark: one LoRA linear layer's forward and backward, peft's forward against ours (fused, folded), by size.

Run: ``.venv/bin/python benchmarks/bench_lora_fused.py [--reps 10]``.
Writes ``benchmarks/results/lora_fused.json`` and ``benchmarks/results/lora_fused.md``.

Each size is one `nn.Linear` under a peft LoRA adapter (B non-zero), an input of M rows that requires a gradient
(as hidden states do in a model), fp32, one thread. A repetition runs the forward, a sum and the backward with
peft's forward, inside `fused_lora` with folding off (``fused``: one ``addmm`` for scale and sum) and with folding
forced on (``folded``: ``linear(x, W + s·B·A)``), in turn. Sizes: the tiny recipe's attention and MLP layers, layers
around the fold threshold, then layers of a 0.5 B-class model. `fused_lora` folds up to ``FOLD_MAX_ELEMENTS``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SIZES = ((96, 96, 8, 1536), (96, 256, 8, 1536), (256, 96, 8, 1536), (128, 128, 8, 1536), (128, 512, 8, 1536),
         (256, 256, 8, 1536), (256, 1024, 8, 1536), (512, 1408, 16, 1536), (896, 4864, 16, 1024))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    import discrepancy.modeling.lora_fused as lora_fused
    from discrepancy.modeling.lora_fused import fused_lora

    torch.set_num_threads(1)
    rows = []
    for d_in, d_out, rank, m in SIZES:
        torch.manual_seed(0)
        model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(d_in, d_out)),
                               LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["0"]))
        with torch.no_grad():
            model.base_model.model[0].lora_B["default"].weight.normal_(0, 0.02)
        x = torch.randn(m, d_in, requires_grad=True)

        def step() -> float:
            t0 = time.perf_counter()
            model(x).sum().backward()
            return time.perf_counter() - t0

        step()
        threshold = lora_fused.FOLD_MAX_ELEMENTS
        times: dict[str, list[float]] = {"peft": [], "fused": [], "folded": []}
        for _ in range(args.reps):
            times["peft"].append(step())
            for side, fold_max in (("fused", 0), ("folded", d_in * d_out)):
                lora_fused.FOLD_MAX_ELEMENTS = fold_max
                with fused_lora(model):
                    times[side].append(step())
        lora_fused.FOLD_MAX_ELEMENTS = threshold
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append({"in": d_in, "out": d_out, "rank": rank, "rows": m, "peft_ms": med["peft"],
                     "fused_ms": med["fused"], "folded_ms": med["folded"],
                     "used": "folded" if d_in * d_out <= threshold else "fused"})
    result = {"reps": args.reps, "rows": rows, "fold_max_elements": lora_fused.FOLD_MAX_ELEMENTS,
              "torch": torch.__version__,
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora_fused.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# LoRA layer forward + backward: peft vs fused (CPU, fp32, 1 thread)", "",
             f"Medians of {args.reps} repetitions, sides in turn.", "",
             "| in | out | r | rows | peft ms | fused ms | folded ms | `fused_lora` uses | peft / used |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['in']} | {r['out']} | {r['rank']} | {r['rows']} | {r['peft_ms']:.2f} | {r['fused_ms']:.2f} | "
              f"{r['folded_ms']:.2f} | {r['used']} | {r['peft_ms'] / r[r['used'] + '_ms']:.2f}× |" for r in rows]
    lines += ["", f"Machine: {result['machine']}.", ""]
    (RESULTS / "lora_fused.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
