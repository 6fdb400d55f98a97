"""Peak memory and time of the training log-probs: chunked fp32 (`_TargetLogprob`) vs autograd's log_softmax.

The GPU benchmark's batch (32 rows × 128 completion tokens over a 49,152-word vocabulary) makes the logits the
largest tensors of a step. Each variant runs in its own process: logits as a model would return them (fp32 on the
CPU, with grad), log-probs of the targets and the detached entropy, a weighted sum, the backward. Reported: the
process's peak resident memory above what it held after creating the logits, and CPU seconds (median of 3).

Run: ``.venv/bin/python benchmarks/bench_logprob_memory.py`` (writes ``benchmarks/results/logprob_memory.{json,md}``).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHAPE = (32, 128, 49152)
VARIANTS = ("autograd_log_softmax", "chunked")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(variant: str) -> dict[str, float]:
    """One variant in this process: peak RSS above the logits themselves, and CPU seconds per pass."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from discrepancy.modeling.logprobs import _logp_entropy

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(*SHAPE, generator=gen).requires_grad_(True)  # [N, T, V]
    targets = torch.randint(0, SHAPE[2], SHAPE[:2], generator=gen)
    weights = torch.randn(SHAPE[:2], generator=gen)
    base = _rss_mib()
    seconds = []
    for _ in range(3):
        logits.grad = None
        t0 = time.process_time()
        if variant == "chunked":
            logp, ent = _logp_entropy(logits, targets, with_entropy=True)
        else:
            logsm = torch.log_softmax(logits.float(), dim=-1)
            logp = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                ent = -(logsm.exp() * logsm).sum(-1)
        (weights * logp).sum().backward()
        seconds.append(time.process_time() - t0)
        del logp, ent
    return {"peak_above_logits_mib": _rss_mib() - base, "cpu_s": statistics.median(seconds),
            "logits_mib": logits.numel() * 4 / 2**20}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2])))
        return
    res = {}
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--worker", variant], capture_output=True, text=True,
                              check=True)
        res[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = res["autograd_log_softmax"], res["chunked"]
    res["ratio_peak"] = a["peak_above_logits_mib"] / b["peak_above_logits_mib"]
    res["ratio_time"] = a["cpu_s"] / b["cpu_s"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logprob_memory.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [f"# Training log-probs over [{SHAPE[0]}, {SHAPE[1]}, {SHAPE[2]}] fp32 logits ({a['logits_mib']:.0f} MiB), "
          "CPU, 1 thread, each variant in its own process", "",
          "| variant | peak RSS above the logits (MiB) | CPU s per forward + backward |", "| --- | --- | --- |"]
    md += [f"| {v} | {res[v]['peak_above_logits_mib']:.0f} | {res[v]['cpu_s']:.2f} |" for v in VARIANTS]
    md += ["", f"Peak: autograd / chunked = {res['ratio_peak']:.2f}×; time: {res['ratio_time']:.2f}×.", ""]
    (RESULTS / "logprob_memory.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
