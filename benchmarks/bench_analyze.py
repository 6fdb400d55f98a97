"""Benchmark: ``analyze`` on a synthetic 1 M-step run with 40 series (jumps, plateaus, tables, plots, report).

Run: ``.venv/bin/python benchmarks/bench_analyze.py [--steps 1000000] [--series 40] [--repeats 2]``.
The run is written once with the project's Recorder into a cache folder outside the repository (~320 MB, a few
minutes) and reused. Writes ``benchmarks/results/analyze.json`` and ``benchmarks/results/analyze.md``.
Eight series share a planted phase transition at 35 % of the run; the check that it is found is part of the output.
The last row times the command a user types, ``discrepancy analyze RUN``, in a new process (imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from discrepancy.analysis.pipeline import analyze
from discrepancy.report import write_outputs
from discrepancy.analysis.changepoints.synthetic import KINDS, training_curve

RESULTS = Path(__file__).parent / "results"
NAMES = [  # names as the trainer and instruments log them (families are chosen from names)
    "loss", "policy_loss", "loss_pre", "loss_post", "dloss_obs", "dloss_pred", "disc", "rho", "kappa", "step_norm",
    "reward_mean", "reward_std", "frac_reward_zero_std", "reward_correctness", "reward_format",
    "noise_trace", "grad_sq", "b_simple", "noise_trace_ewma", "grad_sq_ewma", "b_simple_ewma", "noise_snr", "grad_norm",
    "kl", "kl_realised", "kl_start", "entropy", "entropy_post", "entropy_change_obs", "entropy_change_pred",
    "completion_length_mean", "completion_length_min", "completion_length_max", "truncated_frac",
    "lr", "clip_ratio_low", "clip_ratio_high", "ratio_mean", "adv_std", "step_time",
]
SHARED = ["loss", "policy_loss", "reward_mean", "reward_correctness", "kl_realised", "entropy", "disc", "grad_norm"]


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (figures are drawn in worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_cli(run: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (process and its workers) of ``discrepancy analyze RUN --out OUT`` in a new process."""
    exe = Path(sys.executable).with_name("discrepancy")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from discrepancy.cli import app; app()"]
    t0, c0 = time.perf_counter(), os.times()
    subprocess.run([*cmd, "analyze", str(run), "--out", str(out)], check=True, capture_output=True)
    c1 = os.times()
    return time.perf_counter() - t0, c1.children_user + c1.children_system - c0.children_user - c0.children_system


def build_run(path: Path, steps: int, n_series: int) -> int:
    """Write the synthetic run; returns the planted transition step."""
    from discrepancy.runfile import Recorder, RunSchema

    rng = np.random.default_rng(0)
    names = NAMES[:n_series]
    jump_at = int(0.35 * steps)
    cols = []
    for i, name in enumerate(names):
        c = training_curve(steps, rng, KINDS[i % len(KINDS)])
        y = c.signal
        if name in SHARED:
            y = y + np.where(np.arange(steps) >= jump_at, 12.0 * float(np.median(c.sigma)) * (1 if i % 2 else -1), 0.0)
        cols.append(y)
    data = np.stack(cols, axis=1)  # [steps, series]
    schema = RunSchema(series={n: f"synthetic {n}" for n in names})
    with Recorder.create(path, schema, config_toml=f"[bench]\nsteps = {steps}\n", meta={"base_model": "synthetic"},
                         flush_every=10_000, overwrite=True) as rec:
        for step in range(steps):
            rec.log_step(step, dict(zip(names, data[step].tolist())))
        rec.finish()
    return jump_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "discrepancy-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    run = args.cache / f"run_{args.steps}_{args.series}.h5"
    jump_at = int(0.35 * args.steps)
    if not run.exists():
        t0 = time.perf_counter()
        build_run(run, args.steps, args.series)
        print(f"built {run} in {time.perf_counter() - t0:.0f} s")
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), _cpu()
        res = analyze(run)
        t1, c1 = time.perf_counter(), _cpu()
        write_outputs(res, args.cache / "out")
        t2, c2 = time.perf_counter(), _cpu()
        timings = (("analyze_s", t1 - t0), ("outputs_s", t2 - t1), ("total_s", t2 - t0),
                   ("analyze_cpu_s", c1 - c0), ("outputs_cpu_s", c2 - c1), ("total_cpu_s", c2 - c0))
        for key, value in timings:
            best[key] = min(best.get(key, float("inf")), value)
    cli = [time_cli(run, args.cache / "out_cli") for _ in range(args.repeats)]
    best["cli_s"], best["cli_cpu_s"] = min(c[0] for c in cli), min(c[1] for c in cli)
    top = res.transitions.iloc[0] if not res.transitions.empty else None
    found = top is not None and abs(int(top["step"]) - jump_at) <= max(5, jump_at // 1000)
    out = dict(steps=args.steps, series=args.series, repeats=args.repeats, cpu_count=os.cpu_count(),
               load_average=os.getloadavg()[0], **best, planted_transition=jump_at,
               found_transition=None if top is None else int(top["step"]),
               transition_signals=None if top is None else int(top["n_signals"]), transition_found=bool(found),
               n_jumps=int(len(res.jumps)), n_plateaus=int(len(res.plateaus)))
    text = (f"# analyze benchmark: {args.steps:,} steps × {args.series} series (best of {args.repeats})\n\n"
            f"| time | read + detect (s) | tables + PNGs + HTML (s) | total (s) |\n|---|---|---|---|\n"
            f"| wall clock | {best['analyze_s']:.2f} | {best['outputs_s']:.2f} | {best['total_s']:.2f} |\n"
            f"| CPU (this process + workers) | {best['analyze_cpu_s']:.2f} | {best['outputs_cpu_s']:.2f} | "
            f"{best['total_cpu_s']:.2f} |\n"
            f"| `discrepancy analyze` (new process), wall | | | {best['cli_s']:.2f} |\n"
            f"| `discrepancy analyze` (new process), CPU | | | {best['cli_cpu_s']:.2f} |\n\n"
            f"Planted phase transition at step {jump_at} in {len(SHARED)} series: found at {out['found_transition']} "
            f"in {out['transition_signals']} series.\n\n"
            f"Machine: {os.cpu_count()} CPU cores shared with other work, 1-min load average {out['load_average']:.1f} "
            f"at the end of the run.\n")
    text += ("\nBefore the figure rework (stacked bands, one artist per kind of mark; previous results file): wall "
             "5.53 + 13.54 = 19.07 s, CPU 5.03 + 9.17 = 14.20 s, load average 4.5.\n")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "analyze.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "analyze.md").write_text(text)


if __name__ == "__main__":
    main()
