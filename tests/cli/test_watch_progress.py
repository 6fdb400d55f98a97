"""``discrepancy watch`` on a healthy live run: it says from which step it follows and where the run is, on stderr,
at most once per --progress seconds; stdout keeps only the event lines."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from typer.testing import CliRunner

from discrepancy.cli import app

from test_watch import WRITER


def test_a_healthy_live_run_says_where_it_is(tmp_path) -> None:
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "25", "0.1"])  # ~2.5 s; events from 32 only
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        res = CliRunner().invoke(app, ["watch", str(path), "--interval", "0.1", "--progress", "0.5"])
        took = time.monotonic() - start
    finally:
        writer.wait(60)
    assert res.exit_code == 0 and res.stdout == ""  # no event: nothing on stdout
    err = res.stderr.splitlines()
    assert re.fullmatch(r"following .*live\.h5 (from step \d+|\(no step written yet\)): .*", err[0])
    steps = [int(m.group(1)) for ln in err[1:-1] if (m := re.fullmatch(r"at step (\d+) \(\+\d+ in \d+ s\), 0 event\(s\) so far", ln))]
    assert len(steps) == len(err) - 2 and steps == sorted(set(steps))  # only progress lines between, moving on
    assert 1 <= len(steps) <= took / 0.5 + 1  # at most one per --progress seconds
    assert err[-1] == "run finished after step 25"
