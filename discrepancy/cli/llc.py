"""``discrepancy llc RUN``: the LoRA adapter's local learning coefficient at every snapshot of a run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from discrepancy.cli.threads import THREADS_HELP, set_threads
from discrepancy.errors import DiscrepancyError


def llc(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5) holding LoRA snapshots.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN.analysis next to the run).")] = None,
    probe_size: Annotated[int, typer.Option("--probe-size", min=1, help="Recorded (prompt, completion) samples whose completion positions form the fixed evaluation set.")] = 16,
    chains: Annotated[int, typer.Option("--chains", min=1, help="SGLD chains per snapshot (run vectorised).")] = 4,
    draws: Annotated[int, typer.Option("--draws", min=2, help="Draws per chain after burn-in, averaged.")] = 20,
    burnin: Annotated[int, typer.Option("--burnin", min=0, help="Burn-in draws per chain (not averaged).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SGLD noise.")] = 0,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="table for people, json for machines.")] = "table",
    trust_run: Annotated[bool, typer.Option(
        "--trust-run", help="Read the run's base model where the run file records it, also outside the run's "
                            "folder (only for run files you trust).")] = False,
    threads: Annotated[int, typer.Option("--threads", min=0, help=THREADS_HELP)] = 0,
) -> None:
    """Estimate the weight-refined LLC of the LoRA adapter at every snapshot; write llc.csv, llc.png, llc_stages.csv
    and llc_settings.json into the analysis folder.

    The sampler is calibrated once, on the last snapshot, and its settings are reused for every snapshot (estimates
    are comparable only at equal settings); each snapshot's row is written as soon as it is done, so an interrupted
    job resumes where it stopped. Resuming with other --probe-size/--chains/--draws/--burnin/--seed is refused;
    results of an earlier run under the same name (train --force) are discarded with a notice. Each estimate gets a
    health verdict (negative, diverged chains, chain spread, drift): unhealthy estimates are not LLCs and yield no
    stage boundaries. Progress goes to stderr (a bar in a terminal, one line per phase otherwise).
    """
    from discrepancy.analysis.llc.health import unhealthy_summary
    from discrepancy.analysis.llc.over_run import llc_over_run
    from discrepancy.analysis.llc.stages import healthy_stage_boundaries

    if not run.exists():
        raise DiscrepancyError(f"{run} not found: pass the path of a run file")
    with _Progress(sys.stderr.isatty()) as progress:
        busy = set_threads(threads)
        table = llc_over_run(run, out, eval_size=probe_size, num_chains=chains, num_draws=draws,
                             num_burnin=burnin, seed=seed, on_snapshot=progress.snapshot,
                             on_message=progress.line, notice=lambda line: progress.line(f"note: {line}"), trust_paths=trust_run)
    if busy:
        typer.echo(busy, err=True)
    bounds = healthy_stage_boundaries(table)
    summary = unhealthy_summary(table, _settings(run, out).get("probe_pairs"))
    if format == "json":
        rows = json.loads(table.to_json(orient="records"))
        for row in rows:  # llc.csv stores the per-chain values as a JSON list in one cell: a list here
            if isinstance(row.get("llc_per_chain"), str):
                row["llc_per_chain"] = json.loads(row["llc_per_chain"] or "[]")
        typer.echo(json.dumps({"estimates": rows, "stage_boundaries": bounds,
                               "settings": _settings(run, out), "unhealthy": summary}, indent=2))
    else:
        _print_table(table, bounds)
    for step, w in zip(table["step"], table["warnings"]):
        if isinstance(w, str) and w.strip():
            typer.echo(f"warning: step {step}: {w}", err=True)
    if summary:
        typer.echo(f"warning: {summary}", err=True)
    if format != "json":
        typer.echo(f"rerun `discrepancy analyze {run}` to add the LLC to the report", err=True)


def _settings(run: Path, out: Path | None) -> dict[str, Any]:
    """The stored settings next to the results (sampler, evaluation set, calibration cost); {} when unreadable."""
    from discrepancy.runfile.results import LLC, ResultsFileError, output_dir

    try:
        return LLC.read_settings(output_dir(run, out)) or {}
    except (OSError, ValueError, ResultsFileError):
        return {}


class _Progress:
    """Progress on stderr: a rich bar advancing per snapshot (lines printed above it) in a terminal; outside one,
    each line as it comes, so a log or a CI job shows signs of life too."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("LLC: loading the model", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
            if text.startswith("calibrating"):
                self.bar.update(self.task, description="LLC: calibrating")
        else:
            typer.echo(text, err=True)

    @property
    def snapshot(self) -> Callable[[int, int, int], None]:
        def advance(done: int, total: int, step: int) -> None:
            if self.bar is not None:
                self.bar.update(self.task, completed=done, total=total, description=f"LLC: step {step} done")
        return advance


def _print_table(table, bounds: list[int]) -> None:  # noqa: ANN001 - pandas DataFrame
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Weight-refined LLC of the LoRA adapter per snapshot",
              caption="s.e.: standard error of the mean (chain std/√chains kept); chain std: spread across chains; "
                      "stage boundary: a turn of the curve larger than z combined s.e. on both sides, z set by the number of "
                      "estimates (docs/llc.md)")
    for col in ("step", "LLC", "± s.e.", "chain std", "chains kept", "health", "stage boundary"):
        t.add_column(col, no_wrap=col != "health")
    for r in table.itertuples():
        t.add_row(str(r.step), f"{r.llc_mean:.4g}", f"{r.llc_se:.2g}", f"{r.llc_std:.2g}",
                  f"{int(r.chains_ok)}/{int(r.chains)}", str(r.health), "◆" if int(r.step) in bounds else "")
    Console(width=max(100, Console().width)).print(t)
