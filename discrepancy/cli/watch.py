"""``discrepancy watch``: early-warning events of a run written elsewhere, printed as they come."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def watch(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5).",
                                        show_default=False)],
    once: Annotated[bool, typer.Option("--once", help="judge the steps written so far and exit")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds between reads of a live run")] = 2.0,
) -> None:
    """Print the early-warning events of a run (one line each, as `discrepancy train` prints them), following a run
    that is still being written until its writer ends. The rules and thresholds are the run's recorded
    early_warning section of its config, or the defaults (docs/early-warning.md)."""
    from discrepancy.analysis.online.follow import WatchEnd, watch_run

    end = WatchEnd()
    for ev in watch_run(run, follow=not once, interval=interval, end=end):
        typer.echo(ev.line())
    message = f" ({end.message})" if end.message else ""
    typer.echo(f"run {end.status} after step {end.last_step}{message}", err=True)
