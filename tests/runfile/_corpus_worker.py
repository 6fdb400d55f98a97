"""Runs CLI commands on run files for the corpus test, one job per stdin line, one JSON result per stdout line.

A job: {"id": .., "args": [...], "digest": PATH or null}. Before each job the worker prints {"start": id}, so the
parent can tell a hang (no result within its time limit: it kills this process and starts another) from a crash
(the process died). With "digest", the run file written by the command is read back and summarised, so the parent
can compare a recovered copy with the recovery of the intact run. The address space is capped (RLIMIT_AS): a
command asking for memory a damaged file declares fails here instead of exhausting the machine.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import warnings

LIMIT = 6 * 2**30
try:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
except (ValueError, OSError):  # a system that does not enforce it (macOS): the time limit still applies
    pass
warnings.simplefilter("always")  # the same warning for another file must be said again

from typer.testing import CliRunner  # noqa: E402 - after the limits

from discrepancy.cli import app  # noqa: E402


def digest(path: str) -> str:
    """What a reader sees in a run file: summary, every series value, every sample, every snapshot tensor."""
    from discrepancy.runfile import open_run

    h = hashlib.sha256()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recovered copy must read without any warning
        with open_run(path) as run:
            h.update(json.dumps([run.stored_status, run.num_steps, run.snapshot_steps, run.meta,
                                 run.config_toml], default=str).encode())
            h.update(run.series().to_numpy().tobytes())
            h.update(run.samples().to_json().encode("utf-8", "surrogatepass"))
            for step in run.snapshot_steps:
                for name, value in sorted(run.snapshot(step).items()):
                    h.update(name.encode() + value.tobytes())
    return h.hexdigest()


def main() -> None:
    runner = CliRunner()
    for line in sys.stdin:
        job = json.loads(line)
        print(json.dumps({"start": job["id"]}), flush=True)
        result = runner.invoke(app, job["args"])
        exc = result.exception
        out = {"id": job["id"], "exit": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
               "exception": None if exc is None or isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"}
        if job.get("digest") and result.exit_code == 0:
            try:
                out["digest"] = digest(job["digest"])
            except Exception as err:  # noqa: BLE001 - reported to the parent as a bad output
                out["digest"] = f"unreadable: {type(err).__name__}: {err}"
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
