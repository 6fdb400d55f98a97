"""``discrepancy analyze RUN``: jumps, plateaus and phase transitions of a run, as a table, files and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from discrepancy.errors import DiscrepancyError


def _print_table(res) -> None:  # noqa: ANN001 - AnalysisResult, imported lazily
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{res.path}[/bold]: status {res.status}, {res.num_steps} steps, "
                  f"{len(res.transitions)} phase transition(s), {len(res.jumps)} jump(s), {len(res.plateaus)} plateau(s)")
    if not res.transitions.empty:
        t = Table(title="Phase transitions (jumps at about the same step in several signal families or signals)")
        for col in ("event", "step", "steps", "signals", "max |z|"):
            t.add_column(col)
        for r in res.transitions.itertuples():
            t.add_row(r.event, str(r.step), f"{r.first_step}–{r.last_step}", r.signals, f"{r.max_abs_z:.1f}")
        console.print(t)
    if not res.signals.empty:
        t = Table(title="Signals")
        for col in ("signal", "family", "jumps", "plateaus", "jump fraction", "first jumps (step:size)"):
            t.add_column(col)
        for r in res.signals.itertuples():
            js = res.jumps[res.jumps["signal"] == r.signal].head(4)
            first = ", ".join(f"{s}:{v:+.3g}" for s, v in zip(js["step"], js["size"]))
            t.add_row(r.signal, r.family, str(r.n_jumps), str(r.n_plateaus), _fraction(r.jump_fraction), first)
        console.print(t)


def analyze(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5); finished, live or crashed.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN.analysis next to the run).")] = None,
    signals: Annotated[list[str] | None, typer.Option("--signals", help="Series to analyse (repeat or comma-separate; default: all).")] = None,
    smooth: Annotated[int, typer.Option("--smooth", min=0, help="Centred running median of this many steps before detection (0: none).")] = 0,
    log_axis: Annotated[bool, typer.Option("--log-axis/--no-log-axis", help="Also look for jumps on a log-step axis (early events).")] = True,
    min_families: Annotated[int, typer.Option("--min-families", min=1, help="A phase transition needs jumps from at least this many signal families ...")] = 2,
    min_signals: Annotated[int, typer.Option("--min-signals", min=2, help="... or from at least this many signals of any family.")] = 3,
    timing_jumps: Annotated[bool, typer.Option("--timing-jumps/--no-timing-jumps", help="Also search per-step timing series (time_*, *_time: step, sample, score, train, instrument) for jumps; they follow machine load, so by default they are only plotted.")] = False,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="table for people, json (summary.json content) for machines.")] = "table",
) -> None:
    """Find jumps, plateaus and phase transitions in a run; write events.csv, summary.json, PNGs and report.html."""
    from discrepancy.analysis.pipeline import analyze as run_analysis
    from discrepancy.report import summary_dict, write_outputs
    from discrepancy.runfile.results import output_dir

    names = [s.strip() for item in signals or [] for s in item.split(",") if s.strip()] or None
    out = output_dir(run, out)
    if out.resolve() == run.resolve():
        raise DiscrepancyError("--out must be a folder, not the run file itself")
    res = run_analysis(run, signals=names, smooth=smooth, log_axis=log_axis, min_signals=min_signals,
                       min_families=min_families, timing_jumps=timing_jumps)
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)
    paths = write_outputs(res, out)
    if format == "json":
        typer.echo(json.dumps(summary_dict(res), indent=2, default=str))
    else:
        _print_table(res)
    n_png = sum(1 for key in paths if key.startswith("figure:"))
    pngs = f", {n_png} PNG{'s' if n_png != 1 else ''}" if n_png else " (no figures: too few steps or no signals)"
    typer.echo(f"wrote {paths['report']} and {paths['events'].name}, {paths['summary'].name}{pngs} in {out}", err=True)


def _fraction(value: float) -> str:
    """A share for the table; '–' where it is undefined (a series not searched, e.g. timings), as the report."""
    return "–" if value != value else f"{value:.2f}"
