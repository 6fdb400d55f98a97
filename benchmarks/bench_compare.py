"""``discrepancy compare`` on three demo runs of the default recipe (seeds 0, 1, 2): wall time and which events
recur across the seeds.

    .venv/bin/python benchmarks/bench_compare.py [RUN RUN RUN]     # writes benchmarks/results/compare.{json,md}

Without arguments the three runs are trained first (``discrepancy train --seed k``, not timed) into
``benchmarks/.cache/compare/`` and reused on the next call. The command runs in a subprocess as a user types it;
the machine's load average is recorded before and after (the machine is shared).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "compare"
CLI = Path(sys.executable).with_name("discrepancy")
TARGET_S = 30.0


def _runs(args: list[str]) -> list[Path]:
    if args:
        return [Path(a) for a in args]
    runs = []
    for seed in range(3):
        run = CACHE / f"seed{seed}" / "run.h5"
        if not run.exists():
            run.parent.mkdir(parents=True, exist_ok=True)
            print(f"training seed {seed} into {run} (not timed)", flush=True)
            subprocess.run([str(CLI), "train", "--out", str(run), "--seed", str(seed), "--force"], check=True,
                           capture_output=True)
        runs.append(run)
    return runs


def main() -> None:
    runs = _runs(sys.argv[1:])
    out = CACHE / "out"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([str(CLI), "compare", *map(str, runs), "--out", str(out), "--format", "json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"compare failed: {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    result = {"wall_s": wall, "target_s": TARGET_S, "runs": [str(r) for r in runs], "tolerance": doc["tolerance"],
              "load_before": load_before, "load_after": os.getloadavg(), "cpus": os.cpu_count(),
              "machine": platform.machine(), "recurrence": doc["recurrence"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "compare.md").write_text(_markdown(result))
    sys.stdout.write(_markdown(result))


def _markdown(r: dict) -> str:
    rec = r["recurrence"]
    everywhere = [g for g in rec if g["runs_with"] == len(r["runs"])]
    lines = [f"# `discrepancy compare` on {len(r['runs'])} runs of the default recipe (seeds 0–2)", "",
             f"{r['machine']}, {r['cpus']} cores (shared). Runs: {', '.join(r['runs'])}.", "",
             f"- wall time of the command: **{r['wall_s']:.1f} s** (target < {r['target_s']:.0f} s); load average "
             f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after",
             f"- tolerance: {r['tolerance']} steps; {len(everywhere)} event group(s) in all runs, "
             f"{sum(g['runs_with'] >= 2 for g in rec)} in at least two, of {len(rec)} groups", "",
             "## Events found in at least two runs", "",
             "| group | kind | signal | runs | median step | spread | p_chance | members |",
             "|---|---|---|---|---|---|---|---|"]
    for g in rec:
        if g["runs_with"] >= 2:
            sig = g["signal"] + (f" ({g['direction']})" if g["direction"] else "")
            lines.append(f"| {g['group']} | {g['kind']} | {sig} | {g['runs_with']}/{g['runs']} | "
                         f"{g['step_median']:g} | {g['spread']} | {g['p_chance']:.2g} | {g['members']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
