"""The corrupted-file corpus (tests/runfile/corpus.py) through ``inspect``, ``analyze`` and ``recover``, each
command in a worker process with a time limit and a memory cap.

Every outcome is counted as one of: a clean error (non-zero exit, one line "error: <file>: ..."), ok (exit 0 and
the same output as for the intact run), warned (exit 0, a different output, and a "warning:" line saying why), or a
failure: a traceback, a hang, a crash (the worker died: a signal or the memory cap), a messy error (more than one
line), or silent-wrong (exit 0, a different output, nothing said). The truth for "the same output" is the command's
output on the intact run; for ``recover``, what a reader sees in the recovered file. A control case (a value edited
through HDF5, checksum and all) must come out silent-wrong: the harness can see what it counts.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from corpus import Case, make_cases

WORKER = Path(__file__).with_name("_corpus_worker.py")
OPEN_TIMEOUT_S = 10  # the file check's limit inside the worker (DISCREPANCY_OPEN_TIMEOUT)
JOB_TIMEOUT_S = 40  # a command slower than this is a hang
FAILURES = ("traceback", "hang", "crash", "messy", "silent-wrong")


class Worker:
    """One worker process; ``run`` returns the job's result, or {"failure": "hang" | "crash"}."""

    def __init__(self) -> None:
        env = {**os.environ, "DISCREPANCY_OPEN_TIMEOUT": str(OPEN_TIMEOUT_S)}
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env, cwd=WORKER.parent)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + JOB_TIMEOUT_S + 60  # + the worker's start (imports) on the first job
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return {"failure": "hang"}
            if line is None:
                return {"failure": "crash"}
            msg = json.loads(line)
            if "start" in msg:
                deadline = time.monotonic() + JOB_TIMEOUT_S
                continue
            return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _jobs(command: str, path: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if command == "inspect":
        return {"args": ["inspect", str(path), "--format", "json"]}
    if command == "analyze":
        return {"args": ["analyze", str(path), "--format", "json", "--out", str(work / "analysis")]}
    out = work / "recovered.h5"
    return {"args": ["recover", str(path), "--out", str(out)], "digest": str(out)}


def _normal(result: dict, path: Path, work: Path) -> tuple[str, str | None]:
    """The output with the file's and the work folder's names taken out, and the recovered file's digest."""
    text = result.get("stdout", "").replace(str(work), "WORK").replace(str(path), "RUN")
    return text, result.get("digest")


def classify(case: Case, result: dict, reference: tuple[str, str | None], path: Path, work: Path) -> str:
    if "failure" in result:
        return result["failure"]
    if result["exception"] is not None or "Traceback" in result["stdout"] + result["stderr"]:
        return "traceback"
    said = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    warned = any(ln.startswith("warning:") for ln in said) or "dropped the damaged" in result["stdout"]
    if result["exit"] != 0:
        errors = [ln for ln in said if not ln.startswith(("warning:", "note:"))]
        return "clean-error" if len(errors) == 1 and errors[0].startswith("error: ") else "messy"
    if str(result.get("digest", "")).startswith("unreadable"):
        return "traceback"
    return "ok" if _normal(result, path, work) == reference else "warned" if warned else "silent-wrong"


def run_command(command: str, cases: list[Case], source: Path, work: Path) -> tuple[Counter, list[str]]:
    """Every case through one command in one worker (replaced after a hang or a crash); outcomes and misfits."""
    counts: Counter = Counter()
    seen: dict[str, str] = {}
    bad: list[str] = []
    worker = Worker()
    try:
        ref = worker.run({"id": "ref", **_jobs(command, source, work / "ref")})
        assert ref.get("exit") == 0, ref
        reference = _normal(ref, source, work / "ref")
        for case in cases:
            result = worker.run({"id": case.name, **_jobs(command, case.path, work / case.name)})
            if "failure" in result:
                worker.proc.kill()
                worker.close()
                worker = Worker()
            outcome = classify(case, result, reference, case.path, work / case.name)
            if case.expect == "control":  # the harness must see an edit no checksum can catch
                if command != "analyze" and outcome != "silent-wrong":  # analyze's summary of 10 steps omits it
                    bad.append(f"{command} {case.name}: the control case came out {outcome}, not silent-wrong")
                continue
            counts[outcome] += 1
            seen[case.name] = f"{outcome}: {(result.get('stderr') or '').strip()[:200]}"
            wanted = {"error": ("clean-error",), "warn": ("warned", "clean-error", "ok")}.get(
                case.expect, ("clean-error", "ok", "warned"))
            said = result.get("stderr", "") + result.get("stdout", "")
            must_say = case.message and (outcome != "ok" or case.expect == "warn")
            if outcome not in wanted or (must_say and case.message not in said):
                bad.append(f"{command} {case.name} ({case.expect}): {outcome}: {said.strip()[:300]}")
    finally:
        worker.close()
    counts["_cases"] = seen  # type: ignore[assignment] - reported, not counted
    return counts, bad


@pytest.mark.slow
def test_corpus_gives_no_traceback_hang_or_silent_wrong_result(real_run, tmp_path):
    cases = make_cases(real_run, tmp_path / "corpus")
    started = time.monotonic()
    results: dict[str, tuple[Counter, list[str]]] = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c, run_command(c, cases, real_run,
                                                                                      tmp_path / c)))
               for c in ("inspect", "analyze", "recover")]  # one worker each, side by side
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"inspect", "analyze", "recover"}, "a command's worker loop failed"
    outcomes = {cmd: results[cmd][0].pop("_cases") for cmd in results}
    table = {cmd: dict(results[cmd][0]) for cmd in ("inspect", "analyze", "recover")}
    bad = [line for cmd in table for line in results[cmd][1]]
    total = sum((results[cmd][0] for cmd in table), Counter())
    files = sum(c.expect != "control" for c in cases)
    print(f"\ncorpus: {files} files (+1 control) x 3 commands in {time.monotonic() - started:.0f} s: {table}; "
          f"total {dict(total)}")
    Path(os.environ.get("CORPUS_REPORT", os.devnull)).write_text(json.dumps({"counts": table, "bad": bad,
                                                                                 "outcomes": outcomes}, indent=1))
    assert not bad, "\n".join(bad)
    assert all(total[f] == 0 for f in FAILURES), table
