"""Reading a large TensorBoard log: ``read_series`` on a 100,000-step × 40-tag log (4 M scalars, one event each as
PyTorch's SummaryWriter writes them), with our record reader (C CRC-32C), with its pure-Python checksum fallback,
and with TensorBoard's own record reader under the same decoding loop, in one run.

    .venv/bin/python benchmarks/bench_tensorboard_read.py [--steps 100000] [--tags 40]

Writes benchmarks/results/tensorboard_read.{md,json}. The log is written once by ``interop.tensorboard.frame_record``
(checksums in C: TensorBoard's own writer would spend minutes on them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"


def write_log(folder: Path, steps: int, tags: int) -> Path:
    """One event file with ``steps`` × ``tags`` scalar events (legacy simple_value, one value per event)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from discrepancy.interop.tensorboard import frame_record, record_crc

    masked = record_crc()
    rng = np.random.default_rng(0)
    path = folder / "events.out.tfevents.1.bench"
    names = [f"train/series_{k:02d}" for k in range(tags)]
    with open(path, "wb") as fh:
        fh.write(frame_record(event_pb2.Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString(), masked))
        for step in range(steps):
            vals = rng.standard_normal(tags)
            for name, v in zip(names, vals):
                ev = event_pb2.Event(wall_time=float(step), step=step,
                                     summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                                         tag=name, simple_value=float(v))]))
                fh.write(frame_record(ev.SerializeToString(), masked))
    return path


def _timed(label: str, folder: Path) -> tuple[float, tuple[int, int]]:
    from discrepancy.interop import read_series

    t0 = time.perf_counter()
    src = read_series(folder)
    dt = time.perf_counter() - t0
    print(f"{label}: {dt:.1f} s, frame {src.frame.shape}", flush=True)
    return dt, src.frame.shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--tags", type=int, default=40)
    args = ap.parse_args()
    import discrepancy.interop.tensorboard as tb

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        path = write_log(folder, args.steps, args.tags)
        write_s = time.perf_counter() - t0
        load_before = os.getloadavg()[0]
        fast, shape = _timed("ours, C CRC-32C", folder)
        sys.modules["google_crc32c"] = None  # the fallback: TensorBoard's pure-Python CRC-32C
        slow, _ = _timed("ours, pure-Python CRC-32C", folder)
        del sys.modules["google_crc32c"]
        ours = tb.event_records
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

        def tensorboards(p: Path):  # TensorBoard's record reader in the same decoding loop (the previous code)
            used = 0
            for raw in RawEventFileLoader(str(p)).Load():
                used += len(raw) + 16
                yield raw, used

        tb.event_records = tensorboards
        theirs, _ = _timed("TensorBoard's record reader", folder)
        tb.event_records = ours
        load_after = os.getloadavg()[0]
        size_mb = path.stat().st_size / 1e6
    res = {"steps": args.steps, "tags": args.tags, "file_mb": round(size_mb, 1), "frame": list(shape),
           "write_s": round(write_s, 1), "ours_c_crc_s": round(fast, 2), "ours_python_crc_s": round(slow, 2),
           "tensorboard_reader_s": round(theirs, 2), "speedup_vs_tensorboard_reader": round(theirs / fast, 2),
           "load_before": round(load_before, 2), "load_after": round(load_after, 2),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "python": platform.python_version()}
    OUT.mkdir(exist_ok=True)
    (OUT / "tensorboard_read.json").write_text(json.dumps(res, indent=2))
    md = [f"# Reading a TensorBoard log: {args.steps:,} steps × {args.tags} tags ({args.steps * args.tags:,} scalar "
          f"events, {size_mb:.0f} MB)", "",
          f"{res['machine']}, Python {res['python']}; 1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after. Same file, same decoding loop, read in turn in one run.", "",
          "| record reader | `read_series` wall time (s) |", "|---|---|",
          f"| ours, C CRC-32C (`google_crc32c`) | {fast:.1f} |",
          f"| ours, pure-Python CRC-32C fallback | {slow:.1f} |",
          f"| TensorBoard's `RawEventFileLoader` (before) | {theirs:.1f} |", "",
          f"Speed-up over TensorBoard's reader: **{theirs / fast:.1f}×**; frame {shape[0]:,} × {shape[1]}."]
    (OUT / "tensorboard_read.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
