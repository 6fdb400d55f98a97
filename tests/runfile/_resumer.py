"""Resumes a run at FROM_STEP and logs steps slowly, to be killed at some moment. Usage: python _resumer.py PATH FROM
Prints START once imported (just before resuming) and RESUMED once the run file is reopened."""

import sys
import time

from discrepancy.runfile import Recorder

path, start = sys.argv[1], int(sys.argv[2])
print("START", flush=True)
with Recorder.resume(path, from_step=start, flush_every=2) as rec:
    print("RESUMED", flush=True)
    for step in range(start, start + 10**6):
        rec.log_step(step, {"s0": -float(step)})
        time.sleep(0.01)
