"""Exporting a run to TensorBoard: ``discrepancy export --to tensorboard`` of one run file through our event file
writer (checksums by ``record_crc``: C CRC-32C) and through TensorBoard's ``EventFileWriter`` (the writer the export
used before: a pure-Python CRC-32C per record), alternating in one run, the same run file each time.

    .venv/bin/python benchmarks/bench_tensorboard_write.py [--steps 20000] [--series 40] [--repeats 3]

The run: ``--steps`` steps of ``--series`` series and one 8-label array, 8 recorded completions every 10th step,
a LoRA snapshot every 1,000th. Both files are read back with TensorBoard's own reader and must hold the same
records after the file-version event (event times fixed for the comparison). Writes
benchmarks/results/tensorboard_write.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"


def write_run(path: Path, steps: int, series: int) -> Path:
    """A finished run file of ``steps`` steps (module docstring)."""
    from discrepancy.runfile import ArraySpec, Recorder, RunSchema

    rng = np.random.default_rng(0)
    names = [f"reward_{k:02d}" if k < 4 else f"series_{k:02d}" for k in range(series)]
    labels = [f"q_proj.{k}" for k in range(8)]
    schema = RunSchema(series={n: f"the measured quantity {n}" for n in names},
                       arrays={"lora_norm": ArraySpec(columns=labels, description="‖(α/r)BA‖_F per module")},
                       sample_fields=["correctness", "format"], snapshot_tensors={"lora_A": (8, 64)})
    completion = "<think>" + "adding the two numbers " * 6 + "</think><answer>42</answer>"
    with Recorder.create(path, schema) as rec:
        for step in range(1, steps + 1):
            rec.log_step(step, dict(zip(names, rng.standard_normal(series).tolist())),
                         arrays={"lora_norm": rng.uniform(size=len(labels))})
            if step % 10 == 0:
                rec.log_samples(step, prompt_ids=[f"p{k}" for k in range(8)], prompts=["What is 40 + 2?"] * 8,
                                completions=[completion] * 8, fields={"correctness": [1.0] * 8, "format": [1.0] * 8})
            if step % 1000 == 0:
                rec.log_snapshot(step, {"lora_A": rng.standard_normal((8, 64)).astype(np.float32)})
        rec.finish()
    return path


class TensorBoardsWriter:
    """TensorBoard's ``EventFileWriter`` behind ``EventFile``'s signature (the export's writer before)."""

    def __init__(self, logdir: Path, suffix: str, flush_secs: float) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._w = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=flush_secs, filename_suffix=suffix)
        self.add_event, self.flush, self.close = self._w.add_event, self._w.flush, self._w.close


def export_once(run: Path, out: Path, writer: type | None) -> tuple[float, Path]:
    """Wall seconds of one export of ``run`` into ``out`` (``writer``: TensorBoard's, or None for ours)."""
    import discrepancy.interop.tensorboard as tb
    from discrepancy.analysis.pipeline import family_of
    from discrepancy.interop.export import export_run

    ours = tb.EventFile
    tb.EventFile = writer or ours
    try:
        t0 = time.perf_counter()
        export_run(run, "tensorboard", out, family=family_of)
        dt = time.perf_counter() - t0
    finally:
        tb.EventFile = ours
    (path,) = out.glob("events.out.tfevents.*")
    return dt, path


def records(path: Path) -> list[bytes]:
    """Every record TensorBoard's own reader finds (it must read the file to its end)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    found = list(RawEventFileLoader(str(path)).Load())
    assert sum(len(r) + 16 for r in found) == path.stat().st_size, f"{path}: TensorBoard stopped before its end"
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import discrepancy.interop.export as export

    export._wall_times = lambda s: np.arange(len(s), dtype=np.float64) + 1e9  # fixed: the two files comparable
    times: dict[str, list[float]] = {"ours": [], "tensorboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run.h5", args.steps, args.series)
        load_before = os.getloadavg()[0]
        files = {}
        for i in range(args.repeats):  # alternating: a change of machine load falls on both
            for name, writer in (("tensorboard", TensorBoardsWriter), ("ours", None)):
                dt, files[name] = export_once(run, Path(tmp) / name, writer)
                times[name].append(dt)
                print(f"{name} #{i + 1}: {dt:.2f} s", flush=True)
        load_after = os.getloadavg()[0]
        mine, theirs = records(files["ours"]), records(files["tensorboard"])
        same = mine[1:] == theirs[1:]
        size_mb = files["ours"].stat().st_size / 1e6
    assert same, "the two writers wrote different records"
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"steps": args.steps, "series": args.series, "events": len(mine), "file_mb": round(size_mb, 2),
           "repeats": args.repeats, "ours_s": [round(t, 2) for t in times["ours"]],
           "tensorboard_writer_s": [round(t, 2) for t in times["tensorboard"]],
           "median_ours_s": round(med["ours"], 2), "median_tensorboard_writer_s": round(med["tensorboard"], 2),
           "speedup": round(med["tensorboard"] / med["ours"], 2), "same_records": same,
           "load_before": round(load_before, 2), "load_after": round(load_after, 2),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "python": platform.python_version()}
    OUT.mkdir(exist_ok=True)
    (OUT / "tensorboard_write.json").write_text(json.dumps(res, indent=2))
    md = [f"# Exporting a run to TensorBoard: {args.steps:,} steps × {args.series} series + an 8-label array, "
          f"samples every 10th step ({len(mine):,} events, {size_mb:.0f} MB)", "",
          f"{res['machine']}, Python {res['python']}; 1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after. The same run file exported {args.repeats} times by each writer, alternating; "
          "both files read to their end by TensorBoard's own reader, the same records after the file-version event.",
          "", "| event file writer | `export --to tensorboard` wall time (s), median | each run (s) |", "|---|---|---|",
          f"| TensorBoard's `EventFileWriter`, pure-Python CRC-32C (before) | {med['tensorboard']:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in times['tensorboard'])} |",
          f"| ours (`interop.tensorboard.EventFile`), C CRC-32C (`google_crc32c`) | {med['ours']:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in times['ours'])} |", "",
          f"Speed-up of the export: **{res['speedup']:.1f}×**."]
    (OUT / "tensorboard_write.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
