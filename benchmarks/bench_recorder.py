"""Recorder cost per step, what the checksums cost, what a resume costs, and what survives a kill -9.

1. Append cost: one step of 50 scalars through ``Recorder.log_step`` (buffered, flushed every 10 steps) versus the
   naive way (resize + write every dataset every step, flush every 10), side by side in one run, A B A B.
2. Checksums: the same steps, and the same with two 300-character samples per step, with and without the fletcher32
   checksums format v2 puts on every dataset (``Recorder.create(checksums=False)``), side by side, A B A B.
3. Resume: ``Recorder.resume`` rewrites the kept records into a new file (so a kill cannot brick the run); the time
   for a run of 5,000 steps with 20 snapshots of 1 MiB.
4. Crash: a writer process logs steps continuously and is killed with SIGKILL; we compare the last step it logged
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


def recorder_run(path: Path, *, checksums: bool = True, samples: int = 0) -> tuple[float, float]:
    """Wall and CPU seconds per step (CPU time is less inflated by other processes on a shared machine)."""
    rows = [{n: float(step * i) for i, n in enumerate(NAMES)} for step in range(N_STEPS)]
    texts = [f"<think>{'x' * 280}</think><answer>{k}</answer>" for k in range(samples)]
    schema = RunSchema(series={n: "" for n in NAMES}, sample_fields=["reward"] if samples else [])
    with Recorder.create(path, schema, flush_every=FLUSH, checksums=checksums) as rec:
        start, cpu = time.perf_counter(), time.process_time()
        for step, row in enumerate(rows):
            rec.log_step(step, row)
            if samples:
                rec.log_samples(step, prompt_ids=["p"] * samples, prompts=["1+1="] * samples, completions=texts,
                                fields={"reward": [1.0] * samples})
        rec.flush()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        rec.finish()
    return elapsed / N_STEPS, cpu / N_STEPS


def resume_run(path: Path) -> dict[str, float]:
    """Seconds for ``Recorder.resume`` of a finished run (N_STEPS steps, 20 snapshots of 1 MiB), and its size."""
    import numpy as np

    schema = RunSchema(series={n: "" for n in NAMES}, snapshot_tensors={"w": (512, 512)})
    with Recorder.create(path, schema, flush_every=FLUSH) as rec:
        for step in range(N_STEPS):
            rec.log_step(step, {n: float(step) for n in NAMES})
            if step % (N_STEPS // 20) == 0:
                rec.log_snapshot(step, {"w": np.full((512, 512), step, dtype=np.float32)})
        rec.finish()
    start = time.perf_counter()
    Recorder.resume(path, from_step=N_STEPS).finish()
    return {"resume_s": round(time.perf_counter() - start, 3), "run_file_mib": round(path.stat().st_size / 2**20, 1)}


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
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in (
            "recorder", "recorder_no_checksums", "naive", "recorder_samples", "recorder_samples_no_checksums")}
        results["load_average_1min_before"] = os.getloadavg()[0]
        for rep in range(2):  # A B A B: the machine is shared and noisy
            runs["recorder"].append(recorder_run(tmpdir / f"a{rep}.h5"))
            runs["recorder_no_checksums"].append(recorder_run(tmpdir / f"c{rep}.h5", checksums=False))
            runs["naive"].append(naive_run(tmpdir / f"b{rep}.h5"))
            runs["recorder_samples"].append(recorder_run(tmpdir / f"d{rep}.h5", samples=2))
            runs["recorder_samples_no_checksums"].append(recorder_run(tmpdir / f"e{rep}.h5", checksums=False,
                                                                      samples=2))
        for label, got in runs.items():
            results[f"{label}_wall_us_per_step"] = round(1e6 * min(r[0] for r in got), 1)
            results[f"{label}_cpu_us_per_step"] = round(1e6 * min(r[1] for r in got), 1)
        results["naive_over_recorder_wall"] = round(results["naive_wall_us_per_step"] / results["recorder_wall_us_per_step"], 1)
        for label in ("recorder", "recorder_samples"):  # what fletcher32 on every dataset adds, in CPU time
            results[f"checksum_cost_{label}_cpu_us_per_step"] = round(
                results[f"{label}_cpu_us_per_step"] - results[f"{label}_no_checksums_cpu_us_per_step"], 1)
        results["resume"] = resume_run(tmpdir / "resume.h5")
        results["load_average_1min"] = os.getloadavg()[0]
        results["crash"] = [crash_run(tmpdir / f"crash{k}.h5", s) for k, s in enumerate((0.7, 1.3, 2.1))]
    out = Path(__file__).parent / "results" / "recorder.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
