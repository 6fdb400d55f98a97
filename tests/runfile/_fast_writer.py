"""A run writer that flushes a step of sample strings every few milliseconds, for the live-reading stress test.

Usage: python _fast_writer.py PATH SECONDS [STOP_FILE]   (stops early once STOP_FILE exists)
"""

import os
import sys
import time

from discrepancy.runfile import Recorder, RunSchema

path, seconds = sys.argv[1], float(sys.argv[2])
stop_file = sys.argv[3] if len(sys.argv) > 3 else None
with Recorder.create(path, RunSchema(series={"a": ""}, sample_fields=["r"]), flush_every=1) as rec:
    start, step = time.time(), 0
    while time.time() - start < seconds and not (stop_file and os.path.exists(stop_file)):
        step += 1
        rec.log_step(step, {"a": float(step)})
        rec.log_samples(step, prompt_ids=[f"p{step}-{i}" for i in range(4)], prompts=["q" * 50] * 4,
                        completions=["c" * (step % 200 + 1)] * 4, fields={"r": [1.0] * 4})
        time.sleep(0.002)
    rec.finish()
