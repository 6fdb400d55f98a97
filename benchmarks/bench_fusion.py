"""Reward fusion rules side by side on the default recipe: fixed weights, headroom (DTP) and DWA, three seeds each,
the same rewards, steps and samples.

    .venv/bin/python benchmarks/bench_fusion.py [--steps 150] [--seeds 0 1 2]   # → benchmarks/results/fusion.md

Rewards: correctness 1.0, format 0.25, contrastive 0.5 (base weights; the adaptive rules keep their sum, 1.75).
Reported per run: the mean of each unweighted component over the last 20 % of steps, the first step at which the
format reward's 5-step mean reaches 0.9, the fraction of zero-std groups, the weights at the end, and seconds. Runs
alternate rule by rule within a seed, so load drifts touch every rule alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from cli_runs import train_series  # benchmarks/cli_runs.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REWARDS = ['rewards.names=["correctness","format","contrastive"]', "rewards.weights=[1.0,0.25,0.5]"]
RULES = {"fixed": [], "headroom": ["fusion.rule=\"headroom\"", "fusion.window=10"],
         "dwa": ["fusion.rule=\"dwa\"", "fusion.window=10"]}
NAMES = ("correctness", "format", "contrastive")


def _run(out: Path, seed: int, steps: int, rule: str) -> dict:
    s, seconds = train_series(out, seed, steps, [*REWARDS, *RULES[rule]])
    tail = s.iloc[-max(1, len(s) // 5):]
    fmt = s["reward_format"].rolling(5, min_periods=5).mean()
    reached = fmt.index[fmt >= 0.9]
    row = {"seed": seed, "rule": rule, "steps": len(s), "seconds": seconds,
           "format_0.9_at": int(reached[0]) if len(reached) else None,
           "zero_std_frac": float(s["frac_reward_zero_std"].mean())}
    for name in NAMES:
        row[f"{name}_last"] = float(tail[f"reward_{name}"].mean())
        col = f"reward_weight_{name}"
        row[f"w_{name}_end"] = float(s[col].iloc[-1]) if col in s else None
    return row


def _markdown(r: dict) -> str:
    lines = ["# Reward fusion rules on the default recipe", "",
             f"Rewards `{' '.join(r['rewards'])}`; {r['steps']} GRPO steps per run; 2 shared CPU cores, load average "
             f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after.", "",
             "| seed | rule | correctness last 20 % | format last 20 % | contrastive last 20 % | format ≥ 0.9 at step "
             "| zero-std groups | weights at end (corr / fmt / contr) | s |", "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        w = " / ".join("–" if x[f"w_{n}_end"] is None else f"{x[f'w_{n}_end']:.2f}" for n in NAMES)
        lines.append(f"| {x['seed']} | {x['rule']} | {x['correctness_last']:.3f} | {x['format_last']:.3f} | "
                     f"{x['contrastive_last']:.3f} | {x['format_0.9_at'] if x['format_0.9_at'] is not None else 'never'} "
                     f"| {x['zero_std_frac']:.3f} | {w} | {x['seconds']:.0f} |")
    lines.append("")
    for rule in RULES:
        part = [x for x in r["rows"] if x["rule"] == rule]
        lines.append(f"- {rule}: mean correctness last 20 % {np.mean([x['correctness_last'] for x in part]):.3f}, "
                     f"format {np.mean([x['format_last'] for x in part]):.3f}, contrastive "
                     f"{np.mean([x['contrastive_last'] for x in part]):.3f} over {len(part)} seeds")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            for rule in RULES:
                rows.append(_run(Path(d) / f"s{seed}_{rule}.h5", seed, args.steps, rule))
                print(rows[-1], flush=True)
    result = {"rows": rows, "rewards": REWARDS, "steps": args.steps, "load_before": load,
              "load_after": os.getloadavg()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fusion.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "fusion.md").write_text(_markdown(result))
    sys.stdout.write(_markdown(result))


if __name__ == "__main__":
    main()
