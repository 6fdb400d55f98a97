"""``discrepancy llc`` on the demo run with its defaults: wall time, calibration cost, per-snapshot times, health.

    .venv/bin/python benchmarks/bench_llc_run.py [RUN]     # writes benchmarks/results/llc_run.{json,md}

RUN defaults to ``runs/demo/run.h5`` (``make demo``); when it is missing, a demo run is trained first into a
temporary folder with ``discrepancy train`` (its time is not counted). The command runs in a subprocess exactly as a
user types it (``discrepancy llc RUN --out DIR``, nothing else), outside a terminal, so its progress arrives as plain
lines on stderr; each line is timestamped as it arrives. The machine's load average is recorded before and after:
the machine is shared, and the wall time is only meaningful next to it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLI = Path(sys.executable).with_name("discrepancy")
TARGET_S = 60.0


def _demo_run(tmp: Path) -> Path:
    run = ROOT / "runs" / "demo" / "run.h5"
    if run.exists():
        return run
    run = tmp / "demo" / "run.h5"
    run.parent.mkdir(parents=True)
    subprocess.run([str(CLI), "train", "--out", str(run)], check=True, capture_output=True)
    return run


def _run_llc(run: Path, out: Path) -> dict:
    """Run the command and timestamp every stderr line as it arrives."""
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(CLI), "llc", str(run), "--out", str(out), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # progress: one line per phase
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    stdout = proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"discrepancy llc failed ({proc.returncode}): {lines[-3:]}")
    doc = json.loads(stdout)
    first_row = next((t for t, line in lines if line.startswith("[1/")), None)
    per_snapshot = [float(m.group(1)) for _, line in lines if (m := re.search(r"\(([\d.]+) s\)$", line))]
    return {
        "wall_s": wall, "load_before": load_before, "load_after": os.getloadavg(),
        "first_row_written_s": first_row, "calibration_s": doc["settings"]["calibration_seconds"],
        "per_snapshot_s": per_snapshot, "estimates": doc["estimates"], "stage_boundaries": doc["stage_boundaries"],
        "settings": {k: v for k, v in doc["settings"].items() if not k.startswith("run_")},
        "progress_lines": [f"{t:6.1f} s  {line}" for t, line in lines if not line.startswith(("\r", "Loading"))],
    }


def _markdown(r: dict) -> str:
    s = r["settings"]
    ok = sum(e["health"] == "ok" for e in r["estimates"])
    lines = [
        "# `discrepancy llc` on the demo run, default options", "",
        f"{r['machine']}, torch {r['torch']}, {os.cpu_count()} cores (shared); run: `{r['run']}` "
        f"({len(r['estimates'])} snapshots, {s['num_params']:,} LoRA parameters, {s['probe_tokens']} evaluation "
        "tokens).", "",
        f"- wall time of the command: **{r['wall_s']:.1f} s** (target < {TARGET_S:.0f} s); load average "
        f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after",
        f"- calibration (once, on the last snapshot, reused): {r['calibration_s']:.1f} s",
        f"- first row of llc.csv written after {r['first_row_written_s']:.1f} s; per snapshot "
        f"{min(r['per_snapshot_s']):.1f}–{max(r['per_snapshot_s']):.1f} s",
        f"- settings: ε = {s['step_size']:.3g}, γ = {s['localization']:.3g}, nβ = {s['nbeta']:.3g}, "
        f"{s['num_chains']} chains × ({s['num_burnin']} burn-in + {s['num_draws']}) draws, loss {s['loss']}",
        f"- healthy estimates: **{ok} of {len(r['estimates'])}**; stage boundaries: {r['stage_boundaries'] or 'none'}",
        "", "| step | LLC | ± s.e. | chain std | health |", "|---|---|---|---|---|",
    ]
    for e in r["estimates"]:
        lines.append(f"| {e['step']} | {e['llc_mean']:.1f} | {e['llc_se']:.2f} | {e['llc_std']:.2f} | {e['health']} |")
    lines += ["", "Progress as printed on stderr (seconds since start):", "", "```", *r["progress_lines"], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as d:
        run = Path(sys.argv[1]) if len(sys.argv) > 1 else _demo_run(Path(d))
        r = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
             "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run)}
        r |= _run_llc(run, Path(d) / "llc")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "llc_run.json").write_text(json.dumps(r, indent=2))
    (RESULTS / "llc_run.md").write_text(_markdown(r))
    sys.stdout.write(_markdown(r))


if __name__ == "__main__":
    main()
