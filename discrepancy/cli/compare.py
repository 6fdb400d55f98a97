"""``discrepancy compare RUN RUN… [--control RUN]``: runs side by side (docs/compare.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from discrepancy.errors import DiscrepancyError


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run files: seeds of one recipe, or with --control the teacher "
                                                    "first and its students after it.", show_default=False)],
    control: Annotated[Path | None, typer.Option(
        "--control", help="A run trained like the students but without the teacher: turns on weight-space "
                          "lineage (the first RUN is the teacher).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: compare/ next to the first "
                                                           "run).")] = None,
    tolerance: Annotated[int | None, typer.Option(
        "--tolerance", min=0, help="Steps within which two runs' events are the same event (default: 5 % of the "
                                   "run, at least 3).")] = None,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="table for people, json for "
                                                                              "machines.")] = "table",
) -> None:
    """Compare runs: events that recur across seeds, and weight-space lineage with --control.

    Which events (jumps, plateaus, phase transitions, LLC stage boundaries, skill verdicts) recur across runs, with
    their step spread and the chance of that many coincidences; with --control, how far each student's LoRA update
    aligns with the teacher's beyond the control's (imprinting index GI) over its snapshots, and, where `discrepancy
    probe` has scored the runs, each student against the control on the probe items. Writes compare.html,
    recurrence.csv, events.csv (and lineage.csv, trait.csv, trait_contrast.csv) into the output folder
    (docs/compare.md)."""
    from discrepancy.analysis.compare import compare_runs
    from discrepancy.report.compare import write_compare

    from discrepancy.runfile.errors import RunNotFound

    for path in [*runs, *([control] if control else [])]:
        if not path.is_file():  # exit code 3, as every command that cannot open its run file
            raise RunNotFound(path, "is a directory, not a run file" if path.is_dir() else "no such file")
    folder = out if out is not None else runs[0].parent / "compare"
    if folder.exists() and not folder.is_dir():
        raise DiscrepancyError(f"{folder}: exists and is not a folder; pass another --out")
    res = compare_runs(list(runs), control=control, tolerance=tolerance,
                       progress=lambda line: typer.echo(line, err=True))
    files = write_compare(res, folder)
    if format == "json":
        typer.echo(json.dumps({"recurrence": json.loads(res.recurrence.to_json(orient="records")),
                               "lineage": json.loads(res.lineage.to_json(orient="records")),
                               "trait_contrast": json.loads(res.trait_contrast.to_json(orient="records")),
                               "tolerance": res.tolerance, "notes": res.notes,
                               "files": {k: str(v) for k, v in files.items()}}, indent=2))
    else:
        _print(res)
        typer.echo(f"wrote {files['html']} and {len(files) - 1} more file(s) in {folder}")


def _print(res) -> None:  # noqa: ANN001 - CompareResult, imported lazily
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(110, Console().width))  # names and numbers are never folded
    rec = res.recurrence[res.recurrence["runs_with"] >= 2].head(15)
    t = Table(title=f"Events found in ≥ 2 of {len(res.labels)} runs (within {res.tolerance} steps), most recurrent "
                    "first")
    for col in ("group", "kind", "signal", "runs", "median step", "spread", "p_chance"):
        t.add_column(col, no_wrap=True)
    for r in rec.itertuples():
        signal = r.signal + (f" ({r.direction})" if r.direction else "")
        t.add_row(r.group, r.kind, signal, f"{r.runs_with}/{r.runs}", f"{r.step_median:g}", str(r.spread),
                  f"{r.p_chance:.2g}")
    console.print(t if len(rec) else "no event recurs in two or more runs")
    whole = res.lineage[res.lineage["module"] == "all"] if not res.lineage.empty else res.lineage
    if len(whole):
        last = whole.sort_values("step").groupby("student").tail(1)
        for r in last.itertuples():
            console.print(f"{r.student} at step {r.step}: c(student, teacher) {r.c_student_teacher:+.3f}, "
                          f"c(control, teacher) {r.c_control_teacher:+.3f}, GI {r.gi:+.3f}")
    if len(res.trait_contrast):
        last = res.trait_contrast.sort_values("step").groupby(["student", "suite", "skill"]).tail(1)
        for r in last.itertuples():
            console.print(f"{r.student} at step {r.step}, {r.suite}/{r.skill} ({r.metric}): student "
                          f"{r.student_value:.3f}, control {r.control_value:.3f}, diff {r.diff:+.3f} "
                          f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}], p_perm {r.p_perm:.2g} over {r.n} items")
    for line in res.notes:
        console.print(f"note: {line}", highlight=False)
