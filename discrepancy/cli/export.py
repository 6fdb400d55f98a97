"""``discrepancy export RUN --to tensorboard|parquet|csv``: a run's series, arrays, samples and snapshot norms in the
tools researchers already read (``discrepancy.interop.export``; docs/interop.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Argument(help="Path of the run file (run.h5); finished, live or crashed.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="tensorboard, parquet or csv. tensorboard: event files (scalars by family with descriptions, per-label arrays, samples as text, snapshot norms); parquet / csv: tidy tables (series, arrays, samples, snapshots, columns).", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RUN-tensorboard, RUN-parquet or RUN-csv next to the run).")] = None,
) -> None:
    """Export a run to TensorBoard event files or Parquet / CSV tables."""
    from discrepancy.analysis.pipeline import family_of
    from discrepancy.interop.export import default_out, export_run

    kind = to.strip().lower()
    folder = out if out is not None else default_out(run, kind)
    counts = export_run(run, kind, folder, family=family_of)
    what = ", ".join(f"{n} {k}" for k, n in counts.items())
    hint = f"; view with: tensorboard --logdir {folder}" if kind == "tensorboard" else ""
    typer.echo(f"wrote {what} to {folder}{hint}", err=True)
