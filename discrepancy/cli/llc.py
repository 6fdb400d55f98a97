"""``discrepancy llc RUN``: the LoRA adapter's local learning coefficient at every snapshot of a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from discrepancy.errors import DiscrepancyError


def llc(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5) holding LoRA snapshots.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN.analysis next to the run).")] = None,
    probe_size: Annotated[int, typer.Option("--probe-size", min=1, help="Recorded (prompt, completion) samples in the fixed evaluation set.")] = 32,
    chains: Annotated[int, typer.Option("--chains", min=1, help="SGLD chains per snapshot (run vectorised).")] = 4,
    draws: Annotated[int, typer.Option("--draws", min=2, help="Draws per chain after burn-in.")] = 200,
    burnin: Annotated[int, typer.Option("--burnin", min=0, help="Burn-in draws per chain (not averaged; a draw is one or more SGLD steps, calibrated).")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SGLD noise.")] = 0,
    format: Annotated[Literal["table", "csv"], typer.Option("--format", help="table for people, csv for machines.")] = "table",
) -> None:
    """Estimate the weight-refined LLC at every LoRA snapshot; write llc.csv, llc.png and llc_settings.json.

    Settings are calibrated once and frozen across snapshots; snapshots already in llc.csv are skipped (resumable).
    Resuming with other --chains/--draws/--burnin/--seed/evaluation set is refused; results of an earlier run under the
    same name (train --force) are discarded with a notice. Each estimate gets a health verdict (negative, diverged
    chains, chain spread, drift); unhealthy estimates are not LLCs and yield no stage boundaries.
    """
    from discrepancy.analysis.llc.health import unhealthy_summary
    from discrepancy.analysis.llc.over_run import llc_over_run
    from discrepancy.analysis.llc.stages import healthy_stage_boundaries

    if not run.exists():
        raise DiscrepancyError(f"{run} not found: pass the path of a run file")
    progress = _progress() if sys.stderr.isatty() else None
    try:
        callback = None
        if progress is not None:
            task = progress.add_task("LLC per snapshot", total=None)

            def callback(done: int, total: int, step: int) -> None:
                progress.update(task, completed=done, total=total, description=f"LLC at step {step}")

        table = llc_over_run(run, out, eval_size=probe_size, num_chains=chains, num_draws=draws,
                             num_burnin=burnin, seed=seed, on_snapshot=callback,
                             notice=lambda line: typer.echo(f"note: {line}", err=True))
    finally:
        if progress is not None:
            progress.stop()
    bounds = healthy_stage_boundaries(table)
    if format == "csv":
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        _print_table(table, bounds)
    for step, w in zip(table["step"], table["warnings"]):
        if isinstance(w, str) and w.strip():
            typer.echo(f"warning: step {step}: {w}", err=True)
    summary = unhealthy_summary(table, _eval_pairs(run, out))
    if summary:
        typer.echo(f"warning: {summary}", err=True)


def _eval_pairs(run: Path, out: Path | None) -> int | None:
    """Size of the evaluation set, from the settings next to the results (for the unhealthy-estimates line)."""
    from discrepancy.runfile.results import LLC, output_dir

    try:
        return int(LLC.read_settings(output_dir(run, out))["probe_pairs"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _progress():  # noqa: ANN202 - rich.progress.Progress, imported lazily
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                 console=Console(stderr=True))
    p.start()
    return p


def _print_table(table, bounds: list[int]) -> None:  # noqa: ANN001 - pandas DataFrame
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Weight-refined LLC per snapshot",
              caption="s.e.: standard error of the mean (std/√chains kept); chain std: spread across chains")
    for col in ("step", "LLC", "± s.e.", "chain std", "chains kept", "health", "stage boundary"):
        t.add_column(col)
    for r in table.itertuples():
        t.add_row(str(r.step), f"{r.llc_mean:.3g}", f"{r.llc_se:.2g}", f"{r.llc_std:.2g}",
                  f"{int(r.chains_ok)}/{int(r.chains)}", str(r.health), "◆" if int(r.step) in bounds else "")
    Console(width=max(100, Console().width)).print(t)
