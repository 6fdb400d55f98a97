"""``discrepancy inspect`` and ``discrepancy recover``: look at a run file, and repair one whose writer died."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

import typer

RunArg = Annotated[Path, typer.Argument(help="Path of the run file (run.h5).", show_default=False)]


def inspect(
    run: RunArg,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="table for people, json for machines.")] = "table",
    config: Annotated[bool, typer.Option("--config", help="Also print the run's full config (TOML).")] = False,
) -> None:
    """Show a run's status, steps, series, snapshots and config."""
    from discrepancy.runfile import open_run

    with open_run(run) as r:
        # Summaries only: the step count, the last row, the sample count (no series or text is read in full).
        n, steps = r.num_steps, r.steps
        info = {
            "path": str(run),
            "status": r.status,
            "status_message": r.status_message,
            "schema_version": r.schema_version,
            "created_utc": r.created_utc,
            "num_steps": n,
            "first_step": int(steps[0]) if n else None,
            "last_step": int(steps[-1]) if n else None,
            "series": list(r.schema.series),
            "arrays": {k: len(v.columns) for k, v in r.schema.arrays.items()},
            "num_samples": r.num_samples,
            "snapshot_steps": r.snapshot_steps,
            "meta": r.meta,
            "versions": r.versions,
        }
        if config or format == "json":
            info["config_toml"] = r.config_toml
        last = r.last_values()
        earlier = r.last_finite()
    if format == "json":
        info["last_values"] = last
        info["last_finite"] = {k: {"value": v, "step": s} for k, (v, s) in earlier.items()}
        typer.echo(json.dumps(_json_safe(info), indent=2, allow_nan=False))
        return
    _print_table(info, last, earlier)


def _json_safe(value: object) -> object:
    """Strict JSON: NaN and ±inf (unset losses, undefined statistics) become null; numpy scalars plain numbers."""
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_table(info: dict, last: dict[str, float], earlier: dict[str, tuple[float, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(show_header=False, box=None)
    for key in ("path", "status", "status_message", "num_steps", "first_step", "last_step", "num_samples",
                "snapshot_steps", "created_utc"):
        value = info[key]
        if key == "snapshot_steps":
            shown = value if len(value) <= 8 else [*value[:6], "…", value[-1]]  # the last one always shows
            value = f"{len(value)} ({', '.join(map(str, shown))})"
        head.add_row(key.replace("_", " "), str(value))
    for key, value in info["meta"].items():
        head.add_row(f"meta.{key}", str(value))
    console.print(head)
    if last:
        table = Table(title=f"series ({len(last)}), value at the last step")
        table.add_column("series")
        table.add_column("last value", justify="right")
        table.add_column("last finite value (step)", justify="right")
        for key, value in last.items():
            before = earlier.get(key)
            table.add_row(key, f"{value:.6g}", f"{before[0]:.6g} ({before[1]})" if before else "")
        console.print(table)
        if earlier:
            console.print("nan at the last step: not measured there (the post-step measurements D_t, ρ_t, realised "
                          "KL, ratio quantiles come every instruments.discrepancy_every-th step) or undefined "
                          "(ρ_t over a negligible predicted change); the last finite value is beside it",
                          markup=False, highlight=False)
    if info["status"] == "incomplete":
        console.print(f"its writer stopped without finishing: every flushed step reads as usual; "
                      f"`discrepancy recover {info['path']}` writes a clean copy, `discrepancy train --out "
                      f"{info['path']} --resume` continues it", markup=False, highlight=False)
    if "config_toml" in info:
        console.print(info["config_toml"], markup=False, highlight=False)


def recover(
    run: RunArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the clean copy "
                                             "(default: RUN with suffix .recovered.h5).")] = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Replace RUN itself (atomically).")] = False,
) -> None:
    """Rewrite a clean, closed copy of a run whose writer crashed, keeping every flushed step."""
    from discrepancy.runfile import recover as recover_run

    result = recover_run(run, out, in_place=in_place)
    dropped = result.dropped_snapshot_steps
    note = (f"; dropped the damaged snapshot{'s' if len(dropped) > 1 else ''} of step{'s' if len(dropped) > 1 else ''} "
            f"{', '.join(map(str, dropped))}" if dropped else "")
    typer.echo(f"{result.out}: {result.num_steps} steps, {result.num_snapshots} snapshots, "
               f"status {result.status_before} -> {result.status_after}{note}")
