"""``discrepancy watch``: early-warning events of a run written elsewhere, printed as they come."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

FAIL_EXIT = 4  # the watched run raised an event at --fail-on's severity or worse (docs/early-warning.md)


def watch(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5).",
                                        show_default=False)],
    once: Annotated[bool, typer.Option("--once", help="judge the steps written so far and exit")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds between reads of a live run")] = 2.0,
    wait: Annotated[float, typer.Option(
        "--wait", min=0.0, help="seconds to wait for a run file that does not exist yet (a training run creates it "
                                "after its cold start), unless --once")] = 0.0,
    fail_on: Annotated[Literal["critical", "warning", "notice", "never"], typer.Option(
        "--fail-on", help="exit with code 4 when an event of this severity or worse was printed: critical, warning, "
                          "notice, or never")] = "critical",
    progress: Annotated[float, typer.Option(
        "--progress", min=0.0, help="seconds between progress lines on stderr while following a live run (only "
                                    "when it moved on); 0: only the line saying from which step it follows")] = 10.0,
) -> None:
    """Print the early-warning events of a run (one line each, as `discrepancy train` prints them), following a run
    that is still being written until its writer ends. The rules and thresholds are the run's recorded
    early_warning section of its config, or the defaults (docs/early-warning.md). Exit code 4 when an event of
    --fail-on's severity was printed, 0 otherwise. Events go to stdout; on stderr, while following a live run, from
    which step it follows and a progress line at most every --progress seconds."""
    from discrepancy.analysis.online.events import at_least
    from discrepancy.analysis.online.follow import Progress, WatchEnd, watch_run

    if not once and not run.exists():
        _wait_for(run, wait, interval)
    end, failed, said = WatchEnd(), False, Progress(every=progress)

    def on_read(now: WatchEnd) -> None:
        line = said.line(run, now.last_step)
        if line is not None:
            typer.echo(line, err=True)

    for ev in watch_run(run, follow=not once, interval=interval, end=end, on_read=on_read):
        typer.echo(ev.line())
        said.events += 1
        failed |= fail_on != "never" and at_least(ev.severity, fail_on)
    message = f" ({end.message})" if end.message else ""
    if end.status == "incomplete":  # the writer is gone without closing the file
        message += f"; `discrepancy recover {run}` writes a clean, closed copy of every flushed step"
    typer.echo(f"run {end.status} after step {end.last_step}{message}", err=True)
    if failed:
        raise typer.Exit(code=FAIL_EXIT)


def _wait_for(run: Path, seconds: float, interval: float) -> None:
    """Poll until ``run`` exists (said once on stderr), or raise the reader's "no such file" after ``seconds``."""
    from discrepancy.runfile.errors import RunNotFound

    if seconds <= 0:
        raise RunNotFound(run, "no such file (a training run creates it after its cold start: --wait 600 waits for "
                               "it)")
    typer.echo(f"waiting up to {seconds:g} s for {run} to appear (a training run creates it after its cold "
               "start; Ctrl-C stops)", err=True)
    deadline = time.monotonic() + seconds
    while not run.exists():
        if time.monotonic() >= deadline:
            raise RunNotFound(run, f"no such file after waiting {seconds:g} s (--wait)")
        time.sleep(min(interval, 1.0))
