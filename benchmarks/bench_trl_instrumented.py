"""What recording a TRL GRPO run costs: TRL's optimizer step with and without `InstrumentedGRPOTrainer`.

Same config, same process, arms alternated (A B C A B C ...) so that machine load falls on all of them alike:

- ``plain``: `trl.GRPOTrainer`;
- ``instrumented``: `InstrumentedGRPOTrainer` with the default instruments (D_t, policy shift, KL to the start,
  gradient noise, LoRA norms, rollout statistics, timing), samples every step, a snapshot every 10 steps;
- ``instrumented, no kl_start``: the same without the KL to the start, the one instrument that adds a forward of
  its own when β = 0 (the post-step forward D_t needs is shared by the others).

Model: the embedded char-level tokenizer and a Qwen2 of hidden size 96, 2 layers, built from a config (no hub), LoRA
r = 4 on q/v; 4 prompts × 4 completions per step in 4 micro-batches of 4, 32 completion tokens, on the CPU with one
torch thread. Each run has STEPS optimizer steps; the first of each run is left out (warm-up). Per-step wall and CPU
seconds come from a callback around each optimizer step (on_step_begin → on_step_end), the same in every arm.

The arms train the same trajectory (same seed; the instrumented run's parameters equal plain TRL's bit for bit,
tests/integrations), so step k of one arm does the same TRL work as step k of another: besides each arm's median,
the overhead is the median of the paired differences (arm − plain, same repeat, same step), which cancels the
variation between steps (generation length) and leaves the load's.

Run: .venv/bin/python benchmarks/bench_trl_instrumented.py  (writes benchmarks/results/trl_instrumented.json)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))  # the tests' tiny TRL setup: one config for both

from trl_setup import grpo_parts  # noqa: E402

STEPS, REPEATS = 12, 5
CONFIG = dict(accumulation=4, hidden=96, completion_length=32)
OUT = ROOT / "benchmarks" / "results" / "trl_instrumented.json"


def step_timer() -> Any:
    """A callback collecting (wall, CPU) seconds of each optimizer step."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_step_begin(self, args, state, control, **kw):
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kw):
            self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))

    return Timer()


def one_run(arm: str, folder: Path) -> dict[str, Any]:
    """Train STEPS steps in ``arm``; per-step times (first step dropped) and, instrumented, the recorded costs."""
    from trl import GRPOTrainer

    from discrepancy.instrumentation.config import InstrumentationConfig
    from discrepancy.integrations.trl_trainer import InstrumentedGRPOTrainer
    from discrepancy.runfile import open_run

    from transformers import PrinterCallback

    folder.mkdir(parents=True)
    parts = grpo_parts(folder / "out", steps=STEPS, **CONFIG)
    run = folder / "run.h5"
    if arm == "plain":
        trainer = GRPOTrainer(**parts)
    else:
        cfg = InstrumentationConfig(kl_start=arm == "instrumented")
        trainer = InstrumentedGRPOTrainer(**parts, discrepancy_run=run, instruments=cfg, overwrite=True)
    trainer.remove_callback(PrinterCallback)  # TRL's logs on stdout: not part of what is measured
    timer = step_timer()
    trainer.add_callback(timer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    out: dict[str, Any] = {"wall": [w for w, _ in timer.times[1:]], "cpu": [c for _, c in timer.times[1:]]}
    if arm != "plain":
        with open_run(run) as r:
            s = r.series().iloc[1:]
        out["recorded"] = {k: float(s[k].median()) for k in s.columns if k.startswith("time_") or k in (
            "instrument_time", "generation_time", "step_time")}
    return out


def main() -> None:
    torch.set_num_threads(1)
    arms = ["plain", "instrumented", "instrumented, no kl_start"]
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(REPEATS):
            for i, arm in enumerate(arms):
                runs[arm].append(one_run(arm, Path(tmp) / f"{rep}-{i}"))
                print(f"rep {rep} {arm}: median wall {statistics.median(runs[arm][-1]['wall']):.3f} s/step",
                      flush=True)
    result: dict[str, Any] = {"steps_per_run": STEPS, "repeats": REPEATS, "config": CONFIG,
                              "load_before": load_before, "load_after": os.getloadavg(),
                              "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                              "arms": {}}
    base = None
    for arm in arms:
        wall = [t for r in runs[arm] for t in r["wall"]]
        cpu = [t for r in runs[arm] for t in r["cpu"]]
        row = {"median_wall_s": statistics.median(wall), "median_cpu_s": statistics.median(cpu), "n_steps": len(wall),
               "run_medians_wall_s": [statistics.median(r["wall"]) for r in runs[arm]]}
        if "recorded" in runs[arm][0]:
            keys = runs[arm][0]["recorded"]
            row["recorded_median_s"] = {k: statistics.median(r["recorded"][k] for r in runs[arm]) for k in keys}
        base = base or row
        pairs = [(r["wall"][i] - p["wall"][i], r["cpu"][i] - p["cpu"][i])
                 for r, p in zip(runs[arm], runs[arms[0]]) for i in range(len(r["wall"]))]
        row["paired_diff_wall_s"] = statistics.median(w for w, _ in pairs)
        row["paired_diff_cpu_s"] = statistics.median(c for _, c in pairs)
        row["overhead_wall"] = row["median_wall_s"] / base["median_wall_s"] - 1.0
        row["overhead_cpu"] = row["median_cpu_s"] / base["median_cpu_s"] - 1.0
        result["arms"][arm] = row
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
