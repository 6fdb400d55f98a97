"""Recorder cost per step and what survives a kill -9.

1. Append cost: one step of 50 scalars through ``Recorder.log_step`` (buffered, flushed every 10 steps) versus the
   naive way (resize + write every dataset every step, flush every 10), side by side in one run, A B A B.
2. Crash: a writer process logs steps continuously and is killed with SIGKILL; we compare the last step it logged
   with the steps a reader recovers from the file.

Run: .venv/bin/python benchmarks/bench_recorder.py  (writes benchmarks/results/recorder.json)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

from discrepancy.runfile import Recorder, RunSchema, open_run

N_SERIES, N_STEPS, FLUSH = 50, 5000, 10
NAMES = [f"metric_{i:02d}" for i in range(N_SERIES)]


def recorder_run(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds per step (CPU time is less inflated by other processes on a shared machine)."""
    rows = [{n: float(step * i) for i, n in enumerate(NAMES)} for step in range(N_STEPS)]
    with Recorder.create(path, RunSchema(series={n: "" for n in NAMES}), flush_every=FLUSH) as rec:
        start, cpu = time.perf_counter(), time.process_time()
        for step, row in enumerate(rows):
            rec.log_step(step, row)
        rec.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        rec.finish()
    return elapsed / N_STEPS, cpu / N_STEPS


def naive_run(path: Path) -> tuple[float, float]:
    with h5py.File(path, "w", libver="latest") as f:
        dsets = [f.create_dataset(n, shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,)) for n in NAMES]
        f.swmr_mode = True
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(N_STEPS):
            for i, ds in enumerate(dsets):
                ds.resize((step + 1,))
                ds[step] = float(step * i)
            if step % FLUSH == FLUSH - 1:
                f.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return elapsed / N_STEPS, cpu / N_STEPS


_WRITER = """
import sys, time
from discrepancy.runfile import Recorder, RunSchema
with Recorder.create(sys.argv[1], RunSchema(series={f"m{i}": "" for i in range(50)}), flush_every=10) as rec:
    step = 0
    while True:
        rec.log_step(step, {f"m{i}": step for i in range(50)})
        print(step, flush=True)
        step += 1
        time.sleep(0.002)
"""


def crash_run(path: Path, seconds: float) -> dict[str, int]:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # the first step is logged: the writer is up
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    logged = int((["0"] + out.split())[-1]) + 1
    with open_run(path) as run:
        recovered = run.num_steps
        status = run.status
        intact = bool((run.series()["m7"].to_numpy() == run.steps).all())
    return {"steps_logged": logged, "steps_recovered": recovered, "lost": logged - recovered,
            "status": status, "values_intact": intact}


def main() -> None:
    results: dict[str, object] = {"n_series": N_SERIES, "n_steps": N_STEPS, "flush_every": FLUSH}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        ours, naive = [], []
        for rep in range(2):  # A B A B: the machine is shared and noisy
            ours.append(recorder_run(tmpdir / f"a{rep}.h5"))
            naive.append(naive_run(tmpdir / f"b{rep}.h5"))
        for label, runs in (("recorder", ours), ("naive", naive)):
            results[f"{label}_wall_us_per_step"] = round(1e6 * min(r[0] for r in runs), 1)
            results[f"{label}_cpu_us_per_step"] = round(1e6 * min(r[1] for r in runs), 1)
        results["naive_over_recorder_wall"] = round(results["naive_wall_us_per_step"] / results["recorder_wall_us_per_step"], 1)
        results["load_average_1min"] = os.getloadavg()[0]
        results["crash"] = [crash_run(tmpdir / f"crash{k}.h5", s) for k, s in enumerate((0.7, 1.3, 2.1))]
    out = Path(__file__).parent / "results" / "recorder.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
