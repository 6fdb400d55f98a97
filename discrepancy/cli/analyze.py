"""``discrepancy analyze RUN``: jumps, plateaus and phase transitions of a run, as a table, files and a report.

RUN may also be a log of another trainer: a TensorBoard log folder, a CSV or Parquet history (a W&B export, one row
per step) or an HF ``trainer_state.json`` (``discrepancy.interop``; docs/interop.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from discrepancy.errors import DiscrepancyError


SHOWN = 12  # series listed in the terminal; the report lists every one


def _print_table(res) -> None:  # noqa: ANN001 - AnalysisResult, imported lazily
    """What happened (the report's headline), then the grouped events and the series with events; names are never
    cut, whatever the terminal width (rich folds other columns first; outside a terminal it lays out 80)."""
    from rich.console import Console
    from rich.table import Table

    import pandas as pd

    from discrepancy.report.headline import key_rows, lead

    console = Console()
    console.print(f"[bold]{res.path}[/bold]: status {res.status}, {res.num_steps} steps, "
                  f"{len(res.transitions)} phase transition(s), {len(res.episodes)} episode(s), {len(res.jumps)} "
                  f"jump(s), {len(res.transients)} transient(s), {len(res.plateaus)} plateau(s)")
    rows = key_rows(res)
    text = lead(rows, res.constant)  # the report's lead sentence, a reward that never moved first
    if text:
        console.print(text, highlight=False)
    if rows:
        t = Table(title="Key series: first vs last 20\u00a0% of steps (±\u00a095\u00a0%, autocorrelation-corrected)")
        t.add_column("series", no_wrap=True, min_width=max(len(r.name) for r in rows))
        for col in ("start", "end", "change", "note"):
            t.add_column(col, justify="right" if col != "note" else "left")
        for r in rows:
            note = f"saturated at {r.saturated_at}" if r.saturated_at is not None else ""
            if r.across:  # a curriculum run: the two ends saw other reward weights and prompts
                note = (note + "; " if note else "") + f"across phases {r.across}"
            if r.half_width != r.half_width:  # NaN: fewer than 3 values at either end (a sparse eval series)
                note = (note + "; " if note else "") + "too few values for an interval"
            width = f" ± {r.half_width:.2g}" if r.half_width == r.half_width else ""
            t.add_row(r.name, f"{r.start:.3g}", f"{r.end:.3g}", f"{r.change:+.3g}{width}", note)
        console.print(t)
    _grouped(console, Table, "Phase transitions (jumps at about the same step in several families or series; most series first, then by "
             "max |z|)",
             "max_abs_z", [(r.event, str(r.step), f"{r.first_step}–{r.last_step}", r.signals.replace(",", ", "),
               f"{r.max_abs_z:.1f}") for r in res.transitions.itertuples()])
    _grouped(console, Table, "Episodes (transients of several series at once)", "max_z",
             [(r.event, str(r.step), f"{r.first_step}–{r.last_step}", r.signals.replace(",", ", "), f"{r.max_z:.1f}")
              for r in res.episodes.itertuples()])
    busy = res.signals[(res.signals["n_jumps"] > 0) | (res.signals.get("n_transients", 0) > 0)]
    busy = busy.assign(n=busy["n_jumps"] + busy.get("n_transients", 0)).sort_values("n", ascending=False,
                                                                                     kind="stable")
    if not busy.empty:
        shown = f"the {min(SHOWN, len(busy))} with most events of {len(busy)}" if len(busy) > SHOWN else len(busy)
        t = Table(title=f"Series with jumps or transients ({shown}; every series in report.html)")
        busy = busy.head(SHOWN)
        t.add_column("signal", no_wrap=True, min_width=int(busy["signal"].str.len().max()))
        for col in ("jumps", "transients", "first events (step:size)"):
            t.add_column(col, justify="right" if col != "first events (step:size)" else "left",
                         no_wrap=col != "first events (step:size)")
        for r in busy.itertuples():
            ev = pd.concat([res.jumps.loc[res.jumps["signal"] == r.signal, ["step", "size"]],
                            res.transients.loc[res.transients["signal"] == r.signal, ["step", "size"]]])
            first = ", ".join(f"{s}:{v:+.3g}" for s, v in ev.sort_values("step").head(3).itertuples(index=False))
            t.add_row(r.signal, str(r.n_jumps), str(getattr(r, "n_transients", 0)), first)
        console.print(t)


def _grouped(console, table_cls, title: str, strength: str, rows: list[tuple[str, ...]]) -> None:  # noqa: ANN001
    """A table of grouped events (transitions or episodes), nothing when there are none; headers in the report's
    words (``report.fragments.header``), ``strength`` the column of the last one (max_abs_z, max_z)."""
    from discrepancy.report.fragments import header

    if not rows:
        return
    t = table_cls(title=title)
    longest = max(len(name) for row in rows for name in row[3].split(", "))
    for col in ("event", "step", "steps", "signals", strength):  # signals wrap between names, never inside one
        t.add_column(header(col), no_wrap=col != "signals", min_width=longest if col == "signals" else None,
                     overflow="fold")
    for row in rows:
        t.add_row(*row)
    console.print(t)


def analyze(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5; finished, live or crashed), or of another trainer's log: a TensorBoard log folder, a CSV or Parquet history with a _step or step column (W&B export), an HF trainer_state.json.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN.analysis next to the run).")] = None,
    signals: Annotated[list[str] | None, typer.Option("--signals", help="Series to analyse (repeat or comma-separate; default: all).")] = None,
    smooth: Annotated[int, typer.Option("--smooth", min=0, help="Centred running median of this many steps before detection (0: none).")] = 0,
    log_axis: Annotated[bool, typer.Option("--log-axis/--no-log-axis", help="Also look for jumps on a log-step axis (early events).")] = True,
    min_families: Annotated[int, typer.Option("--min-families", min=1, help="A phase transition needs jumps from at least this many signal families ...")] = 2,
    min_signals: Annotated[int, typer.Option("--min-signals", min=2, help="... or from at least this many signals of any family.")] = 3,
    timing_jumps: Annotated[bool, typer.Option("--timing-jumps/--no-timing-jumps", help="Also search per-step timing series (time_*, *_time: step, sample, score, train, instrument) for jumps; they follow machine load, so by default they are only plotted.")] = False,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="table for people, json (summary.json content) for machines.")] = "table",
) -> None:
    """Find jumps, plateaus and phase transitions in a run or a training log; write events.csv, summary.json, PNGs and
    report.html."""
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
