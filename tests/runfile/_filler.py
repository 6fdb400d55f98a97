"""A run writer that logs steps until its disk (or its file size limit) is full, then reports as the CLI does: one
line on stderr, the error's exit code. Usage: python _filler.py PATH
"""

import sys

import numpy as np

from discrepancy.errors import DiscrepancyError
from discrepancy.runfile import Recorder, RunSchema

schema = RunSchema(series={f"s{i}": "" for i in range(20)}, sample_fields=["r"], snapshot_tensors={"w": (64, 64)})
try:
    with Recorder.create(sys.argv[1], schema, flush_every=5) as rec:
        for step in range(10**6):
            rec.log_step(step, {f"s{i}": step * 100 + i for i in range(20)})
            rec.log_samples(step, prompt_ids=[f"p{step}"], prompts=["q" * 50], completions=["c" * 300],
                            fields={"r": [float(step)]})
            if step % 20 == 0:
                rec.log_snapshot(step, {"w": np.full((64, 64), step, dtype=np.float32)})
except DiscrepancyError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
